"""A controllable MCP server for the tests, built on the official package's `MCPServer`.

    python tests/mcp_fixture_server.py --transport stdio|http [--port P] [--journal DIR]

Every tool is deterministic. `slow` leaves a trace in the journal directory (`<tag>.start`, then
`<tag>.end`, or `<tag>.cancelled` when its request is cancelled), so a test can see from outside
what the server did; `pid` tells which process answers (a reconnect starts a new one);
`add_tool` registers `late` and tells the client its tool list changed; `header` returns an HTTP
request header. `structured_output=False` keeps a `str` or `int` result plain text (MCPServer would
otherwise add `{"result": ...}` as structured content).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TypedDict

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp_types import CallToolResult, ImageContent, TextContent, ToolListChangedNotification

# A 1x1 transparent PNG, base64 as MCP carries it.
PNG_BASE64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAAC0lEQVR4nGNgAAIAAAUAAXpeqz8AAAAASUVORK5CYII="


class Sum(TypedDict):
    """The structured result of `add`."""

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

    @server.tool(structured_output=True)
    def add(a: int, b: int) -> Sum:
        """Add two integers."""
        return {"sum": a + b}

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transport", choices=["stdio", "http"], default="stdio")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--journal", type=Path, default=None)
    args = parser.parse_args()
    server = build(args.journal)
    if args.transport == "stdio":
        server.run("stdio")
    else:
        server.run("streamable-http", host="127.0.0.1", port=args.port)


if __name__ == "__main__":
    main()
