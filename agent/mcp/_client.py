"""``MCPTools``: an MCP server's tools as a :class:`~agent.ToolSource` (stdio or streamable HTTP).

One session per server, shared by every run using it. Its tools are listed once and cached
until the server says they changed; they run through the agent's own execution path (limits,
timeouts, outcome kinds, events and hooks), their calls going to the server.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import shlex
import sys
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from functools import partial
from typing import Any, TextIO, TypedDict, Unpack

import anyio
import anyio.lowlevel
import httpx2
import mcp_types
import pydantic
from mcp.client._transport import Transport, TransportStreams
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import CONNECTION_CLOSED, INVALID_PARAMS, METHOD_NOT_FOUND
from structlog.typing import FilteringBoundLogger

from agent._approvals import NeedsApproval
from agent._errors import ToolDefinitionError, ToolError, ToolSourceError, UsageError
from agent._logging import silent_logger
from agent._sources import ToolSource
from agent._threads import LoopLocalLimiter
from agent._tools import Tool, ToolContext
from agent._urls import shown_url
from agent.mcp._connection import Connection, loop_identity
from agent.mcp._results import output_of

__all__ = ["MCPTool", "MCPTools", "mcp_http", "mcp_stdio"]

DEFAULT_CONNECT_TIMEOUT = 30.0
"""Seconds to start a server (or reach it) and list its tools, unless ``connect_timeout`` says."""

_MAX_PAGES = 100
"""Pages of ``tools/list`` read at most: a server whose cursor never ends cannot hang a run."""

_ANSWERS = frozenset({INVALID_PARAMS, METHOD_NOT_FOUND})
"""JSON-RPC errors that are the server's answer to the call itself. After any other error (a
lost HTTP session, a crashed handler, a proxy's 502) the next call opens a new session."""

_NOT_A_NAME_CHARACTER = re.compile(r"[^a-zA-Z0-9_-]")


