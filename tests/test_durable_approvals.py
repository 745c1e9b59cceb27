"""Durable runs that wait for approvals (issue 11): a DBOS ``recv`` that survives restarts.

A run whose calls need approval publishes them and waits; ``DBOSRuns.approve`` / ``deny`` from
another client (or ``agent runs approve`` / ``deny``) decide them and the run goes on. The crash
test kills a real worker (``tests.durable_app``) with SIGKILL while the run waits.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from agent import (
    Agent,
    ApprovalRequested,
    HookError,
    Hooks,
    RunResult,
    RunResumed,
    RunStarted,
    RunTimeoutError,
    UsageError,
    approve,
    deny,
    tool,
)

dbos = pytest.importorskip("dbos")

from agent.durable._json import decision_to_json  # noqa: E402
from agent.durable._replay import ReplayGate  # noqa: E402
from agent.durable.dbos import (  # noqa: E402
    DECISION_STEP,
    DECISION_TOPIC,
    TOOL_STEP,
    DBOSAgent,
    DBOSRuns,
    RunInfo,
)
from agent.localmodel import AutoPolicy, LocalModelServer  # noqa: E402
from tests.durable_app import tool_output  # noqa: E402
from tests.test_cli import assert_one_line_error, invoke  # noqa: E402
from tests.test_cli_durable import LOCAL, _dbos_logs_to_current_stderr  # noqa: E402
from tests.test_durable_crash import (  # noqa: E402
    Workers,
    database_url,
    events,
    is_first_request,
    journal_dir,
    wait_for,
)

__all__ = ["_dbos_logs_to_current_stderr", "database_url", "journal_dir"]  # shared fixtures

pytestmark = pytest.mark.timeout(60)

RAN: list[str] = []
PROMPT = "Go."
APP = "approval-tests"
DEADLINE = 30.0


@tool
async def lookup() -> str:
    """Look the report up (needs no approval)."""
    RAN.append("lookup")
    return "the report"


@tool(needs_approval=True)
async def send_mail(to: str = "bob") -> str:
    """Mail the report to someone."""
    RAN.append(f"send_mail:{to}")
    return f"mailed {to}"


@tool(needs_approval=True)
async def pay(amount: int = 500) -> str:
    """Pay an amount."""
    RAN.append(f"pay:{amount}")
    return f"paid {amount}"


@pytest.fixture(autouse=True)
def _fresh_log() -> Iterator[None]:
    RAN.clear()
    yield
    RAN.clear()


@pytest.fixture
def server() -> Iterator[LocalModelServer]:
    with LocalModelServer(AutoPolicy(), api_key="local-key") as server:
        yield server


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'runs.sqlite'}"


def agent_for(server: LocalModelServer, **options: Any) -> Agent:
    return Agent(
        "local", tools=[lookup, send_mail, pay], base_url=server.base_url, api_key="local-key", **options
    )


@pytest_asyncio.fixture
async def durable(server: LocalModelServer, sqlite_url: str) -> AsyncIterator[DBOSAgent]:
    async with agent_for(server) as agent, DBOSAgent(agent, name=APP, database_url=sqlite_url) as durable:
        yield durable


async def waiting(runs: DBOSRuns, run_id: str) -> RunInfo:
    """Run ``run_id`` once it waits for approvals (polled; fails after DEADLINE seconds)."""
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        info = await runs.show(run_id)
        if info is not None and info.status == "awaiting_approval":
            return info
        await asyncio.sleep(0.05)
    pytest.fail(f"run {run_id!r} never waited for approval")


def calls_by_tool(info: RunInfo) -> dict[str, str]:
    return {pending.tool_name: pending.call_id for pending in info.pending_approvals}


def outcomes(result: RunResult) -> dict[str, str]:
    return {record.name: record.kind for record in result.tool_calls}


@pytest.mark.asyncio
async def test_a_waiting_run_shows_its_pending_calls_and_another_client_decides_them(
    durable: DBOSAgent,
) -> None:
    """The run waits with both calls pending; approve one, deny one from a client: it completes."""
    running = asyncio.create_task(durable.run(PROMPT, run_id="wait-1"))
    async with DBOSRuns(durable.database_url, name=APP) as runs:
        info = await waiting(runs, "wait-1")
        assert sorted(calls_by_tool(info)) == ["pay", "send_mail"]
        assert RAN == ["lookup"]
        ids = calls_by_tool(info)
        await runs.approve("wait-1", ids["send_mail"])
        await runs.deny("wait-1", ids["pay"], reason="over budget")
        result = await running
        shown = await runs.show("wait-1")
    assert result.status == "completed"
    assert outcomes(result) == {"lookup": "ok", "send_mail": "ok", "pay": "denied"}
    assert sorted(RAN) == ["lookup", "send_mail:bob"]
    assert "over budget" in next(r.output for r in result.tool_calls if r.name == "pay")
    assert shown is not None
    assert (shown.status, shown.pending_approvals) == ("completed", ())


@pytest.mark.asyncio
async def test_approved_arguments_replace_the_models(durable: DBOSAgent) -> None:
    """approve(arguments=...) runs the call with those arguments (validated like the model's)."""
    running = asyncio.create_task(durable.run(PROMPT, run_id="edit-1"))
    async with DBOSRuns(durable.database_url, name=APP) as runs:
        ids = calls_by_tool(await waiting(runs, "edit-1"))
    await durable.approve("edit-1", ids["send_mail"], arguments={"to": "carol"})
    await durable.deny("edit-1", ids["pay"])
    result = await running
    assert sorted(RAN) == ["lookup", "send_mail:carol"]
    assert outcomes(result)["pay"] == "denied"


@pytest.mark.asyncio
async def test_a_decision_for_a_call_the_run_does_not_wait_for_is_refused(durable: DBOSAgent) -> None:
    """Unknown call ids, unknown runs and arguments that are no JSON object are caller mistakes."""
    running = asyncio.create_task(durable.run(PROMPT, run_id="refuse-1"))
    async with DBOSRuns(durable.database_url, name=APP) as runs:
        ids = calls_by_tool(await waiting(runs, "refuse-1"))
        with pytest.raises(UsageError, match="does not wait for call 'nope'"):
            await runs.approve("refuse-1", "nope")
        with pytest.raises(UsageError, match="waits for no approval"):
            await runs.approve("no-such-run", ids["pay"])
        with pytest.raises(UsageError, match="JSON object"):
            await runs.approve("refuse-1", ids["pay"], arguments=[1])  # type: ignore[arg-type]
        await runs.deny("refuse-1", ids["pay"])
        await runs.deny("refuse-1", ids["send_mail"])
    await running
    assert RAN == ["lookup"]


HOSTILE: list[object] = [
    None,
    "approve",
    True,
    ["approved"],
    {"approved": True},
    {"call_id": "CALL", "approved": "yes"},
    {"call_id": "CALL", "approved": 1},
    {"call_id": "CALL", "approved": None},
    {"call_id": "CALL", "approved": True, "arguments": "amount=1"},
    {"call_id": "CALL", "approved": True, "reason": 5},
    {"call_id": "CALL", "approved": True, "extra": "field"},
    {"call_id": "call-of-another-run", "approved": True},
]


@pytest.mark.asyncio
async def test_hostile_messages_never_approve_and_the_run_keeps_waiting(durable: DBOSAgent) -> None:
    """Malformed messages on the decision topic are ignored; the calls stay undecided."""
    running = asyncio.create_task(durable.run(PROMPT, run_id="hostile-1"))
    async with DBOSRuns(durable.database_url, name=APP) as runs:
        ids = calls_by_tool(await waiting(runs, "hostile-1"))
        for call_id in ids.values():
            for message in HOSTILE:
                raw = json.loads(json.dumps(message).replace("CALL", call_id))
                await asyncio.to_thread(runs.client.send, "hostile-1", raw, DECISION_TOPIC)
        for call_id in ids.values():  # read after every hostile one (messages are read in order)
            await runs.deny("hostile-1", call_id, reason="no")
        result = await running
    assert RAN == ["lookup"]
    assert outcomes(result) == {"lookup": "ok", "send_mail": "denied", "pay": "denied"}


@pytest.mark.asyncio
async def test_a_decided_call_leaves_the_published_list_and_is_refused_again(durable: DBOSAgent) -> None:
    """Once the run received a call's decision, show lists only the others and approve refuses it."""
    running = asyncio.create_task(durable.run(PROMPT, run_id="decided-1"))
    async with DBOSRuns(durable.database_url, name=APP) as runs:
        ids = calls_by_tool(await waiting(runs, "decided-1"))
        await runs.deny("decided-1", ids["pay"])
        deadline = time.monotonic() + DEADLINE
        while len((await waiting(runs, "decided-1")).pending_approvals) == 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert calls_by_tool(await waiting(runs, "decided-1")) == {"send_mail": ids["send_mail"]}
        with pytest.raises(UsageError, match=f"does not wait for call '{ids['pay']}'"):
            await runs.approve("decided-1", ids["pay"])
        await runs.deny("decided-1", ids["send_mail"])
    await running
    assert RAN == ["lookup"]


@pytest.mark.asyncio
async def test_the_first_decision_for_a_call_wins(durable: DBOSAgent) -> None:
    """A call denied then approved stays denied (the run reads its messages in order)."""
    running = asyncio.create_task(durable.run(PROMPT, run_id="first-1"))
    async with DBOSRuns(durable.database_url, name=APP) as runs:
        ids = calls_by_tool(await waiting(runs, "first-1"))
        await runs.deny("first-1", ids["pay"])
        second = decision_to_json(ids["pay"], approve())  # sent raw: approve() would refuse it
        await asyncio.to_thread(runs.client.send, "first-1", second, DECISION_TOPIC)
        await runs.deny("first-1", ids["send_mail"])
    result = await running
    assert outcomes(result)["pay"] == "denied"
    assert RAN == ["lookup"]


@pytest.mark.asyncio
async def test_approval_timeout_denies_the_undecided_calls(server: LocalModelServer, sqlite_url: str) -> None:
    """With approval_timeout, the calls still undecided then are denied and the run goes on."""
    async with (
        agent_for(server) as agent,
        DBOSAgent(agent, name=APP, database_url=sqlite_url, approval_timeout=0.2) as durable,
    ):
        result = await durable.run(PROMPT, run_id="timeout-1")
    assert result.status == "completed"
    assert outcomes(result) == {"lookup": "ok", "send_mail": "denied", "pay": "denied"}
    assert RAN == ["lookup"]


@pytest.mark.asyncio
async def test_the_wait_for_approvals_is_outside_the_run_timeout(
    server: LocalModelServer, sqlite_url: str
) -> None:
    """A wait longer than the run's run_timeout does not time the run out."""
    async with (
        agent_for(server, run_timeout=0.5) as agent,
        DBOSAgent(agent, name=APP, database_url=sqlite_url, approval_timeout=1.5) as durable,
    ):
        result = await durable.run(PROMPT, run_id="long-wait-1")
    assert result.status == "completed"


@tool
async def slow() -> str:
    """Take longer than any run_timeout here."""
    await asyncio.sleep(30)
    return "late"


@pytest.mark.asyncio
async def test_run_timeout_still_bounds_the_runs_work(server: LocalModelServer, sqlite_url: str) -> None:
    """Outside approval waits, a durable run's run_timeout ends it with RunTimeoutError."""
    async with (
        Agent("local", tools=[slow], base_url=server.base_url, api_key="local-key", run_timeout=0.5) as agent,
        DBOSAgent(agent, name=APP, database_url=sqlite_url) as durable,
    ):
        with pytest.raises(RunTimeoutError, match=r"run_timeout of 0\.5 seconds"):
            await durable.run(PROMPT, run_id="slow-1")


@pytest.mark.asyncio
async def test_approval_requested_goes_out_live_and_not_again_on_replay() -> None:
    """The replay gate sends ApprovalRequested when its decision step runs, drops a replayed one."""
    sent: list[object] = []

    async def emit(event: object) -> None:
        sent.append(event)

    gate = ReplayGate(emit, "r", "m", (1, 0))
    replayed, live = ApprovalRequested(1, "a", "pay", "{}"), ApprovalRequested(2, "b", "pay", "{}")
    await gate.emit(RunStarted("r", "m"))
    await gate.emit(replayed)
    gate.approval_done(1, "a")
    await gate.emit(live)
    assert await gate.live_approval(2, "b") == live
    gate.approval_done(2, "b")
    assert sent == [RunResumed("r", "m", 1, 0), live]


@pytest.mark.asyncio
async def test_an_on_approval_hook_decides_inline_and_its_answer_is_a_step(
    durable: DBOSAgent,
) -> None:
    """With Hooks(on_approval=...), the run does not wait; each answer is checkpointed."""
    asked: list[str] = []

    def policy(event: ApprovalRequested) -> object:
        asked.append(event.tool_name)
        return approve() if event.tool_name == "send_mail" else deny("no paying")

    result = await durable.run(PROMPT, run_id="inline-1", hooks=Hooks(on_approval=policy))
    steps = await dbos.DBOS.list_workflow_steps_async("inline-1")
    names = [step["function_name"] for step in steps]
    assert outcomes(result) == {"lookup": "ok", "send_mail": "ok", "pay": "denied"}
    assert sorted(asked) == ["pay", "send_mail"]
    assert (names.count(DECISION_STEP), names.count(TOOL_STEP)) == (2, 2)


@pytest.mark.asyncio
async def test_an_on_approval_hook_that_returns_garbage_denies(durable: DBOSAgent) -> None:
    """A hook answer that is no Decision (True, a string) denies the call, as in-process."""
    answers = iter([True, "yes"])
    result = await durable.run(PROMPT, run_id="inline-2", hooks=Hooks(on_approval=lambda e: next(answers)))
    assert outcomes(result) == {"lookup": "ok", "send_mail": "denied", "pay": "denied"}
    assert RAN == ["lookup"]


@pytest.mark.asyncio
async def test_an_on_approval_hook_that_raises_ends_the_run_with_hook_error(durable: DBOSAgent) -> None:
    """The hook's exception is stored with its step: the run fails with HookError, nothing ran unasked."""

    def policy(event: ApprovalRequested) -> object:
        raise RuntimeError("policy server down")

    with pytest.raises(HookError, match="policy server down") as caught:
        await durable.run(PROMPT, run_id="inline-3", hooks=Hooks(on_approval=policy))
    assert caught.value.partial_result is not None
    assert "send_mail:bob" not in RAN
    assert "pay:500" not in RAN


@pytest.mark.asyncio
async def test_a_durable_wait_on_postgresql(server: LocalModelServer, postgres_url: str) -> None:
    """The same wait and decisions on PostgreSQL."""
    async with (
        agent_for(server) as agent,
        DBOSAgent(agent, name=APP, database_url=postgres_url) as durable,
        DBOSRuns(postgres_url, name=APP) as runs,
    ):
        running = asyncio.create_task(durable.run(PROMPT, run_id="pg-wait-1"))
        ids = calls_by_tool(await waiting(runs, "pg-wait-1"))
        await runs.approve("pg-wait-1", ids["pay"], arguments={"amount": 7})
        await runs.deny("pg-wait-1", ids["send_mail"])
        result = await running
    assert outcomes(result) == {"lookup": "ok", "send_mail": "denied", "pay": "ok"}
    assert sorted(RAN) == ["lookup", "pay:7"]


# ---------------------------------------------------------------- the command line


@pytest.mark.asyncio
async def test_agent_runs_show_approve_and_deny(durable: DBOSAgent) -> None:
    """``agent runs show`` lists the waiting calls; ``approve --arguments`` / ``deny --reason`` decide."""
    running = asyncio.create_task(durable.run(PROMPT, run_id="cli-1"))
    where = ["--durable", durable.database_url, "--name", APP]
    async with DBOSRuns(durable.database_url, name=APP) as runs:
        ids = calls_by_tool(await waiting(runs, "cli-1"))

    def command(*args: str) -> Any:
        return asyncio.to_thread(invoke, "runs", *args, *where, env=LOCAL)

    shown = await command("show", "cli-1", "--json")
    text = (await command("show", "cli-1")).stdout
    wrong = await command("approve", "cli-1", "nope")
    approved = await command("approve", "cli-1", ids["send_mail"], "--arguments", '{"to": "dave"}')
    denied = await command("deny", "cli-1", ids["pay"], "--reason", "not today")
    result = await running
    info = json.loads(shown.stdout)
    assert info["status"] == "awaiting_approval"
    assert sorted(p["tool_name"] for p in info["pending_approvals"]) == ["pay", "send_mail"]
    assert f"waits for:  {ids['pay']}  pay(" in text
    assert_one_line_error(wrong, 2, mentions="does not wait for call 'nope'")
    assert (approved.exit_code, denied.exit_code) == (0, 0), approved.output + denied.output
    assert sorted(RAN) == ["lookup", "send_mail:dave"]
    assert "not today" in next(r.output for r in result.tool_calls if r.name == "pay")


def test_agent_runs_approve_refuses_arguments_that_are_not_a_json_object(tmp_path: Path) -> None:
    """``--arguments`` must be a JSON object: anything else exits 2 before sending a thing."""
    url = f"sqlite:///{tmp_path / 'runs.sqlite'}"
    result = invoke("runs", "approve", "r", "c", "--arguments", "[1]", "--durable", url, env=LOCAL)
    assert_one_line_error(result, 2, mentions="--arguments must be a JSON object")


# ---------------------------------------------------------------- a worker killed while it waits


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("database_url", "restart_id"),
    [("sqlite", "worker-a"), ("postgresql", "worker-b")],
    indirect=["database_url"],
)
async def test_a_worker_killed_while_its_run_waits_resumes_the_wait_after_a_restart(
    tmp_path: Path, database_url: str, journal_dir: Path, restart_id: str
) -> None:
    """Two free calls, two waiting; kill -9 after one approval was received; restart, deny the
    other: the approved call ran once, the denied one never, the model saw both, no step re-ran."""
    run_id = "wait-across-a-crash"
    serve = ["--tools", "lookup,audit,send_mail,pay", "--approve", "send_mail,pay", "--name", APP]
    async with LocalModelServer(AutoPolicy()) as server, DBOSRuns(database_url, name=APP) as runs:
        with Workers(tmp_path, database_url, server.base_url, journal_dir) as workers:
            first = workers.start("worker-a", *serve)
            await runs.enqueue(PROMPT, run_id=run_id)
            ids = calls_by_tool(await waiting(runs, run_id))
            await runs.approve(run_id, ids["send_mail"])

            async def received() -> bool:
                steps = await asyncio.to_thread(runs.client.list_workflow_steps, run_id)
                return any(s["function_name"] == "DBOS.recv" and s["output"] is not None for s in steps)

            await wait_for("the approval's receipt", received, workers, first)
            first.kill()
            assert (await waiting(runs, run_id)).pending_approvals  # still published while no one runs it
            restarted = workers.start(restart_id, *serve)
            await runs.deny(run_id, ids["pay"], reason="not today")
            result = await runs.result(run_id)
            assert restarted.process.poll() is None

    assert result.status == "completed"
    assert outcomes(result) == {"lookup": "ok", "audit": "ok", "send_mail": "ok", "pay": "denied"}
    assert sorted(r["tool"] for r in events(journal_dir, "tool_start")) == ["audit", "lookup", "send_mail"]
    assert f"send_mail: {tool_output('send_mail', run_id)}" in (result.output or "")
    assert "not today" in (result.output or "")
    assert len([body for body in server.requests if is_first_request(body)]) == 1
    assert len(events(journal_dir, "run_resumed", run_id=run_id)) == 1


