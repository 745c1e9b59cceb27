"""Our tools served over MCP (``mcp_server``, ``serve_mcp``, ``agent serve-mcp``), to the official client.

The detailed behaviours run in-process (``mcp.Client(server)``, in both the 2026 direct mode and
the JSON-RPC ``legacy`` mode); a few tests start ``agent serve-mcp`` as a real process over stdio
and over streamable HTTP, and stop it by PID.
"""

from __future__ import annotations

import json
import platform
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import mcp
import mcp_types
import psutil
import pytest
from mcp.client.stdio import StdioServerParameters
from typer.testing import CliRunner

import agent.mcp
from agent import Tool, ToolContext, ToolError, ToolRegistry, tool
from agent import _cli as cli
from agent._engine import ToolRequest
from agent._events import RunEvent
from agent._execution import ExecutionSettings, ToolEnvironment, run_tool
from agent._logging import silent_logger
from agent._threads import LoopLocalLimiter
from agent.mcp import mcp_server, serve_mcp
from builtin_tools import registry as builtin
from tests._support import REPO_ROOT

BUILTIN_NAMES = ["random_generator", "system_info", "math_calculator", "current_time"]
MODES = ["auto", "legacy"]  # the 2026 per-request protocol, and JSON-RPC with the initialize handshake
STOP_TIMEOUT = 20.0


@tool
async def echo(text: str) -> str:
    """Say it back."""
    return text


@tool
def leaky() -> str:
    """Fail with a message that must not reach the client."""
    raise ValueError("secret-xyz")


@tool
async def refuses(city: str) -> str:
    """Fail on purpose, with a message for the caller."""
    raise ToolError(f"no city named {city!r}")


@tool
async def who_am_i(ctx: ToolContext[Any]) -> dict[str, Any]:
    """What the tool's context says about the call."""
    return {"call_id": ctx.call_id, "run_id": ctx.run_id, "deps": ctx.deps, "tool": ctx.tool_name}


@tool
async def reporter(ctx: ToolContext[Any]) -> str:
    """Report progress three ways, then finish."""
    await ctx.report(0.5)
    await ctx.report({"progress": 2, "total": 4, "message": "half"})
    await ctx.report({"step": "last"})
    return "done"


TEST_TOOLS = ToolRegistry([echo, leaky, refuses, who_am_i, reporter])


def text_of(result: mcp_types.CallToolResult) -> str:
    """The one text block of a result."""
    [block] = result.content
    assert isinstance(block, mcp_types.TextContent)
    return block.text


async def _no_events(event: RunEvent) -> None:
    return None


async def model_reads(registry: ToolRegistry, name: str, arguments: Any) -> str:
    """What the Responses loop's tool step gives the model for this call."""
    settings = ExecutionSettings(tools=registry, tool_timeout=60.0, thread_limiter=LoopLocalLimiter(4))
    environment = ToolEnvironment(settings, None, _no_events, silent_logger(), "run")
    outcome = await run_tool(ToolRequest(1, "call", name, json.dumps(arguments)), environment)
    return outcome.output


def blocking_tool(started: anyio.Event, ended: list[str]) -> Tool[..., Any]:
    """A tool that waits forever, noting in ``ended`` when it is cancelled."""

    @tool
    async def block() -> str:
        """Wait for an event that never comes."""
        started.set()
        try:
            await anyio.Event().wait()
        except anyio.get_cancelled_exc_class():
            ended.append("cancelled")
            raise
        return "never"

    return block


# --- in-process: listing -----------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("mode", MODES)
async def test_lists_each_tool_with_the_schema_the_responses_loop_sends(mode: str) -> None:
    """tools/list gives every tool's name, description and wire ``parameters`` schema, in order."""
    async with mcp.Client(mcp_server(builtin), mode=mode) as client:
        listed = (await client.list_tools()).tools
    expected = [(t["name"], t["description"], t["parameters"]) for t in builtin.wire()]
    assert expected == [(t.name, t.description, t.input_schema) for t in listed]


