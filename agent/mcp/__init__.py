"""MCP both ways (needs the ``mcp`` extra): MCP servers' tools in runs, and a registry served over MCP.

```python
from agent import Agent
from agent.mcp import mcp_http, mcp_stdio

files = mcp_stdio("python files_server.py", prefix="fs")
async with Agent(model="gpt-4.1", tools=[my_tool, files, mcp_http("https://host/mcp")]) as agent:
    result = await agent.run("...")
```
"""

try:
    import mcp as _mcp  # noqa: F401
except ImportError as exc:  # pragma: no cover - the extra is part of the dev install
    raise ImportError("agent.mcp needs the official MCP package: pip install 'agent-runtime[mcp]'") from exc

from agent.mcp._client import MCPTool, MCPTools, mcp_http, mcp_stdio

__all__ = ["MCPTool", "MCPTools", "mcp_http", "mcp_stdio"]
