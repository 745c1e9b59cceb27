"""The agent's connection pool: O(1) work per request, under httpx's own transport.

httpcore's pool (httpx 0.28) rescans every connection on each request and on each response
close, polls every idle socket, and can hand one idle connection to several queued requests,
which then go round again. Its cost grows with the square of the requests in flight: at 1,000
concurrent runs it took 29-31 s of the client's CPU (``bench/bench_pool.py``), like the peers.

Here a semaphore bounds the requests in flight, idle connections wait on a per-origin LIFO
stack, a request pops one (checking only that one for expiry) or opens a new one, and closing
the response pushes it back. httpx's ``AsyncHTTPTransport`` still turns requests into httpcore
requests and maps httpcore's exceptions to httpx's; only its pool is replaced (HTTP/1.1; env
proxies keep going through httpx's own proxy transports).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncIterator

import anyio
import httpcore
import httpx

__all__ = ["LifoPool", "PooledTransport"]

_Origin = tuple[bytes, bytes, int]


class LifoPool:
    """Bounded, last-in-first-out keep-alive connections, per origin."""

    def __init__(self, *, max_connections: int, keepalive_expiry: float) -> None:
        self._slots = anyio.Semaphore(max_connections)
        self._idle: defaultdict[_Origin, list[httpcore.AsyncHTTPConnection]] = defaultdict(list)
        self._keepalive_expiry = keepalive_expiry
        self._ssl_context = httpx.create_ssl_context()
        self.opened = 0
        """Connections opened so far (reuse shows as a small number)."""

    async def handle_async_request(self, request: httpcore.Request) -> httpcore.Response:
        """Send ``request`` on an idle or new connection; the slot is held until the body closes."""
        await self._slots.acquire()
        try:
            connection, response = await self._send(request)
        except BaseException:
            self._slots.release()
            raise
        body = _CheckInOnClose(response, _origin(request), connection, self)
        return httpcore.Response(
            status=response.status, headers=response.headers, content=body, extensions=response.extensions
        )

    async def _send(
        self, request: httpcore.Request
    ) -> tuple[httpcore.AsyncHTTPConnection, httpcore.Response]:
        idle = self._idle[_origin(request)]
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
            origin=request.url.origin, ssl_context=self._ssl_context, keepalive_expiry=self._keepalive_expiry
        )
        self.opened += 1
        return connection, await connection.handle_async_request(request)

    def check_in(self, origin: _Origin, connection: httpcore.AsyncHTTPConnection) -> None:
        """Take a connection back after its response closed: reusable if it is idle."""
        if connection.is_idle():
            self._idle[origin].append(connection)
        self._slots.release()

    async def __aenter__(self) -> LifoPool:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the idle connections (busy ones close with their responses)."""
        stacks, self._idle = self._idle, defaultdict(list)
        for stack in stacks.values():
            for connection in stack:
                await connection.aclose()


def _origin(request: httpcore.Request) -> _Origin:
    origin = request.url.origin
    return origin.scheme, origin.host, origin.port


class _CheckInOnClose:
    """A response body that gives its connection back to the pool when it is closed."""

    def __init__(
        self,
        response: httpcore.Response,
        origin: _Origin,
        connection: httpcore.AsyncHTTPConnection,
        pool: LifoPool,
    ) -> None:
        self._response = response
        self._origin = origin
        self._connection = connection
        self._pool: LifoPool | None = pool

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for part in self._response.aiter_stream():
            yield part

    async def aclose(self) -> None:
        try:
            await self._response.aclose()
        finally:
            if self._pool is not None:
                pool, self._pool = self._pool, None
                pool.check_in(self._origin, self._connection)


class PooledTransport(httpx.AsyncHTTPTransport):
    """httpx's transport (request conversion, exception mapping) over a :class:`LifoPool`."""

    @staticmethod
    def supported() -> bool:
        """Whether this httpx sends through ``self._pool`` (true of 0.27 and 0.28)."""
        return "_pool" in vars(httpx.AsyncHTTPTransport())

    def __init__(self, *, max_connections: int, keepalive_expiry: float = 30.0) -> None:
        super().__init__()
        self.pool = LifoPool(max_connections=max_connections, keepalive_expiry=keepalive_expiry)
        self._pool = self.pool  # type: ignore[assignment]  # the one seam httpx offers
