"""Issue 10's acceptance for the MCP client: real MCP server processes (stdio and streamable HTTP)
as tool sources of agents running on the local model server.

The server is `tests/mcp_fixture_server.py`; `AutoPolicy` calls the tools a prompt names, with the
numbers and quoted strings it holds (`slow with seconds 60 and tag "k"` calls `slow(60, "k")`).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

import anyio
import pytest
from structlog.testing import LogCapture

from agent import (
    Agent,
    Hooks,
    RunResult,
    ToolCallFinished,
    ToolCallRecord,
    ToolCallStarted,
    ToolDefinitionError,
    ToolSourceError,
    tool,
)
from agent.localmodel import AutoPolicy, LocalModelServer, ScriptPolicy
from agent.mcp import MCPTools, mcp_http, mcp_stdio
from tests._mcp_processes import (
    HTTPServerProcess,
    descendants_mentioning,
    eventually,
    fixture_processes,
    free_port,
    http_server,
    start_http_server,
    stdio_command,
)
from tests._support import FAST_RETRY, capturing_logger
from tests.mcp_fixture_server import PNG_BASE64

Transport = Literal["stdio", "http", "stdio-2025", "http-2025"]
TRANSPORTS: list[Transport] = ["stdio", "http"]
"""The fixture server speaking the 2026-07-28 protocol, which the official client picks with it."""
ALL_TRANSPORTS: list[Transport] = [*TRANSPORTS, "stdio-2025", "http-2025"]
"""And speaking only the 2025 (handshake-era) protocol, as most servers in use do."""
BACKENDS = ["asyncio", "trio"]
EVERY_WAY = [*(("asyncio", t) for t in ALL_TRANSPORTS), *(("trio", t) for t in TRANSPORTS)]
"""(anyio_backend, transport): every transport under asyncio, the 2026 ones under trio too."""
SOAK_RUNS = int(os.environ.get("AGENT_SOAK_RUNS", "500"))


def slow_2025(values: list[Any]) -> list[Any]:
    """``values`` with the 2025-protocol cases under the slow marker (the default suite keeps them
    for the basic run only; `.ci/run` runs the slow ones too)."""
    return [
        pytest.param(*(v if isinstance(v, tuple) else (v,)), marks=pytest.mark.slow)
        if "2025" in str(v)
        else v
        for v in values
    ]


PROMPTLY = 5.0
"""Seconds within which a call to a killed server must fail (measured: ~0.03 s after the kill);
well under the 30 s tool timeout of those tests, so a hang until the timeout cannot pass."""


@pytest.fixture
def anyio_backend() -> str:
    """asyncio; the tests about tasks and cancel scopes parametrize trio as well."""
    return "asyncio"


@pytest.fixture(scope="module")
def model() -> Iterator[LocalModelServer]:
    with LocalModelServer(AutoPolicy(), max_requests=100_000) as server:
        yield server


@pytest.fixture(scope="module")
def journal(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the fixture servers' `slow` leaves its traces (tags are unique per test)."""
    return tmp_path_factory.mktemp("journal")


@pytest.fixture(scope="module")
def shared_http(journal: Path) -> Iterator[HTTPServerProcess]:
    """One HTTP fixture server for the tests that neither kill nor change it."""
    with http_server(journal) as server:
        yield server


@pytest.fixture(scope="module")
def shared_http_2025(journal: Path) -> Iterator[HTTPServerProcess]:
    """The same, speaking only the 2025 protocol."""
    with http_server(journal, legacy=True) as server:
        yield server


@dataclass
class Servers:
    """Makes sources of the fixture server: a new process over stdio, or a shared HTTP one."""

    journal: Path
    http: HTTPServerProcess
    http_2025: HTTPServerProcess

    def source(self, transport: Transport, **options: Any) -> MCPTools:
        legacy = transport.endswith("-2025")
        if transport.startswith("stdio"):
            return mcp_stdio(stdio_command(self.journal, legacy=legacy), **options)
        return mcp_http((self.http_2025 if legacy else self.http).url, **options)

    def stdio_processes(self) -> list[int]:
        """The pids of live fixture servers but the shared HTTP ones (stdio servers, that is)."""
        shared = {self.http.pid, self.http_2025.pid}
        return [p.pid for p in fixture_processes() if p.pid not in shared]


