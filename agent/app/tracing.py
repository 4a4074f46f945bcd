"""Where the loop's OpenTelemetry spans go (graphs/tracing.py makes them): over OTLP when
`OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, to whatever
listens there (an OpenTelemetry Collector, Jaeger, Phoenix, Langfuse, LangSmith's OTLP
endpoint), with the standard OTEL_* variables for headers, protocol and service name; and
nowhere when it is not: no SDK is set up, every span is the API's no-op.

LangSmith's own variables (LANGSMITH_TRACING, LANGSMITH_API_KEY, LANGSMITH_ENDPOINT,
LANGSMITH_PROJECT) work as LangChain users expect, through LangChain's own tracer: the graph
is a LangGraph run, and each node and model call is a run in it.
"""

from __future__ import annotations

import atexit
import os

from opentelemetry import trace

ENDPOINTS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
_configured = False


def configure_tracing() -> bool:
    """Set up OTLP export if the environment asks for it (once per process). Whether it did."""
    global _configured
    if _configured or not any(os.environ.get(name) for name in ENDPOINTS):
        return _configured
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    service = os.environ.get("OTEL_SERVICE_NAME", "reflexa")
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    atexit.register(provider.shutdown)  # what is batched goes out before the process ends
    _configured = True
    return True
