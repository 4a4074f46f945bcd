"""Requests spread over several vLLM replicas, on the client side.

Each request goes to the replica with the fewest requests in flight; the requests of one
episode (an `affinity` key) stay on the replica that took its first, so its prompt prefix
stays in that replica's cache. A replica that refuses the connection, or drops it before
answering, is taken out for `retry_s` and the request goes to the next; once none is left,
the request fails as an unreachable server does, naming each replica. The spreading lives in an
httpx transport, so LangChain's chat models and the cycle's raw requests share it; so does
the route that sends the promoted adapter's requests to its merged server (`RouteTransport`).
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import httpx

SPREAD_URL = "http://reflexa-replicas"  # what requests name; the transport picks the replica
# A replica that refused the connection, or dropped it before answering (it died under the
# request): the request goes to the next. Generating again has no side effect; a timeout is
# a slow replica, not a gone one, and is not retried (it would double the load).
GONE = (httpx.ConnectError, httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError)
_AFFINITY: ContextVar[str | None] = ContextVar("reflexa_replica_affinity", default=None)
STICKY_KEYS = 4096  # the episodes remembered, newest kept


@contextmanager
def affinity(key: str) -> Iterator[None]:
    """Requests made inside (in this task and the tasks it starts) go to one replica."""
    token = _AFFINITY.set(key)
    try:
        yield
    finally:
        _AFFINITY.reset(token)


class Replicas:
    """The replicas' shared state: requests in flight, who is out, and the sticky episodes."""

    def __init__(self, urls: tuple[str, ...], retry_s: float = 30.0) -> None:
        self.urls = urls
        self.retry_s = retry_s
        self.in_flight = dict.fromkeys(urls, 0)
        self.sent = dict.fromkeys(urls, 0)  # requests each replica took
        self._out_until = dict.fromkeys(urls, 0.0)
        self._sticky: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()

    def order(self) -> list[str]:
        """The replicas to try, best first: the episode's own, then the least busy of those
        not out; the ones out last (they may be back)."""
        now = time.monotonic()
        with self._lock:
            up = [u for u in self.urls if self._out_until[u] <= now]
            out = [u for u in self.urls if u not in up]
            up.sort(key=lambda u: self.in_flight[u])
            key = _AFFINITY.get()
            if key is not None and self._sticky.get(key) in up:
                up.remove(own := self._sticky[key])
                up.insert(0, own)
            return up + out

    def begin(self, url: str) -> Callable[[], None]:
        """Count a request on `url`; the callable ends it (once)."""
        with self._lock:
            self.in_flight[url] += 1
            self.sent[url] += 1
            if (key := _AFFINITY.get()) is not None:
                self._sticky[key] = url
                self._sticky.move_to_end(key)
                while len(self._sticky) > STICKY_KEYS:
                    self._sticky.popitem(last=False)
        ended = False

        def end() -> None:
            nonlocal ended
            with self._lock:
                if not ended:
                    ended = True
                    self.in_flight[url] -= 1

        return end

    def taken_out(self) -> list[str]:
        """The replicas out now (refused a connection within `retry_s`)."""
        now = time.monotonic()
        with self._lock:
            return [u for u in self.urls if self._out_until[u] > now]

    def out(self, url: str) -> None:
        with self._lock:
            self._out_until[url] = time.monotonic() + self.retry_s

    def back(self, url: str) -> None:
        with self._lock:
            self._out_until[url] = 0.0


def _to(request: httpx.Request, url: str) -> None:
    target = httpx.URL(url)
    request.url = request.url.copy_with(scheme=target.scheme, host=target.host, port=target.port)
    request.headers["Host"] = target.netloc.decode()


class SpreadTransport(httpx.AsyncBaseTransport):
    """An async httpx transport that sends each request to one of `replicas` (every model
    call here is async)."""

    def __init__(self, replicas: Replicas) -> None:
        self.replicas = replicas
        self._async = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        errors = []
        for url in self.replicas.order():
            _to(request, url)
            end = self.replicas.begin(url)
            try:
                response = await self._async.handle_async_request(request)
            except GONE as e:
                end()
                self.replicas.out(url)
                errors.append(f"{url}: {e or type(e).__name__}")
                continue
            except BaseException:
                end()
                raise
            self.replicas.back(url)
            response.stream = _Counted(response.stream, end)
            return response
        raise httpx.ConnectError(f"no vLLM replica answers ({'; '.join(errors)})")

    async def aclose(self) -> None:
        await self._async.aclose()


class RouteTransport(httpx.AsyncBaseTransport):
    """Sends the requests that name the model `route()` names ((name, url), read for each
    request) to that url, the promoted adapter's merged server; the others, and one that
    server refuses (stopped once a promotion moved on), go where they are addressed: the
    server that serves every adapter through LoRA."""

    def __init__(
        self, route: Callable[[], tuple[str, str] | None], inner: httpx.AsyncBaseTransport | None
    ) -> None:
        self.route = route
        self._inner = inner or httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        to = self.route()
        if to is not None and _model(request) == to[0]:
            addressed, host = request.url, request.headers.get("Host")
            _to(request, to[1])
            try:
                return await self._inner.handle_async_request(request)
            except GONE:
                request.url = addressed
                if host is not None:
                    request.headers["Host"] = host
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


def _model(request: httpx.Request) -> str | None:
    """The model a JSON request body names, if any."""
    if request.method != "POST":
        return None
    try:
        body = json.loads(request.content)
    except (httpx.RequestNotRead, ValueError):
        return None
    return body.get("model") if isinstance(body, dict) else None


class _Counted(httpx.AsyncByteStream):
    """A response body that ends its request's count when it is closed (a stream is in
    flight until its last token)."""

    def __init__(self, stream: Any, end: Callable[[], None]) -> None:
        self._stream, self._end = stream, end

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._stream:
            yield chunk

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        finally:
            self._end()