@pytest.mark.asyncio
async def test_a_list_of_tools_is_served_like_a_registry() -> None:
    """``mcp_server`` takes tools and plain functions as well as a registry."""

    def double(x: int) -> int:
        """Twice x."""
        return 2 * x

    async with mcp.Client(mcp_server([echo, double])) as client:
        assert [t.name for t in (await client.list_tools()).tools] == ["echo", "double"]
        assert text_of(await client.call_tool("double", {"x": 7})) == "14"


# --- in-process: results -----------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("mode", MODES)
async def test_a_json_object_output_is_text_and_structured_content(mode: str) -> None:
    """An ``ok`` output is the text the model reads; a JSON object is also ``structuredContent``."""
    async with mcp.Client(mcp_server(builtin), mode=mode) as client:
        result = await client.call_tool("math_calculator", {"a": 2, "b": 10, "operation": "power"})
    assert result.is_error is False
    assert result.structured_content is not None
    assert result.structured_content["result"] == 1024
    assert await model_reads(builtin, "math_calculator", {"a": 2, "b": 10, "operation": "power"}) == text_of(
        result
    )


@pytest.mark.asyncio
async def test_a_text_output_has_no_structured_content() -> None:
    """A string output is one text block, as it is, without ``structuredContent``."""
    async with mcp.Client(mcp_server(TEST_TOOLS)) as client:
        result = await client.call_tool("echo", {"text": '{"looks": "like json"} but is not'})
    assert (result.is_error, result.structured_content) == (False, None)
    assert text_of(result) == '{"looks": "like json"} but is not'


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "arguments",
    [{}, {"a": "two", "b": 1, "operation": "add"}, {"a": 1, "b": 2, "operation": "modulo"}, {"extra": 1}],
    ids=["missing", "wrong-type", "not-in-enum", "unknown-field"],
)
async def test_invalid_arguments_are_an_error_with_the_models_text(arguments: dict[str, Any]) -> None:
    """Bad arguments give ``isError`` and exactly the ``invalid_arguments`` text the model would read."""
    async with mcp.Client(mcp_server(builtin), mode="legacy") as client:
        result = await client.call_tool("math_calculator", arguments)
    assert result.is_error is True
    assert await model_reads(builtin, "math_calculator", arguments) == text_of(result)
    assert json.loads(text_of(result))["error"]["type"] == "invalid_arguments"


@pytest.mark.asyncio
@pytest.mark.parametrize("mode", MODES)
async def test_a_plain_exception_shows_only_its_type(mode: str) -> None:
    """A tool's exception is an error result naming its type; its message (a possible secret) stays out."""
    async with mcp.Client(mcp_server(TEST_TOOLS), mode=mode) as client:
        result = await client.call_tool("leaky", {})
    assert result.is_error is True
    assert "ValueError" in text_of(result)
    assert "secret-xyz" not in result.model_dump_json()


@pytest.mark.asyncio
async def test_expose_tool_exceptions_shows_the_message() -> None:
    """With ``expose_tool_exceptions=True`` the exception's message is shown too."""
    async with mcp.Client(mcp_server(TEST_TOOLS, expose_tool_exceptions=True)) as client:
        result = await client.call_tool("leaky", {})
    assert "ValueError: secret-xyz" in text_of(result)


@pytest.mark.asyncio
async def test_a_tool_error_message_is_shown() -> None:
    """A ``ToolError`` is an error result carrying its message."""
    async with mcp.Client(mcp_server(TEST_TOOLS)) as client:
        result = await client.call_tool("refuses", {"city": "Pariss"})
    expected = {"error": {"type": "tool_error", "message": "no city named 'Pariss'"}}
    assert (True, expected) == (result.is_error, json.loads(text_of(result)))


@pytest.mark.asyncio
async def test_a_call_past_its_timeout_is_a_timeout_error() -> None:
    """A call that outlives ``tool_timeout`` ends as a ``timeout`` error result; the tool is cancelled."""
    started, ended = anyio.Event(), list[str]()
    server = mcp_server([blocking_tool(started, ended)], tool_timeout=0.05)
    async with mcp.Client(server) as client:
        result = await client.call_tool("block", {})
    expected = {"type": "timeout", "message": "tool 'block' did not finish within 0.05 seconds"}
    assert (True, expected, ["cancelled"]) == (result.is_error, json.loads(text_of(result))["error"], ended)


