"""Our tools served over the Model Context Protocol, through the official ``mcp`` package.

:func:`mcp_server` turns a registry into an ``mcp.server.lowlevel.Server``: ``tools/list`` lists
each tool with the very ``parameters`` schema a Responses request sends, and ``tools/call`` goes
through :func:`~agent._execution.run_tool`, the in-process engine's own tool step, so argument
validation, timeouts, per-tool ``max_concurrency``, sync tools on bounded threads and every
error text are the ones the model reads in a run. :func:`serve_mcp` serves that server over this
process's stdin/stdout or over streamable HTTP. None of the protocol is written here.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Literal, TypeGuard

import anyio
import mcp_types as types
import sniffio
import uvicorn
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server
from pydantic_core import to_json
from sse_starlette.sse import AppStatus
from structlog.typing import FilteringBoundLogger

from agent._engine import ToolOutcome, ToolRequest
from agent._errors import UsageError
from agent._events import RunEvent, ToolProgress
from agent._execution import ExecutionSettings, ToolEnvironment, run_tool
from agent._limits import DEFAULT_LIMITS, Limits
from agent._logging import silent_logger
from agent._registry import ToolLike, ToolRegistry
from agent._threads import LoopLocalLimiter, ThreadSlot

__all__ = ["mcp_server", "serve_mcp"]

Transport = Literal["stdio", "http"]

_SHUTDOWN_GRACE = 3
"""Seconds an HTTP server, told to stop, waits for open connections before it closes them."""


def mcp_server(
    tools: ToolRegistry | Iterable[ToolLike],
    *,
    name: str = "agent-runtime",
    tool_timeout: float | None = 60.0,
    max_concurrency: int = 32,
    max_threads: int = 64,
    limits: Limits | None = None,
    expose_tool_exceptions: bool = False,
    logger: FilteringBoundLogger | None = None,
) -> Server[Any]:
    """The tools as an MCP server object, to run over any transport of the ``mcp`` package.

    Args:
        tools: A registry, or tools, plain functions and registries to make one of.
        name: The server name reported to clients.
        tool_timeout: Seconds before a call is abandoned (a tool's own ``timeout`` wins).
        max_concurrency: Tool calls running at once over all clients; more calls wait.
        max_threads: Worker threads for sync tools (a timed-out one keeps its thread).
        limits: Caps on the arguments (``max_argument_bytes``, ``max_json_depth``).
        expose_tool_exceptions: Show a tool's exception message to the client, not only its
            type (a ``ToolError``'s message is always shown).
        logger: Where ``tool.start``/``tool.end`` are logged (default: nowhere).
    """
    if max_concurrency < 1 or max_threads < 1:
        raise UsageError("max_concurrency and max_threads must be >= 1")
    registry = tools if isinstance(tools, ToolRegistry) else ToolRegistry(tools)
    settings = ExecutionSettings(
        tools=registry,
        tool_timeout=tool_timeout,
        thread_limiter=LoopLocalLimiter(max_threads),
        expose_exception_messages=expose_tool_exceptions,
        limits=limits or DEFAULT_LIMITS,
    )
    service = _ToolService(settings, LoopLocalLimiter(max_concurrency), logger or silent_logger())
    return Server(name, version=_version(), on_list_tools=service.list_tools, on_call_tool=service.call_tool)


async def serve_mcp(
    tools: ToolRegistry | Iterable[ToolLike],
    *,
    transport: Transport = "stdio",
    host: str = "127.0.0.1",
    port: int = 8000,
    path: str = "/mcp",
    on_ready: Callable[[str], object] | None = None,
    **mcp_server_kwargs: Any,
) -> None:
    """Serve the tools over MCP until cancelled (or, on stdio, until stdin ends).

    ``transport="stdio"`` speaks over this process's stdin and stdout (nothing else may write to
    stdout meanwhile: the ``mcp`` package points file descriptor 1 at stderr while it serves).
    ``transport="http"`` serves streamable HTTP at ``http://host:port/path`` with uvicorn (so it
    needs asyncio); ``port=0`` picks a free port, and ``on_ready`` is called with the URL once
    requests are accepted. A port that is taken raises ``OSError`` before anything is served.
    Other keyword arguments go to :func:`mcp_server`.
    """
    server = mcp_server(tools, **mcp_server_kwargs)
    if transport == "stdio":
        with _private_stdin() as stdin:
            async with stdio_server(stdin=stdin) as (read, write):
                await server.run(read, write, server.create_initialization_options())
    elif transport == "http":
        await _serve_http(server, host=host, port=port, path=path, on_ready=on_ready)
    else:
        raise UsageError(f"transport must be 'stdio' or 'http', got {transport!r}")


@dataclass(frozen=True, slots=True)
class _ToolService:
    """The ``tools/list`` and ``tools/call`` handlers of one server."""

    settings: ExecutionSettings
    calls: LoopLocalLimiter
    log: FilteringBoundLogger

    async def list_tools(
        self, ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        return types.ListToolsResult(tools=[_listed(tool.wire()) for tool in self.settings.tools])

    async def call_tool(
        self, ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        request = ToolRequest(
            turn=1,
            call_id=str(ctx.request_id) if ctx.request_id is not None else uuid.uuid4().hex,
            name=params.name,
            arguments=json.dumps(params.arguments or {}, ensure_ascii=False),
        )
        progress = _Progress(ctx.session.report_progress, self.log)
        environment = ToolEnvironment(self.settings, None, progress.emit, self.log, _run_id(ctx))
        async with self.calls.get():
            return _result(await run_tool(request, environment))


def _listed(wire: Mapping[str, Any]) -> types.Tool:
    return types.Tool(
        name=wire["name"], description=wire["description"] or None, input_schema=wire["parameters"]
    )


def _result(outcome: ToolOutcome) -> types.CallToolResult:
    """The outcome as the client reads it: the model's very output, an error unless ``ok``."""
    content: list[types.ContentBlock] = [types.TextContent(type="text", text=outcome.output)]
    if outcome.kind != "ok":
        return types.CallToolResult(content=content, is_error=True)
    return types.CallToolResult(content=content, structured_content=_json_object(outcome.output))


