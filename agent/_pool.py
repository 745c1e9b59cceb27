"""The agent's connection pool: an httpx transport with O(1) work per request.

httpcore's pool (httpx 0.28) rescans every connection on each request and on each response
close, polls every idle socket, and can hand one idle connection to several queued requests,
which then go round again. Its cost grows with the square of the requests in flight: at 1,000
concurrent runs it took 29-31 s of the client's CPU (``bench/bench_pool.py``), like the peers.

:class:`PooledTransport` is an ``httpx.AsyncBaseTransport``, httpx's public transport API, over
:class:`LifoPool`, which drives httpcore's public ``AsyncHTTPConnection``: a semaphore bounds the
requests in flight, idle connections wait in a per-origin deque, a request takes the newest one
(checking only that one) or opens a new one, and closing the response gives it back. The
transport turns httpx requests into httpcore ones and httpcore's exceptions into the httpx ones
httpx's own transport raises (``ConnectError``, ``ReadTimeout``, ``PoolTimeout``...). It speaks
HTTP/1.1; HTTP/2 and proxies go through httpx's own transports (``agent._http`` mounts the
environment's proxies with :func:`proxy_mounts`, since httpx reads them only for a transport it
builds itself).

- **Reaping.** The newest idle connection is reused, so after a burst the oldest ones would never
  be looked at again. Each request and each check-in therefore also closes the *oldest* idle
  connections of their origin while they are past ``keepalive_expiry`` (their own timestamps:
  no system call), and each request, at most once a second per origin, those the server closed
  (their socket is readable while idle: no CLOSE_WAIT left behind). Each connection is reaped
  once, so this is O(1) amortised. Like httpx's own pool it is lazy: with no traffic at all to
  an origin nothing is reaped until its next request, or :meth:`LifoPool.aclose`.
- **Pool timeout.** Waiting for a free slot is bounded by the request's ``pool`` timeout
  (``httpx.Timeout.pool``); past it, ``httpx.PoolTimeout``. Only a request that must wait pays
  for the deadline.
- **Cancellation.** Every close of a connection, and the pool's close, run in a shielded cancel
  scope. Closing a response (which checks its connection in) takes no scope on its common path,
  a cost the 1,000-run benchmark shows: when a cancellation interrupts it, the connection, in a
  state unknown, is closed under a shield before the cancellation goes on. Leaving a stream early
  never leaves a socket open.
- **Closing.** A closed pool refuses requests (``anyio.ClosedResourceError``); a response that
  closes afterwards closes its connection instead of keeping it; ``aclose()`` is idempotent.
"""

from __future__ import annotations

import contextlib
import ipaddress
import ssl
import time
import urllib.request
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Iterator

import anyio
import httpcore
import httpx

from agent._errors import UsageError

__all__ = [
    "KEEPALIVE_EXPIRY",
    "LifoPool",
    "PooledTransport",
    "environment_proxies",
    "proxy_mounts",
    "require_http2",
]

KEEPALIVE_EXPIRY = 30.0
"""Seconds an idle connection is kept: long enough to outlast a turn's tool calls."""

_POLL_INTERVAL = 1.0
"""Seconds between looks at whether the server closed the oldest idle connection of an origin."""

_Origin = tuple[bytes, bytes, int]


