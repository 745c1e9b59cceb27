"""MCP servers' tools in runs (agent.mcp): listing, results, limits, lifecycle.

Most tests talk to an MCP server in this process through the ``mcp`` package's in-memory
transport (fast, deterministic); real processes over stdio and HTTP, kills and hangs are in
test_mcp_acceptance.py.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import anyio
import mcp_types as types
import psutil
import pytest
import uvicorn
from mcp.client._memory import InMemoryTransport
from mcp.server import Server, ServerRequestContext
from mcp.server.mcpserver import Context, MCPServer
from mcp.shared.exceptions import MCPError

from agent import (
    Agent,
    ToolDefinitionError,
    ToolProgress,
    ToolRegistry,
    ToolSourceError,
    UsageError,
    tool,
)
from agent.mcp import MCPTools, mcp_http, mcp_stdio
from tests._support import function_call, message, response, scripted_agent

pytestmark = pytest.mark.anyio

PNG = b"\x89PNG\r\n\x1a\n-tiny"


def memory_source(server: Server[Any] | MCPServer, **options: Any) -> MCPTools:
    """An MCPTools speaking to ``server`` in this process."""
    options.setdefault("name", "memory")
    return MCPTools(lambda: InMemoryTransport(server), **options)


def weather_server() -> MCPServer:
    server = MCPServer("weather")

    @server.tool()
    def forecast(city: str, days: int = 1) -> str:
        """The forecast for a city."""
        return f"{city}: sunny for {days} day(s)"

    return server


def content_server() -> Server[Any]:
    """A low-level server whose tools return each kind of MCP result."""
    results = {
        "two_texts": types.CallToolResult(
            content=[types.TextContent(text="first"), types.TextContent(text="second")]
        ),
        "structured": types.CallToolResult(
            content=[types.TextContent(text="the sum is 3")], structured_content={"sum": 3}
        ),
        "only_structured": types.CallToolResult(content=[], structured_content={"sum": 3}),
        "picture": types.CallToolResult(
            content=[
                types.TextContent(text="a picture"),
                types.ImageContent(data="iVBORw0=", mime_type="image/png"),
            ]
        ),
        "refusal": types.CallToolResult(content=[types.TextContent(text="no such city")], is_error=True),
    }

    async def list_tools(ctx: ServerRequestContext[Any], params: Any) -> types.ListToolsResult:
        schema = {"type": "object", "properties": {}}
        return types.ListToolsResult(tools=[types.Tool(name=n, input_schema=schema) for n in results])

    async def call_tool(
        ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        return results[params.name]

    return Server("content", on_list_tools=list_tools, on_call_tool=call_tool)


async def test_listed_tools_keep_the_servers_name_description_and_schema() -> None:
    """Each listed tool becomes a tool with the server's description and input schema."""
    async with memory_source(weather_server()) as source:
        (forecast,) = await source.list_tools()
    assert (forecast.name, forecast.description) == ("forecast", "The forecast for a city.")
    assert forecast.parameters["properties"]["city"]["type"] == "string"
    assert forecast.parameters["required"] == ["city"]


async def test_a_prefix_names_tools_and_odd_characters_become_underscores() -> None:
    """``prefix="wx"`` gives ``wx_forecast``; a dot (legal in MCP, not in the API) becomes ``_``."""
    server = weather_server()

    @server.tool(name="get.alerts")
    def alerts() -> str:
        """Alerts."""
        return "none"

    async with memory_source(server, prefix="wx") as source:
        names = [each.name for each in await source.list_tools()]
    assert names == ["wx_forecast", "wx_get_alerts"]


async def test_a_run_calls_the_servers_tool_and_the_model_reads_its_text() -> None:
    """The model's call reaches the server (by its own name) and its text comes back as output."""
    source = memory_source(weather_server(), prefix="wx")
    call = function_call("wx_forecast", {"city": "Oslo", "days": 2})
    agent, endpoint = scripted_agent([response(call), response(message("done"))], tools=[source])
    async with agent:
        result = await agent.run("weather?")
    assert result.tool_calls[0].kind == "ok"
    assert result.tool_calls[0].output == "Oslo: sunny for 2 day(s)"
    assert [t["name"] for t in endpoint.requests[0]["tools"]] == ["wx_forecast"]