class MCPTools(ToolSource):
    """An MCP server's tools; made by :func:`mcp_stdio` or :func:`mcp_http`."""

    def __init__(
        self,
        transport: Callable[[], Transport],
        *,
        name: str | None,
        prefix: str | None = None,
        timeout: float | None = None,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        max_concurrency: int | None = None,
        prefer_structured: bool = False,
        needs_approval: NeedsApproval = False,
        logger: FilteringBoundLogger | None = None,
    ) -> None:
        super().__init__()
        _check_positive("connect_timeout", connect_timeout)
        if timeout is not None:
            _check_positive("timeout", timeout)
        if max_concurrency is not None and max_concurrency < 1:
            raise UsageError(f"max_concurrency must be >= 1 (or None), got {max_concurrency!r}")
        if prefix is not None and not re.fullmatch(r"[a-zA-Z0-9_-]{1,32}", prefix):
            raise UsageError(f"prefix must match ^[a-zA-Z0-9_-]{{1,32}}$, got {prefix!r}")
        self.name = name or "mcp"
        self.prefix = prefix
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.prefer_structured = prefer_structured
        self.needs_approval = needs_approval
        self._transport = transport
        self._limiter = LoopLocalLimiter(max_concurrency) if max_concurrency else None
        self._log = (logger or silent_logger()).bind(mcp_server=name)
        self._connection: Connection | None = None
        self._tools: list[MCPTool] | None = None
        self._changed = False
        self._locks: anyio.lowlevel.RunVar[_Locks] = anyio.lowlevel.RunVar(f"mcp locks {id(self)}")

    def __repr__(self) -> str:
        return f"<MCPTools {self.name!r} prefix={self.prefix!r}>"

    async def list_tools(self) -> list[MCPTool]:
        """The server's tools (listed once, again after the server says they changed).

        Raises ToolSourceError when the server cannot be reached and no listing is cached.
        """
        if self._tools is not None and not self._changed:
            return self._tools
        async with self._loop_locks().listing:
            if self._tools is not None and not self._changed:
                return self._tools
            self._changed = False  # a change while listing marks the new listing old again
            try:
                listed = await self._list()
            except ToolSourceError:
                if self._tools is None:
                    raise
                self._log.warning("mcp.relist_failed", tools_kept=len(self._tools))
                return self._tools
            self._tools = self._made_tools(listed)
            return self._tools

    async def aclose(self) -> None:
        """Close the session (a stdio server's process ends); the next use opens a new one."""
        connection, self._connection = self._connection, None
        if connection is not None:
            await connection.close()

    async def call(self, remote_name: str, arguments: dict[str, Any], context: ToolContext[Any]) -> Any:
        """Call the server's tool ``remote_name``: its output, or ToolError saying why not."""
        connection = await self._live_for_call()
        client = connection.client
        if client is None:  # lost between the two lines above
            raise ToolError(f"the MCP server {self.name} is not connected")
        try:
            progress = partial(_report, context)
            result = await client.call_tool(remote_name, arguments, progress_callback=progress)
        except MCPError as exc:
            if exc.code == CONNECTION_CLOSED or not connection.alive:
                connection.lost()
                message = f"the MCP server {self.name} went away during the call ({exc.message})"
                raise ToolError(message) from None
            if exc.code not in _ANSWERS:
                connection.lost()  # e.g. "Session terminated": the server restarted and forgot us
            raise ToolError(f"the MCP server {self.name} refused the call: {exc.message}") from None
        except pydantic.ValidationError:
            raise ToolError(f"the MCP server {self.name} sent a result that breaks the protocol") from None
        except (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError, httpx2.HTTPError) as exc:
            connection.lost()
            message = f"the MCP server {self.name} could not be reached ({type(exc).__name__})"
            raise ToolError(message) from None
        return output_of(result, prefer_structured=self.prefer_structured)

    def _tools_changed(self) -> None:
        self._changed = True
        self._log.info("mcp.tools_changed")

    async def _list(self) -> list[mcp_types.Tool]:
        connection = await self._live()
        client = connection.client
        listed: list[mcp_types.Tool] = []
        cursor: str | None = None
        try:
            with anyio.fail_after(self.connect_timeout):
                for _ in range(_MAX_PAGES):
                    if client is None:
                        raise ToolSourceError(f"the MCP server {self.name} went away while listing its tools")
                    page = await client.list_tools(cursor=cursor)
                    listed.extend(page.tools)
                    cursor = page.next_cursor
                    if cursor is None:
                        break
        except (MCPError, TimeoutError, pydantic.ValidationError, OSError) as exc:
            connection.lost()
            message = f"the MCP server {self.name} did not list its tools: {_reason(exc)}"
            raise ToolSourceError(message) from None
        return listed

    async def _live(self) -> Connection:
        """The open connection, or a new one (one at a time: concurrent runs share it)."""
        connection = self._connection
        if connection is not None and connection.alive and connection.loop is loop_identity():
            return connection
        async with self._loop_locks().connecting:
            connection = self._connection
            if connection is not None and connection.alive:
                if connection.loop is not loop_identity():
                    raise UsageError(
                        f"the MCP server {self.name} is connected on another event loop; close it there first"
                    )
                return connection
            if connection is not None:
                await connection.close()
            self._connection = await self._connect()
            return self._connection

    async def _connect(self) -> Connection:
        try:
            return await Connection.open(
                self._transport,
                name=self.name,
                connect_timeout=self.connect_timeout,
                on_tools_changed=self._tools_changed,
                log=self._log,
            )
        except Exception as exc:
            message = f"could not connect to the MCP server {self.name}: {_reason(exc)}"
            raise ToolSourceError(message) from None

    async def _live_for_call(self) -> Connection:
        try:
            return await self._live()
        except ToolSourceError as exc:
            raise ToolError(str(exc)) from None

    def _loop_locks(self) -> _Locks:
        """This event loop's locks (anyio's are bound to the loop that first uses them)."""
        try:
            return self._locks.get()
        except LookupError:
            locks = _Locks()
            self._locks.set(locks)
            return locks

    def _made_tools(self, listed: Sequence[mcp_types.Tool]) -> list[MCPTool]:
        """Our tools for the listed ones; a tool that cannot be offered is logged and left out."""
        made: dict[str, MCPTool] = {}
        for remote in listed:
            name = self._local_name(remote.name)
            if name in made:
                self._log.warning("mcp.tool_skipped", tool=remote.name, reason=f"{name!r} is taken")
                continue
            try:
                made[name] = MCPTool(self, remote, name)
            except ToolDefinitionError as exc:
                self._log.warning("mcp.tool_skipped", tool=remote.name, reason=str(exc))
        return list(made.values())

    def _local_name(self, remote_name: str) -> str:
        name = _NOT_A_NAME_CHARACTER.sub("_", remote_name)
        return f"{self.prefix}_{name}" if self.prefix else name


class _Locks:
    """One listing at a time, one connecting at a time (concurrent runs share the result)."""

    def __init__(self) -> None:
        self.listing = anyio.Lock()
        self.connecting = anyio.Lock()


class MCPTool(Tool[..., Any]):
    """One tool of an MCP server: described by its listing, called on the server."""

    def __init__(self, source: MCPTools, remote: mcp_types.Tool, name: str) -> None:
        super().__init__(
            source.call,
            name=name,
            description=remote.description or remote.title or "",
            parameters=_parameters(remote.input_schema),
            timeout=source.timeout,
            needs_approval=source.needs_approval,
        )
        self.source = source
        self.remote_name = remote.name
        """The name on the server (``name`` may carry the source's prefix)."""
        self.context_param = "context"  # every call gets its ToolContext (progress, cancellation)
        self.limiter = source._limiter

    def bind(self, arguments: dict[str, Any], context: ToolContext[Any] | None) -> Callable[[], Any]:
        """The call to the server (the arguments stay a dict: their names are the server's)."""
        assert context is not None  # context_param is set
        return partial(self.source.call, self.remote_name, arguments, context)


