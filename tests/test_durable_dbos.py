"""Durable runs on DBOS, in this process: the same results as in-process runs, stored as JSON.

Crash and multi-worker tests (real processes, kill -9) are in test_durable_crash.py.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from pydantic import BaseModel

from agent import (
    Agent,
    AuthenticationError,
    Hooks,
    RunEvent,
    RunFinished,
    RunResumed,
    RunStarted,
    ToolCallFinished,
    ToolCallStarted,
    ToolContext,
    UsageError,
    tool,
)
from agent.localmodel import AutoPolicy, LocalModelServer
from tests._support import message, response, scripted_agent

dbos = pytest.importorskip("dbos")

from agent.durable.dbos import DBOSAgent, DBOSRuns  # noqa: E402

pytestmark = pytest.mark.timeout(60)

KEYS: list[str] = []


@tool
async def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@tool
def keyed(ctx: ToolContext[None], text: str) -> str:
    """Echo the text; remember the call's idempotency key."""
    KEYS.append(ctx.idempotency_key)
    return text


@pytest.fixture
def server() -> Iterator[LocalModelServer]:
    with LocalModelServer(AutoPolicy(), api_key="local-key") as server:
        yield server


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'runs.sqlite'}"


def agent_for(server: LocalModelServer, **options: Any) -> Agent:
    options.setdefault("api_key", "local-key")
    return Agent("local", tools=[add, keyed], base_url=server.base_url, **options)


@pytest_asyncio.fixture
async def durable(server: LocalModelServer, sqlite_url: str) -> AsyncIterator[DBOSAgent]:
    async with agent_for(server) as agent, DBOSAgent(agent, database_url=sqlite_url) as durable:
        yield durable