async def test_results_of_each_kind_reach_the_model_in_the_documented_form() -> None:
    """Texts joined; structured content alone as JSON; an image as MCP JSON blocks; isError a tool_error."""
    names = ("two_texts", "structured", "only_structured", "picture", "refusal")
    calls = [function_call(name) for name in names]
    agent, _ = scripted_agent(
        [response(*calls), response(message("ok"))], tools=[memory_source(content_server())]
    )
    async with agent:
        records = (await agent.run("go")).tool_calls
    texts, structured, only_structured, picture, refusal = records
    assert texts.output == "first\nsecond"
    assert structured.output == "the sum is 3"
    assert json.loads(only_structured.output) == {"sum": 3}
    assert json.loads(picture.output) == {
        "content": [
            {"type": "text", "text": "a picture"},
            {"type": "image", "data": "iVBORw0=", "mimeType": "image/png"},
        ]
    }
    assert (refusal.kind, json.loads(refusal.output)["error"]["message"]) == ("tool_error", "no such city")


async def test_prefer_structured_sends_the_structured_content() -> None:
    """``prefer_structured=True``: a result with both text and structured content sends the JSON."""
    source = memory_source(content_server(), prefer_structured=True)
    agent, _ = scripted_agent(
        [response(function_call("structured")), response(message("ok"))], tools=[source]
    )
    async with agent:
        record = (await agent.run("go")).tool_calls[0]
    assert json.loads(record.output) == {"sum": 3}


async def test_invalid_arguments_are_refused_before_the_server_is_called() -> None:
    """Arguments against the server's schema are invalid_arguments, checked here like ours."""
    calls: list[str] = []
    server = MCPServer("strict")

    @server.tool()
    def forecast(city: str) -> str:
        """Forecast."""
        calls.append(city)
        return city

    call = function_call("forecast", {"city": 42})
    agent, _ = scripted_agent([response(call), response(message("ok"))], tools=[memory_source(server)])
    async with agent:
        record = (await agent.run("go")).tool_calls[0]
    assert (record.kind, calls) == ("invalid_arguments", [])