@pytest.fixture
def servers(journal: Path, shared_http: HTTPServerProcess, shared_http_2025: HTTPServerProcess) -> Servers:
    return Servers(journal, shared_http, shared_http_2025)


def agent_for(model: LocalModelServer, *tools: Any, **options: Any) -> Agent:
    """An agent on the local model whose tools are `tools` (MCP sources among them)."""
    options.setdefault("retry", FAST_RETRY)
    return Agent("local", tools=list(tools), base_url=model.base_url, api_key="x", **options)


def only_call(result: RunResult) -> ToolCallRecord:
    (record,) = result.tool_calls
    return record


def tag() -> str:
    """A fresh journal tag (letters first: the local model must read it as a string, not a number)."""
    return f"t{uuid.uuid4().hex[:8]}"


async def server_pid(agent: Agent) -> int:
    """The pid of the process serving the agent's `pid` tool (a run of its own)."""
    record = only_call(await agent.run("pid"))
    assert record.kind == "ok", record
    return int(record.output)


async def kill_when_started(start_file: Path, pid: int) -> None:
    """kill -9 `pid` once `slow` has written its start file."""
    await eventually(start_file.exists, timeout=20, what=f"{start_file.name} written")
    os.kill(pid, signal.SIGKILL)


# 1. A full run whose tools come from an MCP server process.


@pytest.mark.anyio
@pytest.mark.parametrize(("anyio_backend", "transport"), EVERY_WAY)
async def test_a_run_uses_the_tools_of_an_mcp_server(
    anyio_backend: str, transport: Transport, servers: Servers, model: LocalModelServer
) -> None:
    """A run on the local model calls the server's tool; the record is ok, the answer quotes it."""
    async with agent_for(model, servers.source(transport)) as agent:
        result = await agent.run('Please echo "hello from mcp"')
    assert [(c.name, c.kind, c.output) for c in result.tool_calls] == [("echo", "ok", "hello from mcp")]
    assert "echo: hello from mcp" in result.output


@pytest.mark.anyio
async def test_the_model_is_offered_the_servers_tools_with_their_schemas(
    servers: Servers, model: LocalModelServer
) -> None:
    """The request lists the server's tools, each with the server's own input schema."""
    async with agent_for(model, servers.source("http", prefix="fx")) as agent:
        await agent.run('echo "x"')
    offered = {entry["name"]: entry for entry in model.requests[-1]["tools"]}
    assert {"fx_echo", "fx_add", "fx_slow", "fx_pid"} <= set(offered)
    assert offered["fx_add"]["parameters"]["properties"].keys() == {"a", "b"}
    assert offered["fx_add"]["parameters"]["required"] == ["a", "b"]


IMPORTED_UNDER_STRINGIO = """
import io, sys
sys.stderr = io.StringIO()  # as in typer's CliRunner or a notebook: no file descriptor
from agent.mcp import mcp_stdio
sys.stderr = sys.__stderr__
import anyio
async def main():
    async with mcp_stdio(sys.argv[1:]) as source:
        print(len(await source.list_tools()))
anyio.run(main)
"""


def test_a_stdio_server_starts_when_agent_mcp_was_imported_under_an_in_memory_stderr() -> None:
    """`agent.mcp` first imported while `sys.stderr` had no file descriptor: stdio servers still start."""
    done = subprocess.run(
        [sys.executable, "-c", IMPORTED_UNDER_STRINGIO, *stdio_command()],
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) >= 9


@pytest.mark.anyio
async def test_mcp_calls_reach_the_tool_hooks(servers: Servers, model: LocalModelServer) -> None:
    """An MCP tool's call goes through the normal path: on_tool_start and on_tool_end see it."""
    seen: list[Any] = []
    hooks = Hooks(on_tool_start=seen.append, on_tool_end=seen.append)
    async with agent_for(model, servers.source("http", prefix="fx")) as agent:
        await agent.run('echo "hooked"', hooks=hooks)
    started, finished = seen
    assert isinstance(started, ToolCallStarted)
    assert isinstance(finished, ToolCallFinished)
    assert (started.name, finished.record.name, finished.record.output) == ("fx_echo", "fx_echo", "hooked")