# ---------------------------------------------------------------- many runs waiting at once

SOAK_RUNS = int(os.environ.get("AGENT_SOAK_RUNS", "10"))


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.asyncio
@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
async def test_many_waiting_runs_decided_at_once_all_complete(
    server: LocalModelServer, database_url: str
) -> None:
    """AGENT_SOAK_RUNS runs wait at once; one client decides them all: each completes, each
    approved call ran once, no denied one ran (prints the decisions-to-done time)."""
    run_ids = [f"soak-{n}" for n in range(SOAK_RUNS)]
    async with (
        agent_for(server) as agent,
        DBOSAgent(agent, name=APP, database_url=database_url) as durable,
        DBOSRuns(database_url, name=APP) as runs,
    ):
        running = [asyncio.create_task(durable.run(PROMPT, run_id=run_id)) for run_id in run_ids]
        waits = [calls_by_tool(await waiting(runs, run_id)) for run_id in run_ids]
        began = time.monotonic()
        for run_id, ids in zip(run_ids, waits, strict=True):
            await runs.approve(run_id, ids["send_mail"], arguments={"to": run_id})
            await runs.deny(run_id, ids["pay"])
        results = await asyncio.gather(*running)
        elapsed = time.monotonic() - began
    kind = database_url.split(":", maxsplit=1)[0]
    print(f"\n{SOAK_RUNS} waiting runs on {kind}: decided -> all done in {elapsed:.2f} s")
    assert all(outcomes(result)["pay"] == "denied" for result in results)
    assert sorted(RAN) == sorted(["lookup"] * SOAK_RUNS + [f"send_mail:{run_id}" for run_id in run_ids])
