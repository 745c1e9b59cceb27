"""A controllable MCP server for the tests, built on the official package's `MCPServer`.

    python tests/mcp_fixture_server.py --transport stdio|http [--port P] [--journal DIR] [--legacy]

Every tool is deterministic. `slow` leaves a trace in the journal directory (`<tag>.start`, then
`<tag>.end`, or `<tag>.cancelled` when its request is cancelled), so a test can see from outside
what the server did; `pid` tells which process answers (a reconnect starts a new one);
`add_tool` registers `late` and tells the client its tool list changed; `header` returns an HTTP
request header. `structured_output=False` keeps a `str` or `int` result plain text (MCPServer
would otherwise add `{"result": ...}` as structured content).

Clients of the official package speak its 2026-07-28 protocol with this server; `--legacy` serves
only the 2025 (handshake-era) protocol, as most servers in use do, so clients fall back to it.
"""

from __future__ import annotations

import argparse
import os
from functools import partial
from pathlib import Path
from typing import Annotated, TypedDict

import anyio
import uvicorn
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.runner import serve_loop
from mcp.server.stdio import stdio_server
from mcp_types import CallToolResult, ImageContent, TextContent, ToolListChangedNotification
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

# A 1x1 transparent PNG, base64 as MCP carries it.
PNG_BASE64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAAC0lEQVR4nGNgAAIAAAUAAXpeqz8AAAAASUVORK5CYII="


class Sum(TypedDict):
    """The structured result of `add` (its text says `2 + 3 = 5`)."""

    sum: int


def build(journal: Path | None) -> MCPServer:
    """The fixture server; `slow` writes its traces in `journal` (nowhere when None)."""
    server = MCPServer("fixture", log_level="CRITICAL")

    def note(tag: str, event: str) -> None:
        if journal is not None:
            (journal / f"{tag}.{event}").write_text(str(os.getpid()))

    @server.tool(structured_output=False)
    def echo(text: str) -> str:
        """Return the text as it is."""
        return text

    @server.tool()
    def add(a: int, b: int) -> Annotated[CallToolResult, Sum]:
        """Add two integers."""
        text = TextContent(type="text", text=f"{a} + {b} = {a + b}")
        return CallToolResult(content=[text], structured_content={"sum": a + b})

    @server.tool(structured_output=False)
    async def slow(seconds: float, tag: str) -> str:
        """Sleep `seconds`, leaving `<tag>.start` and `<tag>.end` (or `<tag>.cancelled`) in the journal."""
        note(tag, "start")
        try:
            await anyio.sleep(seconds)
        except anyio.get_cancelled_exc_class():
            note(tag, "cancelled")
            raise
        note(tag, "end")
        return f"slept {seconds}"

    @server.tool(structured_output=False)
    async def hang() -> str:
        """Never return."""
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    @server.tool()
    def fail(message: str) -> CallToolResult:
        """Return an error result (isError) holding `message`."""
        return CallToolResult(content=[TextContent(type="text", text=message)], is_error=True)

    @server.tool(structured_output=False)
    def boom() -> str:
        """Raise an exception."""
        raise RuntimeError("boom went the tool")

    @server.tool()
    def image() -> CallToolResult:
        """Return a tiny PNG and a caption."""
        picture = ImageContent(type="image", data=PNG_BASE64, mime_type="image/png")
        return CallToolResult(content=[picture, TextContent(type="text", text="a pixel")])

    @server.tool()
    def point() -> CallToolResult:
        """Return structured content only (no text block)."""
        return CallToolResult(content=[], structured_content={"x": 1, "y": 2})

    @server.tool(structured_output=False)
    def pid() -> int:
        """The server's process id."""
        return os.getpid()

    @server.tool(structured_output=False)
    def header(name: str, ctx: Context) -> str:
        """The value of the HTTP request header `name` (empty when absent, and over stdio)."""
        return (ctx.headers or {}).get(name.lower(), "")

    @server.tool(structured_output=False)
    async def add_tool(ctx: Context) -> str:
        """Register the tool `late` and tell the client the tool list changed."""

        def late(x: int) -> int:
            """Return x + 1."""
            return x + 1

        server.add_tool(late, structured_output=False)
        # On the request's own stream (it reaches the client before this call's result), and on
        # the subscriptions bus for clients of the 2026-07-28 protocol.
        await ctx.session.send_notification(ToolListChangedNotification(), related_request_id=ctx.request_id)
        await ctx.notify_tools_changed()
        return "added late"

    return server


async def serve_stdio(server: MCPServer, *, legacy: bool) -> None:
    """Over stdin/stdout; `legacy`: the handshake-era loop only (no 2026-07-28 requests)."""
    if not legacy:
        await server.run_stdio_async()
        return
    lowlevel = server._lowlevel_server
    async with stdio_server() as (read, write), lowlevel.lifespan(lowlevel) as state:
        options = lowlevel.create_initialization_options()
        await serve_loop(lowlevel, read, write, lifespan_state=state, init_options=options)


async def serve_http(server: MCPServer, port: int, *, legacy: bool) -> None:
    """Streamable HTTP at `/mcp`; `legacy`: refuse 2026-07-28 requests as a 2025 server does."""
    app = server.streamable_http_app(host="127.0.0.1")
    config = uvicorn.Config(
        _LegacyOnly(app) if legacy else app, host="127.0.0.1", port=port, log_level="critical"
    )
    await uvicorn.Server(config).serve()


class _LegacyOnly:
    """Answers a request naming a protocol version newer than 2025's with 400, as 2025 servers do."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        version = Headers(scope=scope).get("mcp-protocol-version") if scope["type"] == "http" else None
        if version is not None and version not in HANDSHAKE_PROTOCOL_VERSIONS:
            refusal = JSONResponse({"error": f"Unsupported protocol version: {version}"}, status_code=400)
            await refusal(scope, receive, send)
            return
        await self.app(scope, receive, send)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transport", choices=["stdio", "http"], default="stdio")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--journal", type=Path, default=None)
    parser.add_argument("--legacy", action="store_true", help="speak only the 2025 (handshake) protocol")
    args = parser.parse_args()
    server = build(args.journal)
    if args.transport == "stdio":
        anyio.run(partial(serve_stdio, server, legacy=args.legacy))
    else:
        anyio.run(partial(serve_http, server, args.port, legacy=args.legacy))


if __name__ == "__main__":
    main()
