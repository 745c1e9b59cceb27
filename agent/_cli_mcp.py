"""``agent serve-mcp``: the tools (builtin by default) served to MCP clients.

The command is made by :func:`serve_mcp_command` from the ``--tools`` loader of ``agent._cli``,
which registers it; ``agent.mcp`` (the ``mcp`` extra) is imported only when the command runs,
so the rest of the command line works without it. Over stdio nothing but the protocol goes to
stdout: logs and notes go to stderr.
"""

from __future__ import annotations

import signal
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Annotated, Any, NoReturn

import anyio
import typer
from rich.console import Console
from rich.text import Text

from agent._errors import UsageError
from agent._logging import make_logger
from agent._registry import ToolRegistry

__all__ = ["serve_mcp_command"]

LoadTools = Callable[[list[str]], ToolRegistry]
"""How the command line resolves ``--tools`` values into a registry."""

_stderr = Console(stderr=True)

ToolsOption = Annotated[
    list[str] | None,
    typer.Option(
        "--tools", help="'builtin', or module:attr naming a ToolRegistry, a list of tools or one tool."
    ),
]
TransportOption = Annotated[
    str, typer.Option(help="stdio (over stdin/stdout) or http (streamable HTTP).", show_default=True)
]
HostOption = Annotated[str, typer.Option(help="Interface to bind (http).")]
PortOption = Annotated[int, typer.Option(min=0, help="TCP port (http); 0 picks a free one.")]
PathOption = Annotated[str, typer.Option(help="URL path of the MCP endpoint (http).")]
TimeoutOption = Annotated[float, typer.Option(min=0.0, help="Seconds before a tool call is abandoned.")]
LogFormatOption = Annotated[
    str, typer.Option("--log-format", help="Log rendering on stderr: console or json.")
]
VerboseOption = Annotated[bool, typer.Option("-v", "--verbose", help="Debug logs (every tool call).")]


def serve_mcp_command(load_tools: LoadTools) -> Callable[..., None]:
    """The ``serve-mcp`` command, resolving ``--tools`` with ``load_tools``."""

    def serve_mcp(
        tools: ToolsOption = None,
        transport: TransportOption = "stdio",
        host: HostOption = "127.0.0.1",
        port: PortOption = 8000,
        path: PathOption = "/mcp",
        tool_timeout: TimeoutOption = 60.0,
        log_format: LogFormatOption = "console",
        verbose: VerboseOption = False,
    ) -> None:
        """Serve the builtin tools (or --tools) to MCP clients until Ctrl-C or SIGTERM.

        Over stdio (the default) the client starts this command and speaks on its stdin/stdout;
        over http it serves streamable HTTP at http://HOST:PORT/mcp.
        """
        serve = _serve_mcp_function()
        if transport not in ("stdio", "http"):
            _fail("--transport takes stdio or http", code=2)
        if log_format not in ("console", "json"):
            _fail("--log-format takes console or json", code=2)
        registry = load_tools(tools or ["builtin"])
        logger = make_logger(
            "json" if log_format == "json" else "console", level="debug" if verbose else "warning"
        )
        options: dict[str, Any] = {
            "transport": transport,
            "host": host,
            "port": port,
            "path": path,
            "tool_timeout": tool_timeout or None,
            "logger": logger,
            "on_ready": lambda url: _note(f"MCP server on {url} - Ctrl+C to stop"),
        }
        try:
            stopped_by = anyio.run(_serve_until_signal, partial(serve, registry, **options))
        except OSError as exc:  # before anything is served: the port, or no stdin to read
            where = f"on {host} port {port}" if transport == "http" else "over stdio"
            _fail(f"cannot serve {where}: {exc.strerror or exc}", code=2)
        except UsageError as exc:
            _fail(str(exc), code=2)
        if stopped_by is not None:
            _note(f"MCP server stopped ({stopped_by})")

    return serve_mcp


async def _serve_until_signal(serve: Callable[[], Awaitable[None]]) -> str | None:
    """Serve until SIGINT or SIGTERM (its name is returned) or the client's end of stdin (``None``).

    A caller's mistake found before serving (a taken port, no stdin) is raised as it is, not
    wrapped in the task group's exception group.
    """
    mistakes: list[OSError | UsageError] = []
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with anyio.create_task_group() as tasks:

            async def serve_then_stop() -> None:
                try:
                    await serve()
                except (OSError, UsageError) as exc:
                    mistakes.append(exc)
                tasks.cancel_scope.cancel()

            tasks.start_soon(serve_then_stop)
            async for signum in signals:
                tasks.cancel_scope.cancel()
                return signal.Signals(signum).name
    if mistakes:
        raise mistakes[0]
    return None


def _serve_mcp_function() -> Callable[..., Awaitable[None]]:
    """``agent.mcp.serve_mcp``, or one line saying the extra is missing and exit code 2."""
    try:
        from agent.mcp import serve_mcp  # the optional extra: imported only when the command runs
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").partition(".")[0]
        if missing == "agent":
            raise
        _fail(
            f"serve-mcp needs the mcp extra ({missing} is missing): pip install 'agent-runtime[mcp]'",
            code=2,
        )
    return serve_mcp


def _note(line: str) -> None:
    """One line on stderr, as it is."""
    _stderr.print(line, soft_wrap=True, markup=False, highlight=False)


def _fail(message: str, *, code: int) -> NoReturn:
    _stderr.print(Text.assemble(("error: ", "red"), message), highlight=False, soft_wrap=True)
    raise typer.Exit(code)
