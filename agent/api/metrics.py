"""Prometheus metrics of the API: requests, episodes by outcome, repairs, episode time."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from reflexa.agent.app.agent import EpisodeResult


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "reflexa_http_requests", "HTTP requests", ["path", "status"], registry=self.registry
        )
        self.episodes = Counter(
            "reflexa_episodes", "Episodes by outcome", ["status"], registry=self.registry
        )
        self.repairs = Counter("reflexa_repairs", "Repair attempts", registry=self.registry)
        self.latency = Histogram(
            "reflexa_episode_seconds",
            "Episode wall time",
            buckets=(0.25, 0.5, 1, 2, 5, 10, 30, 60, 120),
            registry=self.registry,
        )

    def record(self, result: EpisodeResult) -> None:
        self.episodes.labels(result.status).inc()
        self.repairs.inc(max(len(result.attempts) - 1, 0))
        self.latency.observe(result.latency_s)