@pytest.mark.anyio
async def test_http_headers_reach_the_server(servers: Servers, model: LocalModelServer) -> None:
    """`mcp_http(url, headers=...)` sends them with the requests (the server's tool reads one back)."""
    source = mcp_http(servers.http.url, headers={"X-Token": "secret-123"})
    async with agent_for(model, source) as agent:
        record = only_call(await agent.run('header "X-Token"'))
    assert (record.kind, record.output) == ("ok", "secret-123")


@pytest.mark.anyio
async def test_a_server_that_never_finishes_its_handshake_fails_at_connect_timeout(
    model: LocalModelServer, tmp_path: Path
) -> None:
    """A stdio command that never speaks MCP: ToolSourceError after connect_timeout, its process stopped."""
    marker = str(tmp_path / "silent")
    command = [sys.executable, "-c", "import time, sys; time.sleep(60)", marker]
    agent = agent_for(model, mcp_stdio(command, connect_timeout=1.0))
    started = time.monotonic()
    try:
        with pytest.raises(ToolSourceError, match="could not connect"):
            await agent.run("echo")
    finally:
        await agent.aclose()
    assert time.monotonic() - started < 10
    await eventually(
        lambda: descendants_mentioning(marker) == [],
        timeout=10,
        what="the silent server process stopped",
    )


@pytest.mark.anyio
async def test_max_concurrency_limits_calls_to_one_server(servers: Servers, model: LocalModelServer) -> None:
    """`max_concurrency=1`: two runs' calls to one server take turns (the second waits for a slot)."""
    source = servers.source("http", max_concurrency=1)
    results: list[RunResult] = []

    async def one(name: str) -> None:
        results.append(await agent.run(f'slow with seconds 1 and tag "{name}"'))

    async with agent_for(model, source) as agent, anyio.create_task_group() as group:
        group.start_soon(one, tag())
        group.start_soon(one, tag())
    durations = sorted(only_call(result).duration for result in results)
    assert durations[0] >= 0.9
    assert durations[1] >= 1.9


@pytest.mark.anyio
async def test_arguments_against_the_servers_schema_never_reach_it(servers: Servers) -> None:
    """Arguments that break the server's inputSchema: invalid_arguments, checked here, not sent."""
    name = tag()
    script = ScriptPolicy(
        [
            [{"type": "function_call", "name": "slow", "arguments": {"seconds": "soon", "tag": name}}],
            [{"type": "message", "content": "done"}],
        ]
    )
    with LocalModelServer(script) as scripted:
        async with agent_for(scripted, servers.source("http")) as agent:
            record = only_call(await agent.run("go"))
    assert record.kind == "invalid_arguments"
    assert "seconds" in record.output
    assert not (servers.journal / f"{name}.start").exists()


def test_run_sync_starts_and_stops_a_stdio_server_each_time(
    servers: Servers, model: LocalModelServer
) -> None:
    """`run_sync` (an event loop per call) twice: each starts the server, gets the result, stops it."""
    agent = agent_for(model, servers.source("stdio"))
    for text in ("first", "second"):
        record = only_call(agent.run_sync(f'echo "{text}"'))
        assert (record.kind, record.output) == ("ok", text)
        assert servers.stdio_processes() == []


# 2. A server killed mid-call.


@pytest.mark.anyio
@pytest.mark.parametrize("transport", slow_2025(["stdio", "stdio-2025"]))
async def test_stdio_server_killed_mid_call_fails_the_call_and_the_next_run_reconnects(
    transport: Transport, servers: Servers, model: LocalModelServer
) -> None:
    """kill -9 during `slow`: a prompt tool_error, the run answers, the next run has a new server."""
    name, timeout = tag(), 30.0
    async with agent_for(model, servers.source(transport), tool_timeout=timeout) as agent:
        first = await server_pid(agent)
        with anyio.fail_after(timeout):
            async with anyio.create_task_group() as group:
                group.start_soon(kill_when_started, servers.journal / f"{name}.start", first)
                result = await agent.run(f'slow with seconds 60 and tag "{name}"')
        record = only_call(result)
        assert (record.name, record.kind) == ("slow", "tool_error")
        assert record.duration < PROMPTLY
        assert "MCP server" in record.output  # the model reads why
        assert "slow:" in result.output
        assert await server_pid(agent) != first