def without_ids(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Items with the ids the local model makes up for each response left out."""
    return [{k: v for k, v in item.items() if k not in ("id", "call_id")} for item in items]


def recorder() -> tuple[Hooks, list[RunEvent]]:
    events: list[RunEvent] = []
    hooks = Hooks(
        on_run_start=events.append,
        on_run_resumed=events.append,
        on_run_end=events.append,
        on_model_response=events.append,
        on_tool_start=events.append,
        on_tool_end=events.append,
    )
    return hooks, events


@pytest.mark.asyncio
async def test_a_durable_run_gives_what_an_in_process_run_gives(
    durable: DBOSAgent, server: LocalModelServer
) -> None:
    """Output, conversation items and tool outcomes are those of Agent.run on the same model."""
    expected = await durable.agent.run("add and echo")
    result = await durable.run("add and echo", run_id="same-as-local")
    assert (result.output, result.turns) == (expected.output, expected.turns)
    assert without_ids(result.items) == without_ids(expected.items)
    assert [(c.name, c.kind, c.output) for c in result.tool_calls] == [
        (c.name, c.kind, c.output) for c in expected.tool_calls
    ]


@pytest.mark.asyncio
async def test_a_durable_run_on_postgresql(server: LocalModelServer, postgres_url: str) -> None:
    """The same run on PostgreSQL completes with the in-process output."""
    async with agent_for(server) as agent, DBOSAgent(agent, database_url=postgres_url) as durable:
        expected = await agent.run("add")
        result = await durable.run("add", run_id="on-postgres")
    assert result.output == expected.output


@pytest.mark.asyncio
async def test_a_completed_run_id_returns_its_stored_result_without_sending(
    durable: DBOSAgent, server: LocalModelServer
) -> None:
    """Running a finished run id again returns its result: no request, no tool, input unused."""
    first = await durable.run("add", run_id="order-42")
    requests = len(server.requests)
    again = await durable.run("something else entirely", run_id="order-42")
    assert (again.output, again.items) == (first.output, first.items)
    assert len(server.requests) == requests


@pytest.mark.asyncio
async def test_events_of_a_durable_run_are_those_of_an_in_process_run(durable: DBOSAgent) -> None:
    """A run that never crashed sends RunStarted, each call's start and end, and RunFinished."""
    hooks, events = recorder()
    await durable.run("add and keyed", run_id="events", hooks=hooks)
    kinds = [type(event).__name__ for event in events]
    assert kinds[0] == "RunStarted"
    assert kinds[-1] == "RunFinished"
    assert kinds.count("ToolCallStarted") == kinds.count("ToolCallFinished") == 2
    assert "RunResumed" not in kinds


@pytest.mark.asyncio
async def test_tools_get_the_idempotency_key_of_run_turn_and_call(durable: DBOSAgent) -> None:
    """ctx.idempotency_key is "run_id:turn:call_id" (stable across recoveries by construction)."""
    KEYS.clear()
    result = await durable.run("echo", run_id="keys")
    (call,) = [c for c in result.tool_calls if c.name == "keyed"]
    assert [f"keys:1:{call.call_id}"] == KEYS


@pytest.mark.asyncio
async def test_an_enqueued_run_is_run_by_the_worker(durable: DBOSAgent) -> None:
    """enqueue() puts the run on the queue; this worker takes it; result() waits for it."""
    run_id = await durable.enqueue("add", run_id="queued-1")
    result = await durable.result(run_id)
    assert run_id == "queued-1"
    assert "add" in result.output


@pytest.mark.asyncio
async def test_a_failed_run_raises_its_typed_error_with_what_it_did(
    server: LocalModelServer, sqlite_url: str
) -> None:
    """A 401 is stored as data and raised as AuthenticationError (status, partial result)."""
    async with (
        agent_for(server, api_key="wrong-key", max_retries=0) as agent,
        DBOSAgent(agent, database_url=sqlite_url) as durable,
    ):
        with pytest.raises(AuthenticationError) as raised:
            await durable.run("add", run_id="refused")
        with pytest.raises(AuthenticationError):
            await durable.result("refused")
    assert raised.value.status == 401
    assert raised.value.partial_result is not None
    assert raised.value.partial_result.turns == 0
    assert "wrong-key" not in str(raised.value)


@pytest.mark.asyncio
async def test_checkpoints_are_json_not_pickle(durable: DBOSAgent, sqlite_url: str) -> None:
    """Every workflow row of the database is stored with the portable JSON serializer."""
    await durable.run("add", run_id="json-rows")
    path = sqlite_url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as connection:
        kinds = {row[0] for row in connection.execute("SELECT serialization FROM workflow_status")}
    assert kinds == {"portable_json"}


@pytest.mark.asyncio
async def test_a_resumed_run_sends_run_resumed_and_only_the_live_part(
    server: LocalModelServer, sqlite_url: str
) -> None:
    """Replayed from after turn 1's model step (a DBOS fork of the run): RunResumed(1 turn),
    no RunStarted, the tools (not checkpointed there) run and are announced, and only turn 2's
    request is sent again. The worker's hooks see it: a recovered run has no caller."""
    hooks, events = recorder()
    async with agent_for(server) as agent, DBOSAgent(agent, database_url=sqlite_url, hooks=hooks) as durable:
        first = await durable.run("add and keyed", run_id="to-fork")
        requests, events[:] = len(server.requests), []
        handle = await dbos.DBOS.fork_workflow_async("to-fork", start_step=2)
        document = await handle.get_result(polling_interval_sec=0.05)
    assert document["result"]["output"] == first.output
    assert len(server.requests) == requests + 1  # turn 2 only: turn 1's response was replayed
    resumed = [e for e in events if isinstance(e, RunResumed)]
    assert [(e.turns_done, e.calls_done) for e in resumed] == [(1, 0)]
    assert not any(isinstance(e, RunStarted) for e in events)
    assert isinstance(events[0], RunResumed)
    assert isinstance(events[-1], RunFinished)
    assert sum(isinstance(e, ToolCallStarted) for e in events) == 2
    assert sum(isinstance(e, ToolCallFinished) for e in events) == 2


@pytest.mark.asyncio
async def test_a_second_dbos_agent_in_one_process_is_refused(durable: DBOSAgent, sqlite_url: str) -> None:
    """DBOS is one instance per process: opening another DBOSAgent says so."""
    with pytest.raises(UsageError, match="one instance per process"):
        async with DBOSAgent(durable.agent, database_url=sqlite_url + "-other"):
            pass


@pytest.mark.asyncio
async def test_runs_client_enqueues_and_lists_on_a_fresh_database(tmp_path: Path) -> None:
    """DBOSRuns works where no worker ever ran: it sets up the tables, enqueues, lists."""
    url = f"sqlite:///{tmp_path / 'fresh.sqlite'}"
    async with DBOSRuns(url) as runs:
        run_id = await runs.enqueue("add", run_id="waiting-1")
        listed = await runs.list()
        shown = await runs.show(run_id)
        missing = await runs.show("no-such-run")
    assert [info.run_id for info in listed] == ["waiting-1"]
    assert shown is not None
    assert (shown.status, shown.turns) == ("enqueued", 0)
    assert missing is None


@pytest.mark.asyncio
async def test_runs_client_shows_a_finished_run(durable: DBOSAgent, sqlite_url: str) -> None:
    """show() reports the status, the checkpointed turns and calls, and the output."""
    result = await durable.run("add", run_id="shown")
    async with DBOSRuns(sqlite_url) as runs:
        info = await runs.show("shown")
    assert info is not None
    assert (info.status, info.turns, info.tool_calls, info.output) == (
        "completed",
        result.turns,
        len(result.tool_calls),
        result.output,
    )


@pytest.mark.parametrize("url", ["", "mysql://host/db", "runs.sqlite"])
def test_a_database_url_that_is_not_sqlite_or_postgresql_is_refused(url: str, monkeypatch: Any) -> None:
    """A missing or unsupported database URL is a UsageError before anything starts."""
    monkeypatch.delenv("AGENT_DURABLE_URL", raising=False)
    with pytest.raises(UsageError):
        DBOSRuns(url or None)


def test_an_application_name_dbos_would_refuse_is_refused_first() -> None:
    """Names are 3-256 of a-z 0-9 _ - (DBOS's rule), said before DBOS is touched."""
    with pytest.raises(UsageError, match="application name"):
        DBOSRuns("sqlite:///x.sqlite", name="No Spaces")


@pytest.mark.asyncio
async def test_an_input_that_cannot_be_stored_as_json_is_refused(durable: DBOSAgent) -> None:
    """Input items holding a non-JSON value are refused before the run is stored."""
    import datetime

    item = {"role": "user", "content": "when?", "at": datetime.datetime.now()}
    with pytest.raises(UsageError, match="plain JSON"):
        await durable.run([item], run_id="not-json")


def test_dbos_agent_refuses_trio(server: LocalModelServer, sqlite_url: str) -> None:
    """DBOS runs on asyncio only: opening a DBOSAgent under trio is a UsageError, not a hang."""
    import anyio

    async def open_under_trio() -> None:
        async with agent_for(server) as agent, DBOSAgent(agent, database_url=sqlite_url):
            pass

    with pytest.raises(UsageError, match="asyncio"):
        anyio.run(open_under_trio, backend="trio")


@pytest.mark.asyncio
async def test_a_dbos_agent_that_is_not_open_says_so(server: LocalModelServer, sqlite_url: str) -> None:
    """run() before `async with` is a UsageError naming the fix."""
    async with agent_for(server) as agent:
        with pytest.raises(UsageError, match="async with"):
            await DBOSAgent(agent, database_url=sqlite_url).run("add")


class Answer(BaseModel):
    """A structured answer."""

    text: str


@pytest.mark.asyncio
async def test_a_durable_structured_run_gives_back_the_typed_output(sqlite_url: str) -> None:
    """output_parsed of a durable run (started here, or read back by run id) is the output_type."""
    agent, endpoint = scripted_agent([response(message('{"text": "hi"}'))], output_type=Answer)
    async with agent, DBOSAgent(agent, database_url=sqlite_url) as durable:
        first = await durable.run("answer", run_id="typed")
        again = await durable.result("typed")
    assert first.output_parsed == Answer(text="hi")
    assert again.output_parsed == first.output_parsed
    assert len(endpoint.requests) == 1
