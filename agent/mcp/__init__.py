"""MCP both ways: the tools of MCP servers in a run, and our tools served to MCP clients.

Needs the ``mcp`` extra (``pip install 'agent-runtime[mcp]'``), the official ``mcp`` package.
"""

from agent.mcp._server import mcp_server, serve_mcp

__all__ = [
    "mcp_server",
    "serve_mcp",
]