def _json_object(text: str) -> dict[str, Any] | None:
    """``text`` parsed, if it is a JSON object (what a tool returning a dict or a model sends)."""
    if not text.startswith("{"):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _run_id(ctx: ServerRequestContext[Any]) -> str:
    """The client's MCP session id on streamable HTTP; otherwise one of its own for each call."""
    headers = getattr(ctx.request, "headers", None)
    session = headers.get("mcp-session-id") if headers is not None else None
    return str(session) if session else f"mcp-{uuid.uuid4().hex}"


ReportProgress = Callable[[float, float | None, str | None], Awaitable[None]]


class _Progress:
    """``ToolContext.report`` as MCP progress notifications (sent only if the client asked).

    A number is the progress value; a mapping with a numeric ``progress`` gives ``progress``,
    ``total`` and ``message``; anything else is the message of a progress that counts reports.
    """

    def __init__(self, report: ReportProgress, log: FilteringBoundLogger) -> None:
        self._report = report
        self._log = log
        self._count = 0

    async def emit(self, event: RunEvent) -> None:
        if not isinstance(event, ToolProgress):
            return
        self._count += 1
        progress, total, message = _progress_of(event.data, self._count)
        try:
            await self._report(progress, total, message)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:  # the client is gone
            self._log.debug("tool.progress_lost", call_id=event.call_id, error=type(exc).__name__)


