"""Client-side spreading over replicas, against small HTTP servers that count what they get
(the real two-replica runs are in tests/integration/test_replicas.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from reflexa.agent.model.client import ModelClient
from reflexa.agent.model.replicas import SPREAD_URL, affinity
from tests.helpers import JsonServer


class Replica:
    """A server that answers any request after `delay_s` with its port, and counts them."""

    def __init__(self, delay_s: float = 0.05) -> None:
        self.got, self.delay_s = 0, delay_s
        self.drop = False  # read the request, then close without answering (a crash)
        self.http = JsonServer(self._answer)
        self.port, self.url = self.http.port, self.http.url

    def _answer(self, method: str, path: str, body: object) -> dict | None:
        self.got += 1
        time.sleep(self.delay_s)
        return None if self.drop else {"port": self.port}

    def stop(self) -> None:
        self.http.stop()


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