@pytest.mark.asyncio
@pytest.mark.parametrize("mode", MODES)
async def test_an_unknown_tool_is_an_error_result(mode: str) -> None:
    """Calling a name that is not served is an ``unknown_tool`` error result, and the server goes on."""
    async with mcp.Client(mcp_server(builtin), mode=mode) as client:
        result = await client.call_tool("rm_rf", {})
        assert (result.is_error, json.loads(text_of(result))["error"]["type"]) == (True, "unknown_tool")
        assert await model_reads(builtin, "rm_rf", {}) == text_of(result)
        assert (await client.call_tool("current_time", {})).is_error is False


# --- in-process: context, progress, cancellation, concurrency -----------------------------------


@pytest.mark.asyncio
async def test_the_tool_context_has_the_request_id_and_no_deps() -> None:
    """A tool's context has the MCP request id as ``call_id``, a run id of its own and ``deps=None``."""
    async with mcp.Client(mcp_server(TEST_TOOLS), mode="legacy") as client:
        first = json.loads(text_of(await client.call_tool("who_am_i", {})))
        second = json.loads(text_of(await client.call_tool("who_am_i", {})))
    assert (first["deps"], first["tool"]) == (None, "who_am_i")
    assert first["call_id"].isdigit()
    assert int(second["call_id"]) > int(first["call_id"])
    assert first["run_id"].startswith("mcp-")
    assert first["run_id"] != second["run_id"]


@pytest.mark.asyncio
@pytest.mark.parametrize("mode", MODES)
async def test_reports_are_progress_notifications(mode: str) -> None:
    """``ctx.report`` reaches a client that asked for progress: a number, a progress mapping, anything."""
    seen: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total, message))

    async with mcp.Client(mcp_server(TEST_TOOLS), mode=mode) as client:
        result = await client.call_tool("reporter", {}, progress_callback=on_progress)
    assert text_of(result) == "done"
    assert seen == [(0.5, None, None), (2.0, 4.0, "half"), (3.0, None, '{"step":"last"}')]


@pytest.mark.asyncio
async def test_a_sync_tool_reports_progress_from_its_thread() -> None:
    """``ctx.report_from_thread`` in a sync tool reaches the client as progress too."""
    seen: list[tuple[float, float | None, str | None]] = []

    @tool
    def counts(ctx: ToolContext[Any]) -> str:
        """Report twice from a worker thread."""
        ctx.report_from_thread("one")
        ctx.report_from_thread("two")
        return "counted"

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total, message))

    async with mcp.Client(mcp_server([counts]), mode="legacy") as client:
        result = await client.call_tool("counts", {}, progress_callback=on_progress)
    assert (text_of(result), seen) == ("counted", [(1.0, None, "one"), (2.0, None, "two")])


@pytest.mark.asyncio
async def test_reports_without_a_progress_token_are_dropped() -> None:
    """A client that did not ask for progress gets none, and the tool runs as usual."""
    async with mcp.Client(mcp_server(TEST_TOOLS), mode="legacy") as client:
        assert text_of(await client.call_tool("reporter", {})) == "done"


@pytest.mark.asyncio
@pytest.mark.parametrize("mode", MODES)
async def test_a_cancelled_call_cancels_the_running_tool(mode: str) -> None:
    """Cancelling the client's call (``notifications/cancelled`` on JSON-RPC) cancels the tool."""
    started, ended = anyio.Event(), list[str]()
    async with mcp.Client(mcp_server([blocking_tool(started, ended), echo]), mode=mode) as client:
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(client.call_tool, "block", {})
                await started.wait()
                tasks.cancel_scope.cancel()
            while not ended:  # the server learns of it asynchronously on JSON-RPC
                await anyio.sleep(0.01)
        assert ended == ["cancelled"]
        assert text_of(await client.call_tool("echo", {"text": "still up"})) == "still up"