@pytest.mark.parametrize(("code", "new_session"), [(-32600, True), (-32603, True), (-32602, False)])
async def test_after_a_protocol_error_the_next_call_opens_a_new_session_unless_it_was_an_answer(
    code: int, new_session: bool
) -> None:
    """ "Session terminated" (a restarted HTTP server) or a crash: a new session; invalid params: the same."""
    failures = [code]

    async def list_tools(ctx: ServerRequestContext[Any], params: Any) -> types.ListToolsResult:
        return types.ListToolsResult(tools=[types.Tool(name="flaky", input_schema={"type": "object"})])

    async def call_tool(
        ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        if failures:
            raise MCPError(failures.pop(), "Session terminated")
        return types.CallToolResult(content=[types.TextContent(text="fine")])

    source = memory_source(Server("flaky", on_list_tools=list_tools, on_call_tool=call_tool))
    calls = [response(function_call("flaky")), response(function_call("flaky")), response(message("ok"))]
    agent, _ = scripted_agent(calls, tools=[source])
    async with agent:
        await source.list_tools()
        first = source._connection
        records = (await agent.run("go")).tool_calls
        assert (source._connection is not first) is new_session
    assert [r.kind for r in records] == ["tool_error", "ok"]
    assert "refused the call: Session terminated" in records[0].output


async def test_a_clash_between_sources_is_a_tool_definition_error_naming_both() -> None:
    """Two servers offering the same name, without prefixes: the run refuses to start."""
    first = memory_source(weather_server(), name="first")
    second = memory_source(weather_server(), name="second")
    agent, endpoint = scripted_agent([], tools=[first, second])
    with pytest.raises(ToolDefinitionError, match=r"'forecast'.*second.*first"):
        await agent.run("go")
    await agent.aclose()
    assert endpoint.requests == []


async def test_a_clash_with_a_local_tool_is_a_tool_definition_error() -> None:
    """A server's tool may not take the name of one of the agent's own tools."""

    @tool
    def forecast(city: str) -> str:
        """Local forecast."""
        return city

    agent, _ = scripted_agent([], tools=[forecast, memory_source(weather_server())])
    with pytest.raises(ToolDefinitionError, match="agent's own tools"):
        async with agent:
            pass


async def test_a_changed_tool_list_is_seen_by_the_next_run() -> None:
    """After the server says its tools changed, the next run offers the new list."""
    server = weather_server()

    @server.tool()
    async def install(ctx: Context) -> str:
        """Install another tool."""
        server.add_tool(lambda: "late", name="late", description="Added later.")
        await ctx.notify_tools_changed()
        return "installed"

    source = memory_source(server)
    replies = [response(function_call("install")), response(message("ok")), response(message("ok"))]
    agent, endpoint = scripted_agent(replies, tools=[source])
    async with agent:
        await agent.run("install")
        await _wait_until(lambda: source._changed)
        await agent.run("again")
    offered = [[t["name"] for t in request["tools"]] for request in endpoint.requests]
    assert offered[0] == ["forecast", "install"]
    assert offered[-1] == ["forecast", "install", "late"]


async def test_a_tool_timeout_cancels_the_call_on_the_server() -> None:
    """A call over its timeout ends as ``timeout`` and the server's handler is cancelled."""
    cancelled = anyio.Event()
    server = MCPServer("hang")

    @server.tool()
    async def hang() -> str:
        """Never answers."""
        try:
            await anyio.sleep_forever()
        finally:
            cancelled.set()
        return "never"

    source = memory_source(server, timeout=0.3)
    agent, _ = scripted_agent([response(function_call("hang")), response(message("ok"))], tools=[source])
    async with agent:
        record = (await agent.run("go")).tool_calls[0]
        with anyio.fail_after(5):
            await cancelled.wait()
    assert record.kind == "timeout"


async def test_server_progress_becomes_tool_progress_events() -> None:
    """Progress notifications of a call arrive as ToolProgress events of that call."""
    server = MCPServer("progress")

    @server.tool()
    async def work(ctx: Context) -> str:
        """Work in steps."""
        for step in (1, 2):
            await ctx.report_progress(step, 2, f"step {step}")
        return "worked"

    agent, _ = scripted_agent(
        [response(function_call("work")), response(message("ok"))], tools=[memory_source(server)]
    )
    async with agent, agent.run_stream("go") as events:
        seen = [event.data async for event in events if isinstance(event, ToolProgress)]
    assert seen == [
        {"progress": 1.0, "total": 2.0, "message": "step 1"},
        {"progress": 2.0, "total": 2.0, "message": "step 2"},
    ]


async def test_max_concurrency_holds_across_runs() -> None:
    """``max_concurrency=2``: never more than two calls at the server at once, whatever the runs."""
    busy = 0
    most = 0
    server = MCPServer("busy")

    @server.tool()
    async def step() -> str:
        """One step."""
        nonlocal busy, most
        busy += 1
        most = max(most, busy)
        await anyio.sleep(0.05)
        busy -= 1
        return "stepped"

    replies = [response(*[function_call("step") for _ in range(3)]), response(message("ok"))] * 3
    agent, _ = scripted_agent(replies, tools=[memory_source(server, max_concurrency=2)])
    async with agent, anyio.create_task_group() as runs:
        for _ in range(3):
            runs.start_soon(agent.run, "go")
    assert most == 2


async def test_a_server_that_cannot_start_is_a_tool_source_error_when_the_agent_opens() -> None:
    """A missing command fails the agent's ``async with`` with ToolSourceError naming it."""
    source = mcp_stdio("agent-runtime-no-such-command --flag", connect_timeout=5)
    agent, _ = scripted_agent([], tools=[source])
    with pytest.raises(ToolSourceError, match="agent-runtime-no-such-command"):
        async with agent:
            pass
    with pytest.raises(ToolSourceError):
        await agent.run("go")  # and every run after, until it can start


async def test_a_server_that_never_answers_the_handshake_fails_within_connect_timeout() -> None:
    """``connect_timeout`` bounds the start; the silent process is stopped, not leaked."""
    source = mcp_stdio([sys.executable, "-c", "import time; time.sleep(60)"], connect_timeout=0.5)
    before = _children()
    started = time.monotonic()
    with pytest.raises(ToolSourceError, match="no answer in time"):
        await source.list_tools()
    assert time.monotonic() - started < 5
    await _wait_until(lambda: _children() <= before)


async def test_a_source_opened_in_one_task_closes_in_another(anyio_backend: str) -> None:
    """Opened by a task that has ended, closed by another: no cancel-scope error (asyncio and trio)."""
    source = memory_source(weather_server())
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(source.list_tools)
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(source.aclose)
    assert source._connection is None


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_runs_use_mcp_tools_under_trio(anyio_backend: str) -> None:
    """A run under trio calls an MCP server's tool."""
    call = function_call("forecast", {"city": "Rome"})
    agent, _ = scripted_agent(
        [response(call), response(message("ok"))], tools=[memory_source(weather_server())]
    )
    async with agent:
        record = (await agent.run("go")).tool_calls[0]
    assert record.output == "Rome: sunny for 1 day(s)"


async def test_an_agent_leaves_open_a_source_held_by_the_caller() -> None:
    """``async with source:`` outlives the agents using it; an agent closes only what it opened."""
    source = memory_source(weather_server())
    async with source:
        agent, _ = scripted_agent([], tools=[source])
        async with agent:
            pass
        assert source._connection is not None
        assert source._connection.alive
    assert source._connection is None


def test_run_sync_opens_and_closes_the_source_on_its_own_loop() -> None:
    """``run_sync`` twice: each call connects on its own event loop and closes before it returns."""
    source = memory_source(weather_server())
    replies = [response(function_call("forecast", {"city": "Kyiv"})), response(message("ok"))] * 2
    agent, _ = scripted_agent(replies, tools=[source])
    outputs = [agent.run_sync("go").tool_calls[0].output for _ in range(2)]
    assert outputs == ["Kyiv: sunny for 1 day(s)"] * 2
    assert source._connection is None


def test_registries_keep_sources_and_merge_them() -> None:
    """A registry holds sources beside tools; merging keeps both, once each."""
    source = memory_source(weather_server())
    registry = ToolRegistry([source]) | ToolRegistry([source])
    assert (registry.sources, len(registry), "memory" in repr(registry)) == ([source], 0, True)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: mcp_stdio(""), "needs a command"),
        (lambda: mcp_stdio("server", prefix="bad prefix"), "prefix"),
        (lambda: mcp_stdio("server", connect_timeout=0), "connect_timeout"),
        (lambda: mcp_http("ftp://user:pw@host/mcp"), "ftp://host/mcp"),
    ],
)
def test_impossible_settings_are_usage_errors(make: Any, message: str) -> None:
    """Settings no connection could work with are refused when the source is made."""
    with pytest.raises(UsageError, match=message) as caught:
        make()
    assert "pw" not in str(caught.value)


