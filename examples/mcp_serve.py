"""Serve tools to MCP clients (editors, other agents): one of your own next to the builtin four.

Over stdin/stdout, for an MCP client that starts the server itself (its config names the
command), or over streamable HTTP:

    python examples/mcp_serve.py           # stdio
    python examples/mcp_serve.py --http    # http://127.0.0.1:8000/mcp, Ctrl-C to stop
"""

from __future__ import annotations

import contextlib
import sys
from functools import partial
from typing import Literal

import anyio

from agent import ToolRegistry, tool
from agent.mcp import serve_mcp
from builtin_tools import registry as builtin


@tool
async def word_count(text: str) -> int:
    """Count the words of a text.

    Args:
        text: Any text; words are separated by white space.
    """
    return len(text.split())


tools = ToolRegistry([word_count, builtin])


def main() -> None:
    transport: Literal["stdio", "http"] = "http" if "--http" in sys.argv[1:] else "stdio"
    announce = partial(print, file=sys.stderr)  # stdout carries the protocol on stdio
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: the server has stopped cleanly
        anyio.run(partial(serve_mcp, tools, transport=transport, on_ready=announce))


if __name__ == "__main__":
    main()