def _progress_of(data: Any, count: int) -> tuple[float, float | None, str | None]:
    if isinstance(data, int | float) and not isinstance(data, bool):
        return float(data), None, None
    if isinstance(data, Mapping) and _is_number(data.get("progress")):
        total = data.get("total")
        message = data.get("message")
        return (
            float(data["progress"]),
            float(total) if _is_number(total) else None,
            None if message is None else str(message),
        )
    return float(count), None, data if isinstance(data, str) else to_json(data, fallback=repr).decode()


def _is_number(value: Any) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


class _AbandonableLines(anyio.AsyncFile[str]):
    """A text file whose lines are read on daemon threads that a cancellation walks away from.

    ``anyio.wrap_file`` reads on a worker thread that cancellation must wait for, and that the
    interpreter waits for at exit: a server told to stop while its client keeps stdin open and
    silent would never end.
    """

    abandoned = False
    """Whether a read was walked away from (its thread may still be blocked on the file)."""

    async def readline(self) -> str:
        slot = await ThreadSlot.acquire(anyio.CapacityLimiter(1))
        try:
            return await slot.run(self.wrapped.readline)
        except anyio.get_cancelled_exc_class():
            self.abandoned = True
            raise
        finally:
            slot.close()


@contextlib.contextmanager
def _private_stdin() -> Iterator[_AbandonableLines]:
    """The client's messages read from a private copy of fd 0, and fd 0 on the null device meanwhile.

    As ``stdio_server`` does for the stdin it opens itself: a tool or a child process that reads
    stdin gets end-of-file, not the client's messages.
    """
    wire = os.dup(0)
    null = os.open(os.devnull, os.O_RDONLY)
    try:
        os.dup2(null, 0)
    finally:
        os.close(null)
    lines = _AbandonableLines(open(wire, encoding="utf-8", errors="replace", closefd=False))  # noqa: SIM115
    try:
        yield lines
    finally:
        os.dup2(wire, 0)
        # A thread still blocked reading `wire` must not find it closed and its number reused.
        if not lines.abandoned:
            os.close(wire)


def _version() -> str:
    try:
        return metadata.version("agent-runtime")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return ""


class _Uvicorn(uvicorn.Server):
    """uvicorn that leaves signals to the caller (cancellation stops it) and says when it is up."""

    def __init__(self, config: uvicorn.Config, on_started: Callable[[], object]) -> None:
        super().__init__(config)
        self._on_started = on_started

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            self._on_started()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # An MCP client's event stream (its GET) stays open until the server ends it, and
        # sse_starlette ends them on this process-wide flag: else uvicorn would wait for them.
        AppStatus.should_exit = True
        try:
            await super().shutdown(sockets=sockets)
        finally:
            AppStatus.should_exit = False


async def _serve_http(
    server: Server[Any], *, host: str, port: int, path: str, on_ready: Callable[[str], object] | None
) -> None:
    if sniffio.current_async_library() != "asyncio":
        raise UsageError("serve_mcp(transport='http') runs uvicorn, which needs asyncio")
    app = server.streamable_http_app(streamable_http_path=path, host=host)
    sock = _listen(host, port)
    url = _url(host, sock.getsockname()[1], path)
    config = uvicorn.Config(
        app,
        lifespan="on",
        log_config=None,
        access_log=False,
        ws="none",
        timeout_graceful_shutdown=_SHUTDOWN_GRACE,
    )
    web = _Uvicorn(config, on_started=lambda: on_ready(url) if on_ready is not None else None)
    try:
        async with anyio.create_task_group() as tasks:

            async def run() -> None:
                # Shielded: a cancelled caller stops it through should_exit, so it shuts down
                # cleanly (connections closed, the session manager's lifespan left).
                with anyio.CancelScope(shield=True):
                    await web.serve(sockets=[sock])
                tasks.cancel_scope.cancel()

            tasks.start_soon(run)
            try:
                await anyio.sleep_forever()
            finally:
                web.should_exit = True
    finally:
        sock.close()


def _listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket, so a taken port fails here, in the caller, not in uvicorn."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    return sock


def _url(host: str, port: int, path: str) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}{path}"