@pytest.mark.anyio
@pytest.mark.parametrize("legacy", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["2026", "2025"])
async def test_http_server_killed_mid_call_fails_the_call_and_the_next_run_reconnects(
    legacy: bool, journal: Path, model: LocalModelServer
) -> None:
    """kill -9 of the HTTP server during `slow`: tool_error; restarted on its port, the next run uses it."""
    name, timeout = tag(), 30.0
    server = start_http_server(journal, legacy=legacy)
    try:
        async with agent_for(model, mcp_http(server.url), tool_timeout=timeout) as agent:
            first = await server_pid(agent)
            assert first == server.pid
            with anyio.fail_after(timeout):
                async with anyio.create_task_group() as group:
                    group.start_soon(kill_when_started, journal / f"{name}.start", first)
                    result = await agent.run(f'slow with seconds 60 and tag "{name}"')
            record = only_call(result)
            assert (record.name, record.kind) == ("slow", "tool_error")
            assert record.duration < PROMPTLY
            assert "MCP server" in record.output  # the model reads why
            assert "slow:" in result.output
            server.process.wait(timeout=10)
            server = server.restart()
            assert await server_pid(agent) == server.pid != first
    finally:
        server.stop()


@pytest.mark.slow
@pytest.mark.anyio
async def test_a_server_down_at_the_first_run_is_used_once_it_is_up(
    journal: Path, model: LocalModelServer
) -> None:
    """Nothing on the port: the run raises ToolSourceError, sending nothing; once up, the next run works."""
    port = free_port()
    agent = agent_for(model, mcp_http(f"http://127.0.0.1:{port}/mcp"))
    try:
        sent = len(model.requests)
        with pytest.raises(ToolSourceError, match=f"127.0.0.1:{port}"):
            await agent.run("pid")
        assert len(model.requests) == sent
        with http_server(journal, port=port) as server:
            assert await server_pid(agent) == server.pid
    finally:
        await agent.aclose()


@pytest.mark.anyio
@pytest.mark.parametrize("legacy", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["2026", "2025"])
async def test_an_http_server_restarted_between_runs_is_reconnected(
    legacy: bool, journal: Path, model: LocalModelServer
) -> None:
    """Restarted while idle (a 2025 server forgets its sessions so): by the second run calls work again."""
    server = start_http_server(journal, legacy=legacy)
    try:
        async with agent_for(model, mcp_http(server.url)) as agent:
            first = await server_pid(agent)
            server.kill()
            server = server.restart()
            records = [only_call(await agent.run("pid")) for _ in range(2)]
        assert (records[-1].kind, records[-1].output) == ("ok", str(server.pid)), records
        assert server.pid != first
    finally:
        server.stop()


@pytest.mark.anyio
@pytest.mark.parametrize("transport", slow_2025(ALL_TRANSPORTS))
async def test_every_call_in_flight_fails_when_the_server_dies(
    transport: Transport, servers: Servers, journal: Path, model: LocalModelServer
) -> None:
    """Three runs' calls in flight on one server, kill -9: all three end as tool_error, promptly."""
    names, timeout = [tag() for _ in range(3)], 30.0
    with fresh_source(transport, journal) as source:
        async with agent_for(model, source, tool_timeout=timeout) as agent:
            pid = await server_pid(agent)
            results: list[RunResult] = []

            async def one(name: str) -> None:
                results.append(await agent.run(f'slow with seconds 60 and tag "{name}"'))

            async def kill_when_all_started() -> None:
                for name in names:
                    started = journal / f"{name}.start"
                    await eventually(started.exists, timeout=20, what=f"{started.name} written")
                os.kill(pid, signal.SIGKILL)

            with anyio.fail_after(timeout):
                async with anyio.create_task_group() as group:
                    for name in names:
                        group.start_soon(one, name)
                    group.start_soon(kill_when_all_started)
    records = [only_call(result) for result in results]
    assert [r.kind for r in records] == ["tool_error"] * 3
    assert max(r.duration for r in records) < PROMPTLY