@pytest.mark.asyncio
async def test_a_cancelled_call_tells_a_sync_tool_to_stop() -> None:
    """A sync tool cannot be interrupted: a cancelled call turns its ``ctx.cancelled`` true."""
    started, stopped = threading.Event(), threading.Event()

    @tool
    def patient(ctx: ToolContext[Any]) -> str:
        """Work until told to stop."""
        started.set()
        if ctx.cancel_event.wait(STOP_TIMEOUT):
            stopped.set()
        return "stopped"

    async with mcp.Client(mcp_server([patient]), mode="legacy") as client:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(client.call_tool, "patient", {})
            await anyio.to_thread.run_sync(started.wait, STOP_TIMEOUT)
            tasks.cancel_scope.cancel()
        assert await anyio.to_thread.run_sync(stopped.wait, STOP_TIMEOUT)


@pytest.mark.asyncio
async def test_max_concurrency_bounds_the_calls_running_at_once() -> None:
    """With ``max_concurrency=2`` no more than two calls run at once, the others wait their turn."""
    running, peak = 0, 0

    @tool
    async def busy() -> str:
        """Hold a slot for a moment."""
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await anyio.sleep(0.02)
        running -= 1
        return "ok"

    async with (
        mcp.Client(mcp_server([busy], max_concurrency=2)) as client,
        anyio.create_task_group() as tasks,
    ):
        for _ in range(6):
            tasks.start_soon(client.call_tool, "busy", {})
    assert peak == 2


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_the_server_runs_under_trio(anyio_backend: str) -> None:
    """Under trio too: an async tool's result, a sync tool's error, and a cancelled call's tool cancelled."""
    started, ended = anyio.Event(), list[str]()
    tools = ToolRegistry([TEST_TOOLS, blocking_tool(started, ended)])
    async with mcp.Client(mcp_server(tools), mode="legacy") as client:
        assert text_of(await client.call_tool("echo", {"text": "trio"})) == "trio"
        assert "ValueError" in text_of(await client.call_tool("leaky", {}))
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(client.call_tool, "block", {})
                await started.wait()
                tasks.cancel_scope.cancel()
            while not ended:
                await anyio.sleep(0.01)
    assert ended == ["cancelled"]


def test_bad_limits_are_refused() -> None:
    """``max_concurrency`` and ``max_threads`` must be at least 1."""
    with pytest.raises(agent.UsageError):
        mcp_server(builtin, max_concurrency=0)


def test_the_package_exports_the_server_names() -> None:
    """``agent.mcp`` exports ``mcp_server`` and ``serve_mcp``."""
    assert {"mcp_server", "serve_mcp"} <= set(agent.mcp.__all__)


# --- serve_mcp in this process ------------------------------------------------------------------


@asynccontextmanager
async def serving_http(tools: ToolRegistry) -> AsyncIterator[str]:
    """``serve_mcp`` over HTTP on a free port in this process, its URL yielded; cancelled at the end."""
    ready: list[str] = []
    announced = anyio.Event()

    def on_ready(url: str) -> None:
        ready.append(url)
        announced.set()

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(lambda: serve_mcp(tools, transport="http", port=0, on_ready=on_ready))
            await announced.wait()
            yield ready[0]
            tasks.cancel_scope.cancel()


@pytest.mark.asyncio
async def test_serve_mcp_over_http_serves_until_cancelled() -> None:
    """``serve_mcp(transport="http", port=0)`` announces its URL, serves, frees the port when cancelled."""
    async with serving_http(TEST_TOOLS) as url, mcp.Client(url, mode="legacy") as client:
        assert text_of(await client.call_tool("echo", {"text": "hi"})) == "hi"
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass


@pytest.mark.asyncio
async def test_the_run_id_over_http_is_the_mcp_session_id() -> None:
    """With an MCP session (streamable HTTP, handshake era) every call of the client has its id as run id."""
    async with serving_http(TEST_TOOLS) as url, mcp.Client(url, mode="legacy") as client:
        first = json.loads(text_of(await client.call_tool("who_am_i", {})))
        second = json.loads(text_of(await client.call_tool("who_am_i", {})))
    assert first["run_id"] == second["run_id"]
    assert not first["run_id"].startswith("mcp-")


