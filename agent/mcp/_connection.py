"""One MCP session, opened and closed by a task of its own.

The ``mcp`` package's transports and sessions are anyio task groups and cancel scopes, which
must be left by the task that entered them. Were the session entered by whichever task first
needed it (a run) and left by another (the one closing the agent), anyio would raise
"attempted to exit cancel scope in a different task" (python-sdk #922, openai-agents #1393,
pydantic-ai #2818). So a connection is entered and left by one task started here for it, that
belongs to no caller; every other task only sends requests through the session, which is safe
from any task.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from types import TracebackType
from typing import Any, Self

import anyio
import anyio.lowlevel
import mcp_types
import sniffio
from mcp import Client
from mcp.client._transport import ReadStream, Transport, TransportStreams
from mcp.client.session import IncomingMessage
from mcp.shared.message import SessionMessage
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from structlog.typing import FilteringBoundLogger

__all__ = ["Connection", "loop_identity"]

_CLOSE_WAIT = 10.0
"""Seconds a close waits for the session's own shutdown (the stdio transport bounds its own)."""

_TASKS: set[asyncio.Task[None]] = set()
"""asyncio holds only weak references to tasks: the owner tasks are kept alive here."""


def loop_identity() -> object:
    """The running event loop (asyncio's loop or trio's token), to tell loops apart."""
    return anyio.lowlevel.current_token().native_token


class Connection:
    """A live MCP session and the task that owns it. Use :meth:`open`."""

    def __init__(
        self,
        transport: Callable[[], Transport],
        *,
        name: str,
        on_tools_changed: Callable[[], None],
        log: FilteringBoundLogger,
    ) -> None:
        self._transport = transport
        self._name = name
        self._on_tools_changed = on_tools_changed
        self._log = log
        self.loop = loop_identity()
        self.client: Client | None = None
        self.error: BaseException | None = None
        self._ready = anyio.Event()
        self._leave = anyio.Event()
        self._done = anyio.Event()
        self._scope = anyio.CancelScope()

    @classmethod
    async def open(
        cls,
        transport: Callable[[], Transport],
        *,
        name: str,
        connect_timeout: float,
        on_tools_changed: Callable[[], None],
        log: FilteringBoundLogger,
    ) -> Connection:
        """Connect (the MCP handshake included) within ``connect_timeout`` seconds, or raise.

        Raises TimeoutError, or what connecting raised (OSError for a command that cannot start,
        MCPError for a refused handshake...).
        """
        connection = cls(transport, name=name, on_tools_changed=on_tools_changed, log=log)
        _spawn(connection._own)
        try:
            with anyio.fail_after(connect_timeout):
                await connection._ready.wait()
        except BaseException:
            await connection.close()
            raise
        if connection.client is None:
            raise connection.error or ConnectionError("the MCP session ended while it was opening")
        return connection

    @property
    def alive(self) -> bool:
        """Whether requests can still be sent (the server has not gone, nobody closed it)."""
        return self.client is not None and not self._leave.is_set()

    def lost(self) -> None:
        """The connection failed under a request: end it, so the next use opens a new one."""
        self._leave.set()

    async def close(self) -> None:
        """End the session and wait (bounded) until its task has left it. Safe from any task."""
        if self.client is None:
            self._scope.cancel()  # still connecting: there is nothing to close politely
        self._leave.set()
        with anyio.CancelScope(shield=True), anyio.move_on_after(_CLOSE_WAIT):
            await self._done.wait()

    async def _own(self) -> None:
        """The owner task: enter the session, serve until told to leave or the server goes, leave."""
        try:
            with self._scope:
                watched = _watched(self._transport(), self._leave.set)
                async with (
                    Client(watched, message_handler=self._on_message, cache=None) as client,
                    anyio.create_task_group() as tasks,
                ):
                    if _pushes_tool_changes(client):
                        tasks.start_soon(self._listen, client)
                    self.client = client
                    self._ready.set()
                    await self._leave.wait()
                    tasks.cancel_scope.cancel()
        except Exception as exc:
            self.error = exc
            self._log.warning("mcp.connection_failed", server=self._name, error=_described(exc))
        finally:
            self.client = None
            self._ready.set()
            self._done.set()

    async def _on_message(self, message: IncomingMessage) -> None:
        """Server notifications of the handshake-era protocol (2025 and older)."""
        if isinstance(message, mcp_types.ToolListChangedNotification):
            self._on_tools_changed()
        await anyio.lowlevel.checkpoint()

    async def _listen(self, client: Client) -> None:
        """Tool-list changes on 2026-era sessions, which must subscribe to get them."""
        try:
            async with client.listen(tools_list_changed=True) as subscription:
                async for _event in subscription:
                    self._on_tools_changed()
        except Exception as exc:  # a lost subscription: calls still work, listings may be old
            self._log.info("mcp.listen_ended", server=self._name, error=_described(exc))


def _pushes_tool_changes(client: Client) -> bool:
    tools = client.server_capabilities.tools
    listed = tools is not None and bool(tools.list_changed)
    return listed and client.protocol_version in MODERN_PROTOCOL_VERSIONS


def _described(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        return _described(exc.exceptions[0])
    return f"{type(exc).__name__}: {exc}"


def _spawn(function: Callable[[], Awaitable[None]]) -> None:
    """Start ``function`` in a task that belongs to no caller (it outlives the one starting it)."""
    if sniffio.current_async_library() == "trio":
        import trio

        trio.lowlevel.spawn_system_task(function)
        return
    task = asyncio.get_running_loop().create_task(_as_coroutine(function))
    _TASKS.add(task)
    task.add_done_callback(_TASKS.discard)


async def _as_coroutine(function: Callable[[], Awaitable[None]]) -> None:
    await function()


@contextlib.asynccontextmanager
async def _watched(transport: Transport, on_end: Callable[[], None]) -> AsyncIterator[TransportStreams]:
    """``transport``'s streams, calling ``on_end`` once the server's side ends (it exited, the
    pipe broke): the owner then leaves the session, and the next request opens a new one."""
    async with transport as (read, write):
        yield _EndWatch(read, on_end), write


class _EndWatch:
    """A read stream that reports its end: EOF, closed, or left by the session."""

    def __init__(self, inner: ReadStream[SessionMessage | Exception], on_end: Callable[[], None]) -> None:
        self._inner = inner
        self._on_end = on_end

    @property
    def last_context(self) -> Any:
        """The sender's context of the last message, for the streams that keep one."""
        return getattr(self._inner, "last_context", None)

    async def receive(self) -> SessionMessage | Exception:
        try:
            return await self._inner.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
            self._on_end()
            raise

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> SessionMessage | Exception:
        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        self._on_end()
        await self._inner.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
