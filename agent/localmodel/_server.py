"""Serving the app on a real 127.0.0.1 socket: in a background thread, or in the foreground.

`LocalModelServer` runs uvicorn on its own thread with its own event loop, so the code under test
can use asyncio, trio or no event loop at all, and a blocking client cannot stall the server. It
binds the socket itself, so the port (0 means "any free one") is known before `start()` returns.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Awaitable, Callable, Iterable
from types import TracebackType
from typing import Any, Self

import anyio.to_thread
import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

from ._app import DROP_EXTENSION, ModelService
from ._faults import Fault, FaultMix
from ._policy import Policy
from ._request import Item

__all__ = ["LocalModelServer", "serve"]

_STARTUP_TIMEOUT = 10.0
_GRACEFUL_STOP = 2.0
_BACKLOG = 2048  # uvicorn's default

_ScopeDrop = Callable[[Scope], Awaitable[None]]


class LocalModelServer:
    """The local model server on an ephemeral 127.0.0.1 port, in a background thread. Not AI.

    Use it as a context manager, sync or async::

        with LocalModelServer(AutoPolicy()) as server:
            client = openai.OpenAI(base_url=server.base_url, api_key="local")

    `stop()` is idempotent; a stopped server cannot be started again (make a new one). Nothing is
    logged unless something goes wrong (`log_level="warning"`, no access log).
    """

    def __init__(
        self,
        policy: Policy,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        stream_delay: float = 0.0,
        faults: Iterable[Fault] = (),
        fault_mix: FaultMix | None = None,
        api_key: str | None = None,
        seed: int | None = None,
        max_stored: int = 10_000,
        max_stored_bytes: int = 64_000_000,
        max_requests: int = 1_000,
        log_level: str = "warning",
    ) -> None:
        """See `create_app` for every option but `host`, `port` (0: any free one) and `log_level`."""
        self._service = ModelService(
            policy,
            stream_delay=stream_delay,
            faults=faults,
            fault_mix=fault_mix,
            api_key=api_key,
            seed=seed,
            max_stored=max_stored,
            max_stored_bytes=max_stored_bytes,
            max_requests=max_requests,
        )
        self._host, self._port = host, port
        self._uvicorn = _uvicorn_for(
            self._service.app,
            log_level=log_level,
            log_config=None,
            access_log=False,
            proxy_headers=False,
            timeout_graceful_shutdown=1,
        )
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None
        self._bound_port: int | None = None
        self._stopped = False

    @property
    def base_url(self) -> str:
        """The OpenAI base URL of this server, e.g. `http://127.0.0.1:54321/v1`."""
        return _base_url(self._host, self.port)

    @property
    def port(self) -> int:
        """The bound port (known once started)."""
        if self._bound_port is None:
            raise RuntimeError("the server is not started")
        return self._bound_port

    @property
    def requests(self) -> list[Item]:
        """Copies of the JSON request bodies received so far, oldest first.

        Only the most recent `max_requests` (default 1,000) are kept, so a long-running server
        does not grow without bound; older bodies are dropped.
        """
        return self._service.requests

    @property
    def injected_faults(self) -> dict[str, int]:
        """How many requests got each fault so far, by its text form (`str(fault)`)."""
        return self._service.injected_faults

    def add_faults(self, *faults: Fault) -> None:
        """Queue faults for the coming requests, after any still pending."""
        self._service.plan.extend(faults)

    def start(self) -> Self:
        """Bind, start serving in a background thread, and return once requests are accepted."""
        if self._stopped or self._thread is not None:
            raise RuntimeError("a LocalModelServer can be started only once; create a new one")
        self._socket = _bind(self._host, self._port)
        self._bound_port = self._socket.getsockname()[1]
        self._thread = threading.Thread(
            target=self._uvicorn.run_then_signal,
            args=([self._socket],),
            name="localmodel-server",
            daemon=True,
        )
        self._thread.start()
        self._uvicorn.ready.wait(_STARTUP_TIMEOUT)
        if not self._uvicorn.started:
            self.stop()
            raise RuntimeError("the local model server did not start")
        return self

    def stop(self) -> None:
        """Stop serving and join the thread. Safe to call more than once."""
        self._stopped = True
        thread, self._thread = self._thread, None
        if thread is not None:
            self._uvicorn.should_exit = True
            thread.join(_GRACEFUL_STOP)
            self._uvicorn.force_exit = True
            thread.join()
        if self._socket is not None:
            self._socket.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        try:
            await anyio.to_thread.run_sync(self.start)
        except BaseException:
            # Cancelled while the thread was starting: `start()` may have finished regardless,
            # and without `__aexit__` nothing else would stop the server it started.
            await self.aclose()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """`stop()` without blocking the caller's event loop, even when the caller is cancelled.

        Shielded from cancellation, so a cancelled `async with` still stops the server (which
        takes at most a couple of seconds).
        """
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self.stop)


def serve(
    policy: Policy,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    stream_delay: float = 0.0,
    faults: Iterable[Fault] = (),
    api_key: str | None = None,
    log_level: str = "info",
    on_ready: Callable[[str], object] | None = None,
) -> None:
    """Serve the local model in the foreground until interrupted (what `agent serve-local` runs).

    The port is bound first, so a taken one raises `OSError` here, before anything is served;
    `on_ready` is then called with the base URL (e.g. `http://[::1]:8000/v1`) once requests are
    accepted. Unlike `LocalModelServer` this configures uvicorn's usual logging, access log
    included, since it owns the process.
    """
    service = ModelService(
        policy,
        stream_delay=stream_delay,
        faults=faults,
        api_key=api_key,
        seed=None,
        max_stored=10_000,
        max_stored_bytes=64_000_000,
        # Nothing can read this service's request log, so keeping one would only cost memory.
        max_requests=0,
    )
    server = _uvicorn_for(service.app, host=host, port=port, log_level=log_level)
    sock = _bind(host, port)
    if on_ready is not None:
        url = _base_url(host, sock.getsockname()[1])
        server.on_started = lambda: on_ready(url)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()


def _base_url(host: str, port: int) -> str:
    """`http://HOST:PORT/v1`, an IPv6 host in brackets."""
    return f"http://[{host}]:{port}/v1" if ":" in host else f"http://{host}:{port}/v1"


def _bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket, so a taken port fails in the caller's thread, not the server's.

    Listening, not only bound: with SO_REUSEADDR, two sockets that are merely bound may share a
    port, and the loser would learn it only when uvicorn listens, in the server's thread.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP, and
    # without it each response (headers, then body) waits ~40 ms for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(_BACKLOG)
    except OSError:
        sock.close()
        raise
    return sock


def _uvicorn_for(app: ASGIApp, **options: Any) -> _Uvicorn:
    """A uvicorn server for `app` that offers it the `localmodel.drop` extension."""
    wrapper = _DropSupport(app)
    server = _Uvicorn(uvicorn.Config(wrapper, lifespan="off", ws="none", **options))
    wrapper.drop = server.drop_connection
    return server


class _Uvicorn(uvicorn.Server):
    """uvicorn's server, telling the starting thread when it accepts requests or has failed."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = threading.Event()
        self.on_started: Callable[[], object] | None = None

    def run_then_signal(self, sockets: list[socket.socket]) -> None:
        try:
            self.run(sockets=sockets)
        finally:
            self.ready.set()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        self.ready.set()
        if self.started and self.on_started is not None:
            self.on_started()

    async def drop_connection(self, scope: Scope) -> None:
        """Abort the TCP connection that carried `scope`, so the client gets no response at all.

        ASGI has no "drop" message, so this reaches into uvicorn's connection set for the protocol
        serving this client and aborts its transport, then lets uvicorn notice the disconnect (it
        then sends nothing and logs nothing).
        """
        for connection in list(self.server_state.connections):
            if getattr(connection, "client", None) != scope.get("client"):
                continue
            connection.transport.abort()
            cycle = getattr(connection, "cycle", None)
            for _ in range(100):
                if cycle is None or getattr(cycle, "disconnected", True):
                    return
                await asyncio.sleep(0)
            return
        raise RuntimeError("localmodel: no connection found to drop")


class _DropSupport:
    """Offers the `localmodel.drop` extension to the app for each HTTP request."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app
        self.drop: _ScopeDrop | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        drop = self.drop
        if scope["type"] == "http" and drop is not None:
            extensions = dict(scope.get("extensions") or {})
            extensions[DROP_EXTENSION] = lambda: drop(scope)
            scope = {**scope, "extensions": extensions}
        await self._app(scope, receive, send)
