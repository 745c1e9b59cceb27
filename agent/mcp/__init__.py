"""MCP both ways (needs the ``mcp`` extra): MCP servers' tools in runs, and our tools served to MCP clients.

```python
from agent import Agent
from agent.mcp import mcp_http, mcp_stdio, serve_mcp

files = mcp_stdio("python files_server.py", prefix="fs")
async with Agent(model="gpt-4.1", tools=[my_tool, files, mcp_http("https://host/mcp")]) as agent:
    result = await agent.run("...")

await serve_mcp([my_tool], transport="http", port=8000)  # our tools, for MCP clients
```
"""

try:
    import mcp as _mcp  # noqa: F401
except ModuleNotFoundError as exc:  # the extra is missing: say which, keep the missing module's name
    message = "agent.mcp needs the official MCP package: pip install 'agent-runtime[mcp]'"
    raise ModuleNotFoundError(message, name=exc.name) from exc

from agent.mcp._client import MCPTool, MCPTools, mcp_http, mcp_stdio
from agent.mcp._server import mcp_server, serve_mcp

__all__ = ["MCPTool", "MCPTools", "mcp_http", "mcp_server", "mcp_stdio", "serve_mcp"]