@pytest.mark.asyncio
async def test_serve_mcp_refuses_an_unknown_transport() -> None:
    """A transport other than stdio or http is a ``UsageError``."""
    transport: Any = "websocket"  # the mistake under test, past the type checker
    with pytest.raises(agent.UsageError, match="transport"):
        await serve_mcp(builtin, transport=transport)


@pytest.mark.asyncio
async def test_serve_mcp_on_a_taken_port_raises_before_serving() -> None:
    """A port already in use raises ``OSError`` at once."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(OSError, match="in use"):
            await serve_mcp(builtin, transport="http", port=taken.getsockname()[1])


# --- agent serve-mcp: the command line ----------------------------------------------------------


def test_serve_mcp_without_the_mcp_extra_is_one_line_and_exit_2(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the ``mcp`` package the command says which extra to install, in one line, exit 2."""
    for name in ("agent.mcp", "agent.mcp._server"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    for name in [n for n in sys.modules if n == "mcp" or n.startswith("mcp.")]:
        monkeypatch.setitem(sys.modules, name, None)  # what an import then finds: nothing
    result = CliRunner().invoke(cli.app, ["serve-mcp"])
    assert result.exit_code == 2, result.output
    assert (result.stderr.strip().splitlines()) == [
        "error: serve-mcp needs the mcp extra (mcp is missing): pip install 'agent-runtime[mcp]'"
    ]


@pytest.mark.parametrize(
    ("args", "mentions"),
    [(["--transport", "ws"], "--transport"), (["--tools", "nowhere:tools"], "bad --tools target")],
)
def test_serve_mcp_bad_options_are_one_line_and_exit_2(args: list[str], mentions: str) -> None:
    """A bad transport or tools target is one ``error:`` line and exit code 2."""
    result = CliRunner().invoke(cli.app, ["serve-mcp", *args])
    assert result.exit_code == 2, result.output
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error:")
    assert mentions in line


def test_serve_mcp_on_a_taken_port_is_one_line_and_exit_2() -> None:
    """``agent serve-mcp --transport http`` on a port in use says so in one line, exit 2."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(cli.app, ["serve-mcp", "--transport", "http", "--port", str(port)])
    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == f"error: cannot serve on 127.0.0.1 port {port}: Address already in use"


def serve_mcp_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "agent", "serve-mcp", *args]


@contextmanager
def server_process(args: list[str], **popen: Any) -> Iterator[subprocess.Popen[bytes]]:
    """``agent serve-mcp`` as a real process; killed by PID at the end if still running, and reaped."""
    with subprocess.Popen(args, cwd=REPO_ROOT, **popen) as process:  # closes its pipes at the end
        try:
            yield process
        finally:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=STOP_TIMEOUT)
    assert not psutil.pid_exists(process.pid)


def wait_for_line(log: Path, needle: str, process: subprocess.Popen[bytes]) -> str:
    """Poll the server's stderr file for the line holding ``needle``; fail if it exits or time runs out."""
    deadline = time.monotonic() + STOP_TIMEOUT
    while time.monotonic() < deadline:
        for line in log.read_text().splitlines():
            if needle in line:
                return line
        if process.poll() is not None:
            pytest.fail(f"the server exited with {process.returncode}: {log.read_text()}")
        time.sleep(0.05)
    pytest.fail(f"no {needle!r} line within {STOP_TIMEOUT} s: {log.read_text()}")


async def check_builtin_tools(client: mcp.Client) -> None:
    """The four builtin tools are listed with their wire schemas, and each call returns real values."""
    listed = (await client.list_tools()).tools
    assert [t.name for t in listed] == BUILTIN_NAMES
    assert {t.name: t.wire()["parameters"] for t in builtin} == {t.name: t.input_schema for t in listed}
    power = await client.call_tool("math_calculator", {"a": 2, "b": 10, "operation": "power"})
    assert json.loads(text_of(power))["result"] == 1024
    numbers = await client.call_tool("random_generator", {"min": 5, "max": 5, "count": 3})
    assert json.loads(text_of(numbers))["numbers"] == [5, 5, 5]
    system = json.loads(text_of(await client.call_tool("system_info", {})))
    assert (platform.system(), platform.python_version()) == (system["os"], system["python_version"])
    now = json.loads(text_of(await client.call_tool("current_time", {"timezone": "UTC"})))
    assert abs(now["unix_timestamp"] - time.time()) < 60


def test_official_client_over_stdio_lists_and_calls_the_builtin_tools() -> None:
    """``mcp.Client`` starting ``agent serve-mcp`` over stdio: the four tools, each called; then it ends."""
    pids: list[int] = []

    async def check() -> None:
        parameters = StdioServerParameters(
            command=sys.executable, args=serve_mcp_command()[1:], cwd=REPO_ROOT
        )
        with anyio.fail_after(STOP_TIMEOUT):
            async with mcp.Client(parameters) as client:
                children = psutil.Process().children()
                pids.extend(c.pid for c in children if "serve-mcp" in c.cmdline())
                await check_builtin_tools(client)

    anyio.run(check)
    [pid] = pids
    with suppress(psutil.NoSuchProcess):
        psutil.Process(pid).wait(timeout=STOP_TIMEOUT)
    assert not psutil.pid_exists(pid)


def test_official_client_over_http_lists_and_calls_the_builtin_tools(tmp_path: Path) -> None:
    """``agent serve-mcp --transport http``: a URL line on stderr, the four tools called, SIGTERM ends it."""
    log = tmp_path / "stderr.txt"
    with (
        log.open("wb") as stderr,
        server_process(
            serve_mcp_command("--transport", "http", "--port", "0"), stdout=subprocess.PIPE, stderr=stderr
        ) as process,
    ):
        url = wait_for_line(log, "MCP server on http://127.0.0.1:", process).split()[3]

        async def check() -> None:
            with anyio.fail_after(STOP_TIMEOUT):
                async with mcp.Client(url) as client:
                    await check_builtin_tools(client)

        anyio.run(check)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=STOP_TIMEOUT) == 0
        assert process.stdout is not None
        assert process.stdout.read() == b""
    assert [
        f"MCP server on {url} - Ctrl+C to stop",
        "MCP server stopped (SIGTERM)",
    ] == log.read_text().splitlines()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_stdio_server_ends_on_a_signal_while_stdin_stays_open(signum: signal.Signals) -> None:
    """Ctrl-C or SIGTERM ends ``agent serve-mcp`` over stdio cleanly (exit 0) though its client is silent."""
    initialize = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "t", "version": "0"},
        },
    }
    pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    with server_process(serve_mcp_command(), **pipes) as process:
        assert process.stdin is not None
        assert process.stdout is not None
        assert process.stderr is not None
        process.stdin.write(json.dumps(initialize).encode() + b"\n")
        process.stdin.flush()
        assert json.loads(process.stdout.readline())["id"] == 1  # it serves: its signal handler is set
        process.send_signal(signum)
        assert process.wait(timeout=STOP_TIMEOUT) == 0
        assert f"MCP server stopped ({signum.name})" == process.stderr.read().decode().strip()


def test_the_example_serves_its_own_tool_over_stdio() -> None:
    """``examples/mcp_serve.py`` serves ``word_count`` next to the builtin tools."""

    async def check() -> list[str]:
        parameters = StdioServerParameters(
            command=sys.executable, args=["examples/mcp_serve.py"], cwd=REPO_ROOT
        )
        with anyio.fail_after(STOP_TIMEOUT):
            async with mcp.Client(parameters) as client:
                assert text_of(await client.call_tool("word_count", {"text": "one two three"})) == "3"
                return [t.name for t in (await client.list_tools()).tools]

    assert ["word_count", *BUILTIN_NAMES] == anyio.run(check)