# 3. A server that never answers.


@pytest.mark.slow
@pytest.mark.anyio
async def test_a_call_longer_than_httpx_default_timeout_completes(
    servers: Servers, model: LocalModelServer
) -> None:
    """A 6 s call over HTTP (httpx's default timeout is 5 s) ends ok: no hidden hard-coded timeout."""
    name = tag()
    async with agent_for(model, servers.source("http"), tool_timeout=30.0) as agent:
        record = only_call(await agent.run(f'slow with seconds 6 and tag "{name}"'))
    assert (record.kind, record.output) == ("ok", "slept 6.0")
    assert (servers.journal / f"{name}.end").exists()


@pytest.mark.anyio
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_call_that_never_returns_times_out_at_the_tool_timeout(
    transport: Transport, servers: Servers, model: LocalModelServer
) -> None:
    """`hang` with tool_timeout=1: the call ends as a timeout after about a second, the run answers."""
    async with agent_for(model, servers.source(transport), tool_timeout=1.0) as agent:
        result = await agent.run("hang")
    record = only_call(result)
    assert (record.name, record.kind) == ("hang", "timeout")
    assert 0.9 <= record.duration < 5
    assert "hang:" in result.output


@pytest.mark.anyio
@pytest.mark.parametrize("transport", slow_2025(ALL_TRANSPORTS))
async def test_a_timed_out_call_is_cancelled_on_the_server(
    transport: Transport, servers: Servers, model: LocalModelServer
) -> None:
    """When the tool timeout ends a call, the server is told: its handler is cancelled."""
    name = tag()
    async with agent_for(model, servers.source(transport), tool_timeout=1.0) as agent:
        result = await agent.run(f'slow with seconds 60 and tag "{name}"')
        assert only_call(result).kind == "timeout"
        cancelled = servers.journal / f"{name}.cancelled"
        await eventually(cancelled.exists, timeout=10, what=f"{cancelled.name} written by the server")
    assert (servers.journal / f"{name}.start").exists()
    assert not (servers.journal / f"{name}.end").exists()


@pytest.mark.anyio
@pytest.mark.parametrize("transport", slow_2025(ALL_TRANSPORTS))
async def test_a_cancelled_run_cancels_its_call_on_the_server(
    transport: Transport, servers: Servers, model: LocalModelServer
) -> None:
    """Cancelling a run while its MCP call runs tells the server, which cancels the handler."""
    name = tag()
    async with agent_for(model, servers.source(transport)) as agent:
        async with anyio.create_task_group() as group:
            group.start_soon(agent.run, f'slow with seconds 60 and tag "{name}"')
            started = servers.journal / f"{name}.start"
            await eventually(started.exists, timeout=20, what=f"{started.name} written")
            group.cancel_scope.cancel()
        cancelled = servers.journal / f"{name}.cancelled"
        await eventually(cancelled.exists, timeout=10, what=f"{cancelled.name} written by the server")


@pytest.mark.anyio
async def test_a_source_timeout_overrides_the_agents_tool_timeout(
    servers: Servers, model: LocalModelServer
) -> None:
    """`timeout=` on the source is its tools' per-call timeout, whatever the agent's tool_timeout."""
    async with agent_for(model, servers.source("http", timeout=0.5), tool_timeout=30.0) as agent:
        record = only_call(await agent.run("hang"))
    assert record.kind == "timeout"
    assert record.duration < 5


# 4. Two servers at once, many concurrent runs.


def cancel_scope_complaints(capture: LogCapture, caplog: pytest.LogCaptureFixture) -> list[str]:
    texts = [json.dumps(entry, default=str) for entry in capture.entries]
    texts += [record.getMessage() + str(record.exc_info) for record in caplog.records]
    return [text for text in texts if "cancel scope" in text.lower()]


