"""Client-side spreading over replicas, against small HTTP servers that count what they get
(the real two-replica runs are in tests/integration/test_replicas.py)."""

from __future__ import annotations

import asyncio
import http.server
import json
import threading
import time
from collections.abc import Iterator

import pytest

from reflexa.agent.model.client import ModelClient
from reflexa.agent.model.replicas import SPREAD_URL, affinity
from tests.helpers import free_port


class Threading(http.server.ThreadingHTTPServer):
    request_queue_size = 128  # 40 connections at once; the default backlog of 5 resets some


class Replica:
    """A threaded server that answers any POST after `delay_s` and counts the requests."""

    def __init__(self, delay_s: float = 0.05) -> None:
        self.port, self.got = free_port(), 0
        self.drop = False  # read the request, then close without answering (a crash)
        replica = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["Content-Length"]))
                replica.got += 1
                time.sleep(delay_s)
                if replica.drop:
                    self.close_connection = True
                    return
                body = json.dumps({"port": replica.port}).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = Threading(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def two() -> Iterator[tuple[Replica, Replica]]:
    a, b = Replica(), Replica()
    yield a, b
    for r in (a, b):
        r.stop()


def post_all(client: ModelClient, n: int, key: str | None = None) -> list[int]:
    async def one(http: object) -> int:
        response = await http.post(f"{client.url}/v1/chat/completions", json={})  # type: ignore[attr-defined]
        return int(response.json()["port"])

    async def run() -> list[int]:
        async with client.async_http(timeout=10) as http:
            if key is None:
                return list(await asyncio.gather(*(one(http) for _ in range(n))))
            with affinity(key):
                return [await one(http) for _ in range(n)]

    return asyncio.run(run())


def test_requests_spread_to_the_least_busy_and_none_is_lost(two) -> None:  # type: ignore[no-untyped-def]
    a, b = two
    client = ModelClient.over([a.url, b.url], "m", "EMPTY", 10)
    assert client.url == SPREAD_URL and client.urls == (a.url, b.url)
    ports = post_all(client, 40)
    assert len(ports) == 40 and a.got + b.got == 40
    assert 16 <= a.got <= 24, (a.got, b.got)  # 40-60 % each
    assert client.replicas is not None and client.replicas.in_flight == {a.url: 0, b.url: 0}


def test_a_thread_stays_on_one_replica(two) -> None:  # type: ignore[no-untyped-def]
    a, b = two
    client = ModelClient.over([a.url, b.url], "m", "EMPTY", 10)
    for key in ("t1", "t2", "t3", "t4"):
        assert len(set(post_all(client, 5, key))) == 1, key


def test_a_replica_that_stops_answering_is_taken_out(two) -> None:  # type: ignore[no-untyped-def]
    a, b = two
    client = ModelClient.over([a.url, b.url], "m", "EMPTY", 10)
    b.stop()
    assert set(post_all(client, 10)) == {a.port}  # none lost: b's share went to a
    assert client.replicas is not None and client.replicas.taken_out() == [b.url]
    a.stop()
    with pytest.raises(Exception, match="no vLLM replica answers"):
        post_all(client, 1)


def test_a_request_whose_replica_dies_under_it_goes_to_another(two) -> None:  # type: ignore[no-untyped-def]
    a, b = two
    client = ModelClient.over([a.url, b.url], "m", "EMPTY", 10)
    b.drop = True
    assert set(post_all(client, 12)) == {a.port}  # each dropped request answered by a
    assert b.got >= 1 and client.replicas is not None and client.replicas.taken_out() == [b.url]


def test_one_url_is_a_plain_server() -> None:
    client = ModelClient.over(["http://127.0.0.1:1"], "m", "EMPTY", 10)
    assert client.url == "http://127.0.0.1:1" and client.replicas is None