class SourceOptions(TypedDict, total=False):
    """The options :func:`mcp_stdio` and :func:`mcp_http` share (see :func:`mcp_stdio`)."""

    prefix: str | None
    name: str | None
    timeout: float | None
    connect_timeout: float
    max_concurrency: int | None
    prefer_structured: bool
    needs_approval: NeedsApproval
    logger: FilteringBoundLogger | None


def mcp_stdio(
    command: str | Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    **options: Unpack[SourceOptions],
) -> MCPTools:
    """The tools of an MCP server run as a subprocess, spoken to over its stdin/stdout.

    Args:
        command: The command line (split like a shell would, without running one) or its words.
        env: Variables added to the server's environment (the ``mcp`` package passes a safe
            default set, not this process's whole environment).
        cwd: The server's working directory.
        prefix: Prepended to every tool name as ``prefix_name`` (to avoid clashes).
        name: How errors and logs name the server (default: the command line).
        timeout: Seconds each call may take (default: the agent's ``tool_timeout``).
        connect_timeout: Seconds to start the server and list its tools (default 30).
        max_concurrency: At most this many calls to this server at once, across all runs.
        prefer_structured: Send the model a result's ``structuredContent`` (as JSON) rather
            than its text when it has both.
        needs_approval: As for ``@tool``, for every tool of the server (``True``, or a
            predicate ``(ctx, arguments) -> bool``; ``ctx.tool_name`` tells which tool).
        logger: A structlog logger for connection events (default: silent).
    """
    words = shlex.split(command) if isinstance(command, str) else list(command)
    if not words:
        raise UsageError("mcp_stdio needs a command")
    extra_env = dict(env) if env else None
    parameters = StdioServerParameters(command=words[0], args=words[1:], env=extra_env, cwd=cwd)
    options["name"] = options.get("name") or shlex.join(words)
    return MCPTools(partial(_stdio_transport, parameters), **options)


def mcp_http(
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    **options: Unpack[SourceOptions],
) -> MCPTools:
    """The tools of an MCP server at ``url``, spoken to over streamable HTTP.

    Args:
        url: The server's MCP endpoint, e.g. ``https://host/mcp``.
        headers: Sent with every request, e.g. ``{"Authorization": "Bearer ..."}``; never logged.
        options: As for :func:`mcp_stdio` (``name`` defaults to the URL without credentials
            and query).
    """
    if not url.startswith(("http://", "https://")):
        raise UsageError(f"mcp_http needs an http:// or https:// URL, got {shown_url(url)!r}")
    connect_timeout = options.get("connect_timeout", DEFAULT_CONNECT_TIMEOUT)
    options["name"] = options.get("name") or shown_url(url)
    return MCPTools(partial(_http_transport, url, dict(headers or {}), connect_timeout), **options)


def _stdio_transport(parameters: StdioServerParameters) -> Transport:
    """The stdio transport, the server's stderr going to ours as it is *now*.

    (``stdio_client``'s default is the ``sys.stderr`` of when ``mcp`` was imported, which may be a
    test runner's in-memory stream, long closed, with no file descriptor for a subprocess.)
    """
    return stdio_client(parameters, errlog=_stderr_with_a_descriptor())


def _stderr_with_a_descriptor() -> TextIO:
    for stream in (sys.stderr, sys.__stderr__):
        try:
            if stream is not None and stream.fileno() >= 0:
                return stream
        except (AttributeError, OSError, ValueError):
            continue
    return _devnull()


@functools.cache
def _devnull() -> TextIO:
    """Where servers' stderr goes when this process has none: opened once, kept open."""
    return open(os.devnull, "w")  # lives as long as the process


@contextlib.asynccontextmanager
async def _http_transport(
    url: str, headers: dict[str, str], connect_timeout: float
) -> AsyncIterator[TransportStreams]:
    # No read timeout: a call takes as long as its tool timeout allows (ours, not a hard-coded
    # one), and a server may hold its event stream open.
    timeouts = httpx2.Timeout(connect_timeout, read=None)
    async with (
        httpx2.AsyncClient(headers=headers, timeout=timeouts) as client,
        streamable_http_client(url, http_client=client) as streams,
    ):
        yield streams


async def _report(
    context: ToolContext[Any], progress: float, total: float | None, message: str | None
) -> None:
    """The server's progress notifications, as the call's ``ToolProgress`` events."""
    await context.report({"progress": progress, "total": total, "message": message})


def _parameters(schema: dict[str, Any]) -> dict[str, Any]:
    """The listed input schema, with the ``properties`` the Responses API wants on every object."""
    return schema if "properties" in schema else {**schema, "properties": {}}


def _reason(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        return _reason(exc.exceptions[0])
    if isinstance(exc, MCPError):
        return exc.message
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _check_positive(name: str, value: float) -> None:
    if not value > 0:
        raise UsageError(f"{name} must be > 0 seconds, got {value!r}")