async def concurrent_runs(
    runs: int, era: str, servers: Servers, model: LocalModelServer, caplog: pytest.LogCaptureFixture
) -> None:
    """`runs` runs at once on one agent with a stdio and an HTTP source; all fine, nothing leaked."""
    caplog.set_level(logging.WARNING)
    logger, capture = capturing_logger()
    suffix = "-2025" if era == "2025" else ""
    stdio = servers.source(cast(Transport, f"stdio{suffix}"), prefix="a")
    http = servers.source(cast(Transport, f"http{suffix}"), prefix="b")
    agent = agent_for(model, stdio, http, logger=logger)
    results: dict[int, RunResult] = {}

    async def one(n: int) -> None:
        results[n] = await agent.run(f'echo "run {n}"')

    started = time.monotonic()
    with anyio.fail_after(60 + runs):
        async with anyio.create_task_group() as group:
            for n in range(runs):
                group.start_soon(one, n)
        await agent.aclose()
    print(f"{runs} runs on two MCP servers: {time.monotonic() - started:.1f} s")
    for n in range(runs):
        calls = sorted((c.name, c.kind, c.output) for c in results[n].tool_calls)
        assert calls == [("a_echo", "ok", f"run {n}"), ("b_echo", "ok", f"run {n}")]
    assert cancel_scope_complaints(capture, caplog) == []
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    await eventually(
        lambda: servers.stdio_processes() == [],
        timeout=10,
        what="no fixture server process left but the shared HTTP one",
    )


@pytest.mark.anyio
@pytest.mark.parametrize("transport", slow_2025(["stdio", "stdio-2025"]))
async def test_concurrent_first_runs_share_one_session(
    transport: Transport, servers: Servers, model: LocalModelServer
) -> None:
    """Ten runs starting at once on a source not yet connected: one server process serves them all."""
    pids: list[str] = []

    async def one() -> None:
        pids.append(only_call(await agent.run("pid")).output)

    agent = agent_for(model, servers.source(transport))  # no `async with`: the runs connect it
    try:
        async with anyio.create_task_group() as group:
            for _ in range(10):
                group.start_soon(one)
    finally:
        await agent.aclose()
    assert len(pids) == 10
    assert len(set(pids)) == 1


CONCURRENT_WAYS = [("asyncio", "2026"), ("trio", "2026"), ("asyncio", "2025")]
"""(anyio_backend, protocol era) of the concurrent-runs tests."""


@pytest.mark.anyio
@pytest.mark.parametrize(("anyio_backend", "era"), slow_2025(CONCURRENT_WAYS))
async def test_two_servers_at_once_serve_concurrent_runs(
    anyio_backend: str, era: str, servers: Servers, model: LocalModelServer, caplog: pytest.LogCaptureFixture
) -> None:
    """100 runs at once over a stdio and an HTTP server: all ok, no cancel-scope error, no leak."""
    await concurrent_runs(100, era, servers, model, caplog)


@pytest.mark.slow
@pytest.mark.anyio
@pytest.mark.parametrize(("anyio_backend", "era"), CONCURRENT_WAYS)
async def test_two_servers_at_once_serve_many_concurrent_runs(
    anyio_backend: str, era: str, servers: Servers, model: LocalModelServer, caplog: pytest.LogCaptureFixture
) -> None:
    """AGENT_SOAK_RUNS (500) runs at once over a stdio and an HTTP server: all ok, no leak."""
    await concurrent_runs(SOAK_RUNS, era, servers, model, caplog)


