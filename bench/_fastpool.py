"""A prototype connection pool with O(1) work per request, to measure what httpcore's costs.

Not a benchmark itself: ``bench/bench_pool.py`` hands it to ``Agent(http_client=...)``. It is a
happy-path prototype (HTTP/1.1 only, no proxies), not production code.

httpcore's ``AsyncConnectionPool`` (httpx 0.28) rescans every connection, and for each idle one
every connection again, on each request and each response close, polls each idle socket, and can
hand one idle connection to several queued requests, which then retry. Here: a semaphore bounds
the connections, idle ones wait on a per-origin LIFO stack, a request pops one (checking only
that one for expiry) or opens a new one, and closing the response pushes it back.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncIterator

import anyio
import httpcore
import httpx

__all__ = ["FastPoolTransport"]


_Key = tuple[bytes, bytes, int]


def _key(origin: httpcore.Origin) -> _Key:
    return origin.scheme, origin.host, origin.port


class _LifoPool:
    """What ``httpx.AsyncHTTPTransport`` needs of a pool: ``handle_async_request`` and ``aclose``."""

    def __init__(self, max_connections: int, keepalive_expiry: float) -> None:
        self._slots = anyio.Semaphore(max_connections)
        self._idle: defaultdict[_Key, list[httpcore.AsyncHTTPConnection]] = defaultdict(list)
        self._keepalive_expiry = keepalive_expiry

    async def handle_async_request(self, request: httpcore.Request) -> httpcore.Response:
        await self._slots.acquire()
        try:
            connection, response = await self._send(request)
        except BaseException:
            self._slots.release()
            raise
        stream = _ReleasingStream(response, request.url.origin, connection, self)
        return httpcore.Response(
            status=response.status, headers=response.headers, content=stream, extensions=response.extensions
        )

    async def _send(
        self, request: httpcore.Request
    ) -> tuple[httpcore.AsyncHTTPConnection, httpcore.Response]:
        idle = self._idle[_key(request.url.origin)]
        while idle:
            connection = idle.pop()
            if connection.has_expired() or not connection.is_idle():
                await connection.aclose()
                continue
            try:
                return connection, await connection.handle_async_request(request)
            except httpcore.ConnectionNotAvailable:
                await connection.aclose()
        connection = httpcore.AsyncHTTPConnection(
            origin=request.url.origin, keepalive_expiry=self._keepalive_expiry
        )
        return connection, await connection.handle_async_request(request)

    def check_in(self, origin: httpcore.Origin, connection: httpcore.AsyncHTTPConnection) -> None:
        if connection.is_idle():
            self._idle[_key(origin)].append(connection)
        self._slots.release()

    async def aclose(self) -> None:
        for stack in self._idle.values():
            for connection in stack:
                await connection.aclose()
        self._idle.clear()


class _ReleasingStream:
    """The response body; closing it gives the connection back to the pool."""

    def __init__(
        self,
        response: httpcore.Response,
        origin: httpcore.Origin,
        connection: httpcore.AsyncHTTPConnection,
        pool: _LifoPool,
    ) -> None:
        self._response = response
        self._origin = origin
        self._connection = connection
        self._pool: _LifoPool | None = pool

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for part in self._response.aiter_stream():
            yield part

    async def aclose(self) -> None:
        await self._response.aclose()
        if self._pool is not None:
            pool, self._pool = self._pool, None
            pool.check_in(self._origin, self._connection)


class FastPoolTransport(httpx.AsyncHTTPTransport):
    """httpx's transport (request conversion, exception mapping) over :class:`_LifoPool`."""

    def __init__(self, max_connections: int = 512, keepalive_expiry: float = 30.0) -> None:
        super().__init__()
        self._pool = _LifoPool(max_connections, keepalive_expiry)  # type: ignore[assignment]