class LifoPool:
    """Bounded keep-alive connections per origin: the newest idle one is used, the oldest reaped."""

    def __init__(
        self, *, max_connections: int, keepalive_expiry: float, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        self._slots = anyio.Semaphore(max_connections)
        self._idle: dict[_Origin, _IdleConnections] = {}
        self._keepalive_expiry = keepalive_expiry
        self._ssl_context = ssl_context or httpx.create_ssl_context()
        self._closed = False
        self.opened = 0
        """Connections opened so far (reuse shows as a small number)."""

    @property
    def idle_connections(self) -> int:
        """Connections kept for reuse now."""
        return sum(len(idle) for idle in self._idle.values())

    async def send(self, request: httpcore.Request) -> tuple[httpcore.Response, _PooledBody]:
        """Send ``request`` on an idle or new connection; the slot is held until the body closes."""
        if request.url.scheme not in (b"http", b"https"):
            raise httpcore.UnsupportedProtocol(f"unsupported URL scheme {request.url.scheme!r}")
        await self._acquire(request)
        origin = request.url.origin
        key = (origin.scheme, origin.host, origin.port)
        try:
            connection, response = await self._send(key, request)
        except BaseException:
            self._slots.release()
            raise
        return response, _PooledBody(response, key, connection, self)

    async def _acquire(self, request: httpcore.Request) -> None:
        if self._closed:
            raise anyio.ClosedResourceError
        try:
            self._slots.acquire_nowait()  # the common case: no deadline to set up
        except anyio.WouldBlock:
            await self._wait_for_slot(request)

    async def _wait_for_slot(self, request: httpcore.Request) -> None:
        timeout = request.extensions.get("timeout", {}).get("pool")
        try:
            with anyio.fail_after(timeout):
                await self._slots.acquire()
        except TimeoutError:
            raise httpcore.PoolTimeout(f"no free connection within {timeout} s") from None
        if self._closed:  # while this request waited
            self._slots.release()
            raise anyio.ClosedResourceError

    async def _send(
        self, key: _Origin, request: httpcore.Request
    ) -> tuple[httpcore.AsyncHTTPConnection, httpcore.Response]:
        idle = self._idle.get(key)
        if idle:
            now = time.monotonic()
            await idle.reap(now, poll=True)
            while connection := await idle.pop(now):
                try:
                    return connection, await connection.handle_async_request(request)
                except httpcore.ConnectionNotAvailable:
                    await _close(connection)
        connection = httpcore.AsyncHTTPConnection(
            origin=request.url.origin, ssl_context=self._ssl_context, keepalive_expiry=self._keepalive_expiry
        )
        self.opened += 1
        return connection, await connection.handle_async_request(request)

    async def check_in(self, key: _Origin, connection: httpcore.AsyncHTTPConnection) -> None:
        """Take a connection back after its response closed: kept if idle and the pool is open."""
        try:
            if self._closed or not connection.is_idle():
                await _close(connection)
                return
            idle = self._idle.get(key)
            if idle is None:
                idle = self._idle[key] = _IdleConnections()
            now = time.monotonic()
            idle.push(connection, now + self._keepalive_expiry)
            await idle.reap(now, poll=False)
        finally:
            self._slots.release()

    async def __aenter__(self) -> LifoPool:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the idle connections and refuse new requests (busy ones close with their responses)."""
        self._closed = True
        pools, self._idle = self._idle, {}
        with anyio.CancelScope(shield=True):
            for idle in pools.values():
                await idle.aclose()


class _IdleConnections:
    """The idle connections to one origin, with when each expires: oldest on the left."""

    __slots__ = ("_connections", "_next_poll")

    def __init__(self) -> None:
        self._connections: deque[tuple[float, httpcore.AsyncHTTPConnection]] = deque()
        self._next_poll = 0.0

    def __len__(self) -> int:
        return len(self._connections)

    def push(self, connection: httpcore.AsyncHTTPConnection, expires: float) -> None:
        self._connections.append((expires, connection))

    async def pop(self, now: float) -> httpcore.AsyncHTTPConnection | None:
        """The newest connection still usable, closing the ones above it that are not."""
        while self._connections:
            expires, connection = self._connections.pop()
            if expires > now and not connection.has_expired() and connection.is_idle():
                return connection
            await _close(connection)
        return None

    async def reap(self, now: float, *, poll: bool) -> None:
        """Close the oldest connections past their expiry and, with ``poll``, those the server closed.

        The newest is left to :meth:`pop`, which looks at it anyway. Each connection is reaped
        once: O(1) amortised. Polling a socket costs a system call, so it happens at most once
        per :data:`_POLL_INTERVAL`.
        """
        connections = self._connections
        while len(connections) > 1 and connections[0][0] <= now:
            await _close(connections.popleft()[1])
        if poll and now >= self._next_poll and len(connections) > 1:
            self._next_poll = now + _POLL_INTERVAL
            while len(connections) > 1 and connections[0][1].has_expired():
                await _close(connections.popleft()[1])

    async def aclose(self) -> None:
        connections, self._connections = self._connections, deque()
        for _, connection in connections:
            await connection.aclose()


async def _close(connection: httpcore.AsyncHTTPConnection) -> None:
    with anyio.CancelScope(shield=True):
        await connection.aclose()


class _PooledBody(httpx.AsyncByteStream):
    """A response body that gives its connection back to the pool when it is closed."""

    def __init__(
        self,
        response: httpcore.Response,
        key: _Origin,
        connection: httpcore.AsyncHTTPConnection,
        pool: LifoPool,
    ) -> None:
        self._response = response
        self._key = key
        self._connection = connection
        self._pool: LifoPool | None = pool

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _httpx_errors():
            async for part in self._response.aiter_stream():
                yield part

    async def aclose(self) -> None:
        """Close the response and check its connection in, even when cancelled."""
        if self._pool is None:
            return
        pool, self._pool = self._pool, None
        try:
            await self._response.aclose()
        except BaseException:
            # Cancelled (or failed) mid-close: the connection's state is unknown, and dropping
            # it would leave its socket open. Closing it is shielded (see _close); the common
            # path, which needs no shield, does not pay for a cancel scope.
            await _close(self._connection)
            raise
        finally:
            await pool.check_in(self._key, self._connection)


class PooledTransport(httpx.AsyncBaseTransport):
    """An httpx transport over a :class:`LifoPool`: ``httpx.AsyncClient(transport=PooledTransport(...))``.

    ``trust_env`` as in httpx: ``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` give the trusted certificates
    (proxies from the environment are the client's business: see :func:`proxy_mounts`).
    """

    def __init__(
        self,
        *,
        max_connections: int,
        keepalive_expiry: float = KEEPALIVE_EXPIRY,
        ssl_context: ssl.SSLContext | None = None,
        trust_env: bool = True,
    ) -> None:
        self.pool = LifoPool(
            max_connections=max_connections,
            keepalive_expiry=keepalive_expiry,
            ssl_context=ssl_context or httpx.create_ssl_context(trust_env=trust_env),
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` through the pool (httpx calls this)."""
        assert isinstance(request.stream, AsyncIterable)  # an async client's request
        url = request.url
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(scheme=url.raw_scheme, host=url.raw_host, port=url.port, target=url.raw_path),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        with _httpx_errors():
            response, body = await self.pool.send(core_request)
        return httpx.Response(
            status_code=response.status, headers=response.headers, stream=body, extensions=response.extensions
        )

    async def aclose(self) -> None:
        """Close the pool: idle connections now, busy ones as their responses close."""
        await self.pool.aclose()


_HTTPX_ERRORS: dict[type[Exception], type[httpx.TransportError]] = {
    httpcore.TimeoutException: httpx.TimeoutException,
    httpcore.ConnectTimeout: httpx.ConnectTimeout,
    httpcore.ReadTimeout: httpx.ReadTimeout,
    httpcore.WriteTimeout: httpx.WriteTimeout,
    httpcore.PoolTimeout: httpx.PoolTimeout,
    httpcore.NetworkError: httpx.NetworkError,
    httpcore.ConnectError: httpx.ConnectError,
    httpcore.ReadError: httpx.ReadError,
    httpcore.WriteError: httpx.WriteError,
    httpcore.ProxyError: httpx.ProxyError,
    httpcore.UnsupportedProtocol: httpx.UnsupportedProtocol,
    httpcore.ProtocolError: httpx.ProtocolError,
    httpcore.LocalProtocolError: httpx.LocalProtocolError,
    httpcore.RemoteProtocolError: httpx.RemoteProtocolError,
}
"""httpcore's exceptions and the httpx ones its transport raises for them (httpx 0.27-0.28)."""


@contextlib.contextmanager
def _httpx_errors() -> Iterator[None]:
    """Raise httpcore's exceptions as the most specific httpx exception, as httpx does."""
    try:
        yield
    except Exception as exc:
        mapped = next((_HTTPX_ERRORS[kind] for kind in type(exc).__mro__ if kind in _HTTPX_ERRORS), None)
        if mapped is None:
            raise
        raise mapped(str(exc)) from exc


def environment_proxies() -> dict[str, str | None]:
    """The proxies of the environment as httpx reads them: URL pattern -> proxy URL, or None for direct.

    ``HTTP_PROXY``, ``HTTPS_PROXY``, ``ALL_PROXY`` (any case, through ``urllib.request.getproxies``)
    give ``http://``, ``https://``, ``all://``; each ``NO_PROXY`` host gives a pattern that goes
    direct (curl's rules: ``example.com`` and ``.example.com`` cover subdomains, IPs and
    ``localhost`` match exactly, ``*`` turns every proxy off). This is httpx's own derivation
    (``httpx._utils.get_environment_proxies``, which httpx applies only when it builds the
    transport itself); a test keeps the two equal.
    """
    found = urllib.request.getproxies()
    patterns: dict[str, str | None] = {}
    for scheme in ("http", "https", "all"):
        if url := found.get(scheme):
            patterns[f"{scheme}://"] = url if "://" in url else f"http://{url}"
    for host in (host.strip() for host in found.get("no", "").split(",")):
        if host == "*":
            return {}
        if host:
            patterns[_direct_pattern(host)] = None
    return patterns


def _direct_pattern(host: str) -> str:
    if "://" in host:
        return host
    if _is_address(host, ipaddress.IPv4Address) or host.lower() == "localhost":
        return f"all://{host}"
    if _is_address(host, ipaddress.IPv6Address):
        return f"all://[{host}]"
    return f"all://*{host}"


def _is_address(host: str, kind: type[ipaddress.IPv4Address | ipaddress.IPv6Address]) -> bool:
    try:
        kind(host.split("/", maxsplit=1)[0])
    except ValueError:
        return False
    return True


def proxy_mounts(
    limits: httpx.Limits, *, trust_env: bool = True
) -> dict[str, httpx.AsyncBaseTransport | None]:
    """``mounts=`` for an ``httpx.AsyncClient`` whose own transport is ours: the environment's proxies.

    Each proxy goes through httpx's own proxy transport (``httpx.AsyncHTTPTransport(proxy=...)``,
    with ``limits``); ``NO_PROXY`` hosts map to ``None``, the client's transport. Empty unless
    ``trust_env``, as in httpx.
    """
    if not trust_env:
        return {}
    return {
        pattern: None if url is None else httpx.AsyncHTTPTransport(proxy=url, limits=limits, trust_env=True)
        for pattern, url in environment_proxies().items()
    }


def require_http2() -> None:
    """Raise a :class:`UsageError` unless the ``h2`` package (httpx's HTTP/2) is installed."""
    try:
        import h2  # noqa: F401
    except ImportError:
        raise UsageError("http2=True needs the h2 package: pip install 'agent-runtime[http2]'") from None