# 5. Opened in one task, closed in another, under asyncio and trio.


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_sources_entered_in_one_task_are_closed_in_another(
    anyio_backend: str, servers: Servers, model: LocalModelServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Entered (`__aenter__`) in a task that then ends, used, exited from two other tasks: no error."""
    caplog.set_level(logging.WARNING)
    sources = [servers.source("stdio", prefix="a"), servers.source("http", prefix="b")]

    async def enter(source: MCPTools) -> None:
        await source.__aenter__()

    async with anyio.create_task_group() as group:
        for source in sources:
            group.start_soon(enter, source)
    agent = agent_for(model, *sources)
    result = await agent.run('echo "across tasks"')
    assert sorted(c.kind for c in result.tool_calls) == ["ok", "ok"]

    async def leave(source: MCPTools) -> None:
        await source.__aexit__(None, None, None)

    async with anyio.create_task_group() as group:
        for source in sources:
            group.start_soon(leave, source)
    await agent.aclose()
    assert [r.getMessage() for r in caplog.records if "cancel scope" in r.getMessage().lower()] == []
    await eventually(
        lambda: servers.stdio_processes() == [],
        timeout=10,
        what="the stdio server process ended",
    )


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_a_lazily_connected_agent_is_closed_from_another_task(
    anyio_backend: str, servers: Servers, model: LocalModelServer
) -> None:
    """Sources connected by a run in one task are closed by `aclose()` in another task."""
    agent = agent_for(model, servers.source("stdio", prefix="a"), servers.source("http", prefix="b"))
    results: list[RunResult] = []

    async def run() -> None:
        results.append(await agent.run('echo "lazy"'))

    async with anyio.create_task_group() as group:
        group.start_soon(run)
    async with anyio.create_task_group() as group:
        group.start_soon(agent.aclose)
    assert sorted(c.kind for c in results[0].tool_calls) == ["ok", "ok"]
    await eventually(
        lambda: servers.stdio_processes() == [],
        timeout=10,
        what="the stdio server process ended",
    )


# 6. tools/list_changed.


@contextmanager
def fresh_source(transport: Transport, journal: Path) -> Iterator[MCPTools]:
    """A source on a server of its own (a new process over stdio, or a new HTTP server)."""
    legacy = transport.endswith("-2025")
    if transport.startswith("stdio"):
        yield mcp_stdio(stdio_command(journal, legacy=legacy))
        return
    with http_server(journal, legacy=legacy) as server:
        yield mcp_http(server.url)


@pytest.mark.anyio
@pytest.mark.parametrize(("anyio_backend", "transport"), slow_2025(EVERY_WAY))
async def test_a_tool_added_by_the_server_is_offered_in_the_next_run(
    anyio_backend: str, transport: Transport, journal: Path, model: LocalModelServer
) -> None:
    """After `add_tool` (which sends tools/list_changed) the next run is offered `late` and calls it."""
    with fresh_source(transport, journal) as source:
        async with agent_for(model, source) as agent:
            assert "late" not in [t.name for t in await source.list_tools()]
            added = await agent.run("add_tool")  # names `add` too: "add" is a word of its name
            assert {(c.name, c.kind) for c in added.tool_calls} == {("add", "ok"), ("add_tool", "ok")}
            result = await agent.run("late with x 41")
    assert [(c.name, c.kind, c.output) for c in result.tool_calls] == [("late", "ok", "42")]
    assert "late" in [entry["name"] for entry in model.requests[-1]["tools"]]


# 7. Results (the conversion does not depend on the transport: over HTTP, the faster to start).


async def call_one(model: LocalModelServer, source: MCPTools, name: str, prompt: str) -> ToolCallRecord:
    """The record of one run that may call only `name` (the tool choice says so)."""
    choice = {"type": "function", "name": name}
    async with agent_for(model, source, tool_choice=choice) as agent:
        return only_call(await agent.run(prompt))


@pytest.mark.anyio
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_text_content_is_the_output(
    transport: Transport, servers: Servers, model: LocalModelServer
) -> None:
    """A result of text blocks only is their text."""
    record = await call_one(model, servers.source(transport), "echo", 'echo "plain text"')
    assert (record.kind, record.output) == ("ok", "plain text")


@pytest.mark.anyio
async def test_structured_content_beside_text_gives_the_text(
    servers: Servers, model: LocalModelServer
) -> None:
    """A result with text and structuredContent is its text (MCP's text is for the model)."""
    record = await call_one(model, servers.source("http"), "add", "add 2 and 3")
    assert (record.kind, record.output) == ("ok", "2 + 3 = 5")


@pytest.mark.anyio
async def test_prefer_structured_gives_the_structured_content_as_json(
    servers: Servers, model: LocalModelServer
) -> None:
    """`prefer_structured=True`: the same result is its structuredContent, as JSON."""
    source = servers.source("http", prefer_structured=True)
    record = await call_one(model, source, "add", "add 2 and 3")
    assert (record.kind, json.loads(record.output)) == ("ok", {"sum": 5})


@pytest.mark.anyio
async def test_structured_content_without_text_is_the_output_as_json(
    servers: Servers, model: LocalModelServer
) -> None:
    """A result of structuredContent and no block at all is the structured content, as JSON."""
    record = await call_one(model, servers.source("http"), "point", "point")
    assert (record.kind, json.loads(record.output)) == ("ok", {"x": 1, "y": 2})


@pytest.mark.anyio
async def test_an_image_is_passed_on_as_mcp_content_json(servers: Servers, model: LocalModelServer) -> None:
    """A result holding an image is `{"content": [the MCP blocks]}`, the image's data kept."""
    record = await call_one(model, servers.source("http"), "image", "image")
    assert record.kind == "ok"
    output = json.loads(record.output)
    image, text = output["content"]
    assert {k: image[k] for k in ("type", "data", "mimeType")} == {
        "type": "image",
        "data": PNG_BASE64,
        "mimeType": "image/png",
    }
    assert {k: text[k] for k in ("type", "text")} == {"type": "text", "text": "a pixel"}
    assert "structuredContent" not in output


@pytest.mark.anyio
async def test_an_is_error_result_is_a_tool_error_with_the_servers_text(
    servers: Servers, model: LocalModelServer
) -> None:
    """isError: a tool_error whose output (what the model reads) holds the server's text."""
    record = await call_one(model, servers.source("http"), "fail", 'fail with "disk on fire"')
    assert record.kind == "tool_error"
    assert "disk on fire" in record.output


@pytest.mark.anyio
async def test_a_raising_tool_is_a_tool_error(servers: Servers, model: LocalModelServer) -> None:
    """A tool that raises on the server: a tool_error carrying the server's error text."""
    record = await call_one(model, servers.source("http"), "boom", "boom")
    assert record.kind == "tool_error"
    assert "Error executing tool boom" in record.output


# 8. Name clashes.


@pytest.mark.anyio
async def test_two_sources_with_the_same_tool_names_clash_at_run_start(
    servers: Servers, model: LocalModelServer
) -> None:
    """Two sources without prefix offer `echo` twice: ToolDefinitionError naming it, no request sent."""
    sent = len(model.requests)
    agent = agent_for(model, servers.source("http"), servers.source("http"))
    try:
        with pytest.raises(ToolDefinitionError, match="'echo'"):
            await agent.run("echo")
    finally:
        await agent.aclose()
    assert len(model.requests) == sent


@tool
def echo(text: str) -> str:
    """A local echo, clashing with the server's."""
    return text


@pytest.mark.anyio
async def test_a_source_clashing_with_a_local_tool_is_refused(
    servers: Servers, model: LocalModelServer
) -> None:
    """A local `echo` and a source's `echo`: ToolDefinitionError naming it; a prefix resolves it."""
    agent = agent_for(model, echo, servers.source("http"))
    try:
        with pytest.raises(ToolDefinitionError, match="'echo'"):
            await agent.run("echo")
    finally:
        await agent.aclose()
    async with agent_for(model, echo, servers.source("http", prefix="fs")) as agent:
        result = await agent.run('echo "both"')
    assert sorted((c.name, c.output) for c in result.tool_calls) == [("echo", "both"), ("fs_echo", "both")]


# Lifecycle details of the contract.


@pytest.mark.anyio
async def test_async_with_on_a_source_connects_now_and_closes_at_exit(servers: Servers) -> None:
    """`async with mcp_stdio(...)` starts the server at entry and stops it at exit."""
    before = {p.pid for p in fixture_processes()}
    async with servers.source("stdio", name="fixture-stdio") as source:
        assert source.name == "fixture-stdio"
        assert {p.pid for p in fixture_processes()} - before
        names = [t.name for t in await source.list_tools()]
    assert {"echo", "add", "slow", "hang", "fail", "boom", "image", "point", "pid", "add_tool"} <= set(names)
    await eventually(
        lambda: {p.pid for p in fixture_processes()} <= before, timeout=10, what="the server process ended"
    )
