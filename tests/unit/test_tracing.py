"""OpenTelemetry: one span tree per episode (the graph's nodes, the model calls with GenAI
token counts, the checks with their verdicts), seen by the SDK's in-memory exporter; and
over OTLP/HTTP to a receiver when OTEL_EXPORTER_OTLP_ENDPOINT is set, nothing when not."""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from reflexa.agent.app.agent import EpisodeRequest
from tests.unit.test_episodes import DIAGNOSIS, NUMBER, run

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)  # once per process: the tracers are proxies to it
    yield exporter
    provider.shutdown()  # later tests' spans are kept nowhere


def test_each_episode_is_one_span_tree(spans: InMemorySpanExporter, clean_env: Path) -> None:
    spans.clear()
    run(["5", DIAGNOSIS, "4", "6"], EpisodeRequest("2+2?", NUMBER), EpisodeRequest("3+3?", NUMBER))
    got = spans.get_finished_spans()
    roots = [s for s in got if s.parent is None]
    assert [s.name for s in roots] == ["reflexa.episode", "reflexa.episode"]
    assert {s.context.trace_id for s in got} == {r.context.trace_id for r in roots}
    by_id = {s.context.span_id: s for s in got}
    for s in got:  # every span hangs from its episode's root
        while s.parent is not None:
            s = by_id[s.parent.span_id]
        assert s in roots
    first = [s for s in got if s.context.trace_id == roots[0].context.trace_id]
    names = [s.name for s in first]
    for node in ("recall", "generate", "evaluate", "diagnose", "repair", "finish"):
        assert f"reflexa.node.{node}" in names
    calls = [s for s in first if s.name == "chat fake"]
    assert len(calls) == 3  # the answer, the diagnosis, the repair
    assert all(s.kind == trace.SpanKind.CLIENT and s.attributes["gen_ai.operation.name"] == "chat"
               for s in calls)  # fmt: skip
    answered = [s for s in calls if by_id[s.parent.span_id].name != "reflexa.node.diagnose"]
    assert len(answered) == 2 and all("gen_ai.usage.output_tokens" in s.attributes
                                      for s in answered)  # fmt: skip
    checks = [s.attributes["reflexa.check.passed"] for s in first
              if s.name == "reflexa.check regex"]  # fmt: skip
    assert checks == [False, True]  # 5 failed, the repair 4 passed
    assert roots[0].attributes["reflexa.episode.status"] == "repaired"
    parent = {s.context.span_id: by_id[s.parent.span_id].name for s in first if s.parent}
    assert {parent[s.context.span_id] for s in calls} <= {"reflexa.node.generate",
                                                          "reflexa.node.diagnose",
                                                          "reflexa.node.repair"}  # fmt: skip


class Receiver(http.server.BaseHTTPRequestHandler):
    bodies: ClassVar[list[tuple[str, bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Receiver.bodies.append((self.path, body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


EPISODE = """
from reflexa.agent.app.agent import EpisodeRequest
from reflexa.agent.app.tracing import configure_tracing
from tests.unit.test_episodes import NUMBER, run
print(configure_tracing())
run(["4"], EpisodeRequest("2+2?", NUMBER))
"""


@pytest.mark.parametrize("endpoint", [True, False])
def test_otlp_export_goes_where_the_environment_says(endpoint: bool, tmp_path: Path) -> None:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    server = http.server.HTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    Receiver.bodies = []
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REFLEXA_", "OTEL_"))}
    env |= {"REFLEXA_HOME": str(tmp_path / "home"), "PYTHONPATH": str(ROOT)}
    if endpoint:
        env |= {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{server.server_port}",
                "OTEL_SERVICE_NAME": "reflexa-test"}  # fmt: skip
    done = subprocess.run([sys.executable, "-c", EPISODE], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    server.shutdown()
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == str(endpoint)
    if not endpoint:
        assert Receiver.bodies == []
        return
    assert Receiver.bodies and all(path == "/v1/traces" for path, _ in Receiver.bodies)
    names, services = [], set()
    for _, body in Receiver.bodies:
        request = ExportTraceServiceRequest.FromString(body)
        for resource in request.resource_spans:
            services |= {a.value.string_value for a in resource.resource.attributes
                         if a.key == "service.name"}  # fmt: skip
            names += [s.name for scope in resource.scope_spans for s in scope.spans]
    assert services == {"reflexa-test"}
    assert names.count("reflexa.episode") == 1 and "reflexa.node.generate" in names


class LangSmith(http.server.BaseHTTPRequestHandler):
    seen: ClassVar[list[tuple[str, str]]] = []

    def _answer(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        LangSmith.seen.append((self.command, self.path))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b"{}")

    do_GET = do_POST = _answer

    def log_message(self, *args: object) -> None:
        pass


def test_langsmith_variables_trace_the_graph_as_langchain_users_expect(tmp_path: Path) -> None:
    """LANGSMITH_TRACING and friends: LangChain's own tracer posts the graph's runs to the
    endpoint (a stub here), flushed when the process ends."""
    server = http.server.HTTPServer(("127.0.0.1", 0), LangSmith)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    LangSmith.seen = []
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REFLEXA_", "LANGSMITH_"))}
    env |= {"REFLEXA_HOME": str(tmp_path / "home"), "PYTHONPATH": str(ROOT),
            "LANGSMITH_TRACING": "true", "LANGSMITH_API_KEY": "test",
            "LANGSMITH_ENDPOINT": f"http://127.0.0.1:{server.server_port}"}  # fmt: skip
    episode = EPISODE.replace("print(configure_tracing())\n", "")
    done = subprocess.run([sys.executable, "-c", episode], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    server.shutdown()
    assert done.returncode == 0, done.stderr[-2000:]
    assert ("POST", "/runs/multipart") in LangSmith.seen or (
        "POST",
        "/runs/batch",
    ) in LangSmith.seen