async def test_mcp_http_sends_its_headers_over_a_real_socket() -> None:
    """Over streamable HTTP on 127.0.0.1: tools listed and called, every request with the headers."""
    seen: list[dict[bytes, bytes]] = []

    def recording_app() -> Any:
        app = weather_server().streamable_http_app()  # made in the server's thread, on its loop

        async def recording(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "http":
                seen.append(dict(scope["headers"]))
            await app(scope, receive, send)

        return recording

    with _served(recording_app) as url:
        source = mcp_http(url, headers={"Authorization": "Bearer sk-mcp-secret"}, prefix="wx")
        call = function_call("wx_forecast", {"city": "Lima"})
        agent, _ = scripted_agent([response(call), response(message("ok"))], tools=[source])
        async with agent:
            record = (await agent.run("go")).tool_calls[0]
        assert "sk-mcp-secret" not in repr(source)
    assert record.output == "Lima: sunny for 1 day(s)"
    assert seen
    assert all(headers.get(b"authorization") == b"Bearer sk-mcp-secret" for headers in seen)


@contextlib.contextmanager
def _served(app_factory: Any) -> Iterator[str]:
    """The app ``app_factory`` makes, served by uvicorn on a free 127.0.0.1 port in a thread."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app_factory, factory=True, lifespan="on", log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "the MCP HTTP server did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        server.should_exit = True
        thread.join(10)
        listener.close()


async def _wait_until(condition: Any, seconds: float = 10.0) -> None:
    with anyio.fail_after(seconds):
        while not condition():
            await anyio.sleep(0.01)


def _children() -> set[int]:
    return {child.pid for child in psutil.Process().children(recursive=True) if child.status() != "zombie"}


def test_children_helper_sees_a_child() -> None:
    """The leak check sees real child processes (it would otherwise pass vacuously)."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert child.pid in _children()
    finally:
        child.kill()
        child.wait()


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # DBOS runs on asyncio only
async def test_a_durable_dbos_run_calls_an_mcp_servers_tool(anyio_backend: str, tmp_path: Any) -> None:
    """A DBOSAgent's run uses its agent's MCP tools like an in-process run (each call a step)."""
    from agent.durable.dbos import DBOSAgent
    from agent.localmodel import AutoPolicy, LocalModelServer

    source = memory_source(weather_server())
    with LocalModelServer(AutoPolicy()) as server:
        agent = Agent("local", tools=[source], base_url=server.base_url, api_key="local-key")
        url = f"sqlite:///{tmp_path / 'runs.sqlite'}"
        async with agent, DBOSAgent(agent, database_url=url) as durable:
            result = await durable.run("What is the forecast for Oslo?", run_id="mcp-durable")
    assert [(c.name, c.kind) for c in result.tool_calls] == [("forecast", "ok")]
    assert "sunny" in result.tool_calls[0].output


async def test_an_mcp_servers_tools_can_need_approval() -> None:
    """``needs_approval=`` on a source applies to its tools: the run pauses, resuming calls the server."""
    from agent import approve

    source = memory_source(weather_server(), needs_approval=lambda ctx, args: ctx.tool_name == "forecast")
    replies = [response(function_call("forecast", {"city": "Oslo"}, "fc-1")), response(message("ok"))]
    agent, _ = scripted_agent(replies, tools=[source])
    async with agent:
        paused = await agent.run("go")
        assert [p.call_id for p in paused.pending_approvals] == ["fc-1"]
        final = await agent.resume(paused.state, {"fc-1": approve()})
    assert final.tool_calls[0].output == "Oslo: sunny for 1 day(s)"
