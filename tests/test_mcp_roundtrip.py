"""Issue 10's first acceptance: a full run on the local model server whose tools come from our own
MCP server (``agent serve-mcp``), started as a real process, over stdio and over streamable HTTP."""

from __future__ import annotations

import subprocess
from pathlib import Path

import psutil
import pytest

from agent import Agent, RunResult
from agent.localmodel import AutoPolicy, LocalModelServer
from agent.mcp import MCPTools, mcp_http, mcp_stdio
from tests.test_mcp_server import serve_mcp_command, server_process, wait_for_line

pytestmark = pytest.mark.anyio

PROMPT = "What is 2^10? Use the calculator."


async def run_with(source: MCPTools) -> RunResult:
    with LocalModelServer(AutoPolicy()) as model:
        async with Agent("local", tools=[source], base_url=model.base_url, api_key="local") as agent:
            return await agent.run(PROMPT)


def check(result: RunResult) -> None:
    """The model called the served calculator, got 1024, and answered with it."""
    [call] = result.tool_calls
    assert (call.name, call.kind) == ("math_calculator", "ok")
    assert '"result": 1024' in call.output or '"result":1024' in call.output
    assert "1024" in result.output


async def test_a_run_uses_the_tools_of_agent_serve_mcp_over_stdio() -> None:
    """Our client starts ``agent serve-mcp`` as a subprocess; the run calls its tool; the process ends."""
    source = mcp_stdio(serve_mcp_command())
    result = await run_with(source)
    check(result)
    children = [c for c in psutil.Process().children(recursive=True) if "serve-mcp" in " ".join(c.cmdline())]
    assert children == []


async def test_a_run_uses_the_tools_of_agent_serve_mcp_over_http(tmp_path: Path) -> None:
    """``agent serve-mcp --transport http`` on a free port; our client's run calls its tool."""
    log = tmp_path / "stderr.txt"
    command = serve_mcp_command("--transport", "http", "--port", "0")
    with log.open("wb") as stderr, server_process(command, stdout=subprocess.PIPE, stderr=stderr) as process:
        url = wait_for_line(log, "MCP server on http://127.0.0.1:", process).split()[3]
        check(await run_with(mcp_http(url)))
    assert process.returncode is not None
