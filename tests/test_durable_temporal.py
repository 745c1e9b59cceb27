"""Durable runs on Temporal, against a real dev server (``tests/_temporal.py``), worker in this process.

Crash tests with real worker processes killed with SIGKILL are at the end, under ``slow``.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import pytest
import pytest_asyncio

from agent import Agent, APIError, RunError, RunResult, ToolContext, tool
from agent.localmodel import AutoPolicy, Item, LocalModelServer

pytest.importorskip("temporalio")

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHistory
from temporalio.worker import Replayer
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from agent.durable.temporal import PASSTHROUGH, RunWorkflow, TemporalAgent
from tests._temporal import TemporalServer, TemporalUnavailable, start_temporal
from tests.durable_app import Journal, build_agent, read_journal, tool_output
from tests.test_cli import AGENT_SCRIPT, NO_OPENAI, assert_one_line_error, invoke, process_env

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.timeout(60)

KEYS: list[str] = []
DEADLINE = 60.0
"""Seconds any one awaited condition may take (a worker starts in ~2 s on an idle machine)."""


@tool
async def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@tool
def keyed(ctx: ToolContext[None], text: str) -> str:
    """Echo the text (a sync tool, in a thread); remember the call's idempotency key."""
    KEYS.append(ctx.idempotency_key)
    return text


@tool
def huge() -> str:
    """Return far too much text."""
    return "x" * 300_000


SLOW_SYNC_CALLS: list[str] = []


@tool
def slow_sync(ctx: ToolContext[None]) -> str:
    """Block a thread for 2.5 s (longer than the test's heartbeat timeout)."""
    SLOW_SYNC_CALLS.append(ctx.idempotency_key)
    time.sleep(2.5)
    return "slept"


@tool(needs_approval=True)
def wire(amount: int) -> str:
    """Wire money (a person approves each call)."""
    return f"wired {amount}"


@pytest.fixture(scope="module")
def temporal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TemporalServer]:
    try:
        server = start_temporal(tmp_path_factory.mktemp("temporal"))
    except TemporalUnavailable as exc:
        pytest.skip(str(exc))
    with server:
        yield server


@pytest.fixture
def model() -> Iterator[LocalModelServer]:
    with LocalModelServer(AutoPolicy(), api_key="local-key") as server:
        yield server


def make_agent(model: LocalModelServer, *tools: Any, **options: Any) -> Agent:
    return Agent("m", base_url=model.base_url, api_key="local-key", tools=list(tools), **options)


@pytest_asyncio.fixture
async def client(temporal: TemporalServer) -> AsyncIterator[Client]:
    yield await Client.connect(temporal.address)


def queue(request: pytest.FixtureRequest) -> str:
    """A task queue of this test's own (the server is shared by the module's tests)."""
    return f"q-{request.node.name}"


def scheduled(history: WorkflowHistory) -> list[str]:
    """The activity ids a run's history scheduled, in order."""
    kind = EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    return [
        e.activity_task_scheduled_event_attributes.activity_id for e in history.events if e.event_type == kind
    ]


async def replay(history: WorkflowHistory) -> None:
    """Replay ``history`` with Temporal's Replayer (raises on any nondeterminism)."""
    restrictions = SandboxRestrictions.default.with_passthrough_modules(*PASSTHROUGH)
    replayer = Replayer(
        workflows=[RunWorkflow], workflow_runner=SandboxedWorkflowRunner(restrictions=restrictions)
    )
    await replayer.replay_workflow(history)


@pytest.mark.asyncio
async def test_run_gives_the_in_process_result_and_replays_deterministically(
    model: LocalModelServer, client: Client, request: pytest.FixtureRequest
) -> None:
    """A run on a worker returns the in-process run's output; its history replays cleanly."""
    prompt = "add 2 and 3, and keyed 'hi'"
    async with make_agent(model, add, keyed) as agent:
        expected = await agent.run(prompt, run_id="reference")
        durable = TemporalAgent(agent, name="basic", client=client, task_queue=queue(request))
        async with durable.worker():
            result = await durable.run(prompt, run_id="run-basic")
            history = await client.get_workflow_handle("run-basic").fetch_history()
            await replay(history)
    assert result.output == expected.output
    assert [r.output for r in result.tool_calls] == [r.output for r in expected.tool_calls]
    assert scheduled(history) == ["model:1", "tool:1:1:" + result.tool_calls[0].call_id,
                                  "tool:1:2:" + result.tool_calls[1].call_id, "model:2"]  # fmt: skip


@pytest.mark.asyncio
async def test_idempotency_key_is_the_run_id_turn_and_call(
    model: LocalModelServer, client: Client, request: pytest.FixtureRequest
) -> None:
    """ctx.idempotency_key in an activity is built from the workflow id, as with DBOS."""
    KEYS.clear()
    async with make_agent(model, keyed) as agent:
        durable = TemporalAgent(agent, name="keys", client=client, task_queue=queue(request))
        async with durable.worker():
            result = await durable.run("keyed 'a'", run_id="run-keys")
    assert [f"run-keys:1:{result.tool_calls[0].call_id}"] == KEYS


@pytest.mark.asyncio
async def test_a_sync_tool_longer_than_the_heartbeat_timeout_runs_once(
    model: LocalModelServer, client: Client, request: pytest.FixtureRequest
) -> None:
    """A thread-bound tool is heartbeated for by the event loop: no timeout, no second attempt."""
    SLOW_SYNC_CALLS.clear()
    async with make_agent(model, slow_sync) as agent:
        durable = TemporalAgent(
            agent, name="heartbeats", client=client, task_queue=queue(request), heartbeat_timeout=1.0
        )
        async with durable.worker():
            result = await durable.run("slow_sync", run_id="run-heartbeat")
    assert [r.output for r in result.tool_calls] == ["slept"]
    assert len(SLOW_SYNC_CALLS) == 1


@pytest.mark.asyncio
async def test_enqueue_then_result_and_a_finished_run_id_returns_the_stored_result(
    model: LocalModelServer, client: Client, request: pytest.FixtureRequest
) -> None:
    """enqueue returns the run id; result waits; run() with a finished id sends no request."""
    async with make_agent(model, add) as agent:
        durable = TemporalAgent(agent, name="enqueue", client=client, task_queue=queue(request))
        async with durable.worker():
            run_id = await durable.enqueue("add 1 and 1", run_id="run-enqueue")
            first = await durable.result(run_id)
            requests = len(model.requests)
            again = await durable.run("something else", run_id=run_id)
    assert run_id == "run-enqueue"
    assert again.output == first.output
    assert len(model.requests) == requests


@pytest.mark.asyncio
async def test_endpoint_error_comes_back_typed_with_partial_result(
    client: Client, request: pytest.FixtureRequest
) -> None:
    """An endpoint failure ends the run with the same typed error and a partial result."""
    with LocalModelServer(AutoPolicy(), api_key="other-key") as wrong:
        async with Agent("m", base_url=wrong.base_url, api_key="bad", max_retries=0) as agent:
            durable = TemporalAgent(agent, name="errors", client=client, task_queue=queue(request))
            async with durable.worker():
                with pytest.raises(APIError) as caught:
                    await durable.run("hello", run_id="run-error")
    assert caught.value.status == 401
    assert caught.value.partial_result is not None


@pytest.mark.asyncio
async def test_tool_output_over_the_payload_limit_is_an_error_outcome(
    model: LocalModelServer, client: Client, request: pytest.FixtureRequest
) -> None:
    """A tool output over payload_limit becomes a tool_error the model reads, not a stuck activity."""
    async with make_agent(model, huge) as agent:
        durable = TemporalAgent(
            agent, name="payload", client=client, task_queue=queue(request), payload_limit=100_000
        )
        async with durable.worker():
            result = await durable.run("huge", run_id="run-huge")
    record = result.tool_calls[0]
    assert record.kind == "tool_error"
    assert "over the durable payload limit of 100000 bytes" in record.output


@pytest.mark.asyncio
async def test_a_model_request_over_the_payload_limit_ends_the_run_unsent(
    model: LocalModelServer, client: Client, request: pytest.FixtureRequest
) -> None:
    """A request body over payload_limit ends the run with RunError before it is sent."""
    async with make_agent(model) as agent:
        durable = TemporalAgent(
            agent, name="payload-in", client=client, task_queue=queue(request), payload_limit=2_000
        )
        async with durable.worker():
            with pytest.raises(RunError, match="over the durable payload limit of 2000 bytes"):
                await durable.run("x" * 3_000, run_id="run-big-request")
    assert model.requests == []


@pytest.mark.asyncio
async def test_a_call_needing_approval_waits_for_approve_and_progress_shows_it(
    model: LocalModelServer, client: Client, request: pytest.FixtureRequest
) -> None:
    """A run waits (durably) for a decision; progress says so; approve() lets the call run."""
    async with make_agent(model, wire) as agent:
        durable = TemporalAgent(agent, name="approvals", client=client, task_queue=queue(request))
        async with durable.worker():
            run_id = await durable.enqueue("wire 5", run_id="run-approve")
            deadline = time.monotonic() + 30
            while not (progress := await durable.progress(run_id))["awaiting_approval"]:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
            assert progress["status"] == "awaiting_approval"
            await durable.approve(run_id, progress["awaiting_approval"][0])
            result = await durable.result(run_id)
            final = await durable.progress(run_id)
    assert [r.output for r in result.tool_calls] == ["wired 5"]
    assert final["status"] == "completed"
    assert final["tool_calls"] == 1


@pytest.mark.asyncio
async def test_a_run_waiting_for_approval_holds_no_worker_and_resumes_on_a_new_one(
    model: LocalModelServer, client: Client, request: pytest.FixtureRequest
) -> None:
    """The worker stops while the run waits; approved meanwhile, a new worker finishes the run."""
    async with make_agent(model, wire) as agent:
        durable = TemporalAgent(agent, name="approvals-restart", client=client, task_queue=queue(request))
        async with durable.worker():
            run_id = await durable.enqueue("wire 7", run_id="run-approve-restart")
            call_id = await awaiting_call(durable, run_id)
        await durable.approve(run_id, call_id)
        async with durable.worker():
            result = await durable.result(run_id)
    assert [r.output for r in result.tool_calls] == ["wired 7"]


async def awaiting_call(durable: TemporalAgent, run_id: str) -> str:
    """The first call id run ``run_id`` waits a decision for (polled with a deadline)."""
    deadline = time.monotonic() + DEADLINE
    while not (progress := await durable.progress(run_id))["awaiting_approval"]:
        assert time.monotonic() < deadline, progress
        await asyncio.sleep(0.05)
    call_id: str = progress["awaiting_approval"][0]
    return call_id


@pytest.mark.asyncio
async def test_a_malformed_or_stray_decision_is_ignored_and_the_run_keeps_waiting(
    model: LocalModelServer, client: Client, request: pytest.FixtureRequest
) -> None:
    """Signals that are no valid decision for a waiting call neither approve nor break the run."""
    async with make_agent(model, wire) as agent:
        durable = TemporalAgent(agent, name="approvals-hostile", client=client, task_queue=queue(request))
        async with durable.worker():
            run_id = await durable.enqueue("wire 9", run_id="run-approve-hostile")
            call_id = await awaiting_call(durable, run_id)
            handle = client.get_workflow_handle(run_id)
            for junk in ({"call_id": call_id, "approved": 1}, "yes", {"call_id": "other", "approved": True}):
                await handle.signal("decide", junk)
            await durable.approve(run_id, "other")
            assert (await durable.progress(run_id))["awaiting_approval"] == [call_id]
            await durable.deny(run_id, call_id, "not today")
            await durable.approve(run_id, call_id)  # too late: the first decision wins
            result = await durable.result(run_id)
    assert [r.kind for r in result.tool_calls] == ["denied"]


@pytest.mark.asyncio
async def test_approval_timeout_denies_the_undecided_calls(
    model: LocalModelServer, client: Client, request: pytest.FixtureRequest
) -> None:
    """With approval_timeout, a call still undecided then is denied and the run goes on."""
    async with make_agent(model, wire) as agent:
        durable = TemporalAgent(
            agent, name="approvals-timeout", client=client, task_queue=queue(request), approval_timeout=0.5
        )
        async with durable.worker():
            result = await durable.run("wire 3", run_id="run-approve-timeout")
    assert [r.kind for r in result.tool_calls] == ["denied"]


@pytest.mark.asyncio
async def test_deny_gives_the_model_a_denied_output(
    model: LocalModelServer, client: Client, request: pytest.FixtureRequest
) -> None:
    """deny() ends the waiting call as denied, with the reason."""
    async with make_agent(model, wire) as agent:
        durable = TemporalAgent(agent, name="denials", client=client, task_queue=queue(request))
        async with durable.worker():
            run_id = await durable.enqueue("wire 5", run_id="run-deny")
            deadline = time.monotonic() + 30
            while not (progress := await durable.progress(run_id))["awaiting_approval"]:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
            await durable.deny(run_id, progress["awaiting_approval"][0], "no")
            result = await durable.result(run_id)
    assert [r.kind for r in result.tool_calls] == ["denied"]


@pytest.mark.asyncio
async def test_a_tool_with_max_concurrency_runs_on_its_own_task_queue(
    model: LocalModelServer, client: Client, request: pytest.FixtureRequest
) -> None:
    """A limited tool's activities go to QUEUE.tool.NAME (served by the worker), others to QUEUE."""
    limited = tool(keyed.function, name="limited", max_concurrency=2)
    async with make_agent(model, add, limited) as agent:
        durable = TemporalAgent(agent, name="queues", client=client, task_queue=queue(request))
        async with durable.worker():
            result = await durable.run("add 1 and 2, limited 'x'", run_id="run-queues")
            history = await client.get_workflow_handle("run-queues").fetch_history()
    kind = EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    queues = {
        e.activity_task_scheduled_event_attributes.activity_id.split(":")[-1]: (
            e.activity_task_scheduled_event_attributes.task_queue.name
        )
        for e in history.events
        if e.event_type == kind
    }
    by_name = {r.name: queues[r.call_id] for r in result.tool_calls}
    assert by_name == {"add": queue(request), "limited": f"{queue(request)}.tool.limited"}


# ---------------------------------------------------------------- the command line

CLI_TOOLS = "tests.test_cli:REGISTRY"


def test_cli_run_with_temporal_prints_the_same_answer_as_in_process(temporal: TemporalServer) -> None:
    """``agent run PROMPT --temporal HOST:PORT`` runs as a workflow and prints the in-process answer."""
    plain = invoke("run", "shout 'hey'", "--tools", CLI_TOOLS, "--no-stream", env=NO_OPENAI)
    args = ["--temporal", temporal.address, "--task-queue", "q-cli-run", "--run-id", "cli-run"]
    durable = invoke("run", "shout 'hey'", "--tools", CLI_TOOLS, "--no-stream", *args, env=NO_OPENAI)
    assert durable.exit_code == 0, durable.output
    assert durable.stdout == plain.stdout
    assert "temporal run cli-run" in durable.stderr


def test_cli_worker_serves_an_enqueued_run_and_stops_on_sigterm(
    temporal: TemporalServer, tmp_path: Path
) -> None:
    """``run --enqueue --temporal`` prints the id; ``worker --temporal`` runs it; SIGTERM exits 0."""
    where = ["--temporal", temporal.address, "--task-queue", "q-cli-worker"]
    enqueued = invoke("run", "shout 'a'", "--enqueue", "--run-id", "cli-queued", *where, env=NO_OPENAI)
    assert (enqueued.exit_code, enqueued.stdout) == (0, "cli-queued\n"), enqueued.output
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        command = [str(AGENT_SCRIPT), "worker", *where, "--tools", CLI_TOOLS]
        worker = subprocess.Popen(command, env=process_env(), cwd=REPO, stdout=out, stderr=out)
    try:

        async def result() -> RunResult:
            durable = TemporalAgent(Agent("m"), client=await Client.connect(temporal.address), task_queue="q")
            with anyio.fail_after(DEADLINE):
                return await durable.result("cli-queued")

        output = anyio.run(result).output
        os.kill(worker.pid, signal.SIGTERM)
        code = worker.wait(timeout=20)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    assert output == "shout: A"
    assert code == 0, log.read_text()
    assert "worker stopped (SIGTERM)" in log.read_text()


def test_cli_unreachable_temporal_server_fails_with_one_line() -> None:
    """A server that is not there: exit 2 and one error line naming its address."""
    result = invoke("run", "hi", "--temporal", "127.0.0.1:1", "--enqueue", env=NO_OPENAI)
    assert_one_line_error(result, 2, mentions="cannot reach the Temporal server at 127.0.0.1:1")


# ---------------------------------------------------------------- crash tests: real workers, SIGKILL

PROMPT = "Do the work."
SOAK_RUNS = min(int(os.environ.get("AGENT_SOAK_RUNS", "12")), 60)


@dataclass
class Worker:
    """One ``tests.temporal_app`` process; its stdout and stderr go to files."""

    process: subprocess.Popen[bytes]
    out: Path
    err: Path

    def kill(self) -> None:
        """SIGKILL by PID (no clean-up of any kind), then reap it."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def describe(self) -> str:
        return f"worker pid {self.process.pid} (exit {self.process.poll()}):\n{self.err.read_text()[-3000:]}"


class Workers:
    """Starts workers on one server, queue and model server; kills every one of them on exit."""

    def __init__(self, tmp_path: Path, temporal: TemporalServer, task_queue: str, model_url: str) -> None:
        self._tmp_path = tmp_path
        self.journal = tmp_path / "journal"
        self.journal.mkdir()
        self._common = [
            "--temporal", temporal.address, "--task-queue", task_queue,
            "--model-url", model_url, "--dir", str(self.journal),
        ]  # fmt: skip
        self.started: list[Worker] = []

    def start(self, *args: str) -> Worker:
        number = len(self.started)
        out, err = self._tmp_path / f"worker-{number}.out", self._tmp_path / f"worker-{number}.err"
        command = [sys.executable, "-m", "tests.temporal_app", *self._common, *args]
        with out.open("wb") as stdout, err.open("wb") as stderr:
            process = subprocess.Popen(command, cwd=REPO, stdout=stdout, stderr=stderr)
        worker = Worker(process, out, err)
        self.started.append(worker)
        return worker

    def events(self, event: str, **match: Any) -> list[dict[str, Any]]:
        """The journal records of ``event`` whose fields equal ``match``."""
        records = read_journal(self.journal)
        return [r for r in records if r["event"] == event and all(r.get(k) == v for k, v in match.items())]

    async def wait_for(self, what: str, condition: Callable[[], bool | Awaitable[bool]]) -> None:
        """Poll ``condition`` until it holds; fail after ``DEADLINE`` seconds."""
        deadline = time.monotonic() + DEADLINE
        while True:
            outcome = condition()
            if await outcome if inspect.isawaitable(outcome) else outcome:
                return
            if time.monotonic() > deadline:
                described = "\n".join(worker.describe() for worker in self.started)
                pytest.fail(f"waiting for {what}: not within {DEADLINE} s\n{described}")
            await asyncio.sleep(0.05)

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc_info: object) -> None:
        for worker in self.started:
            worker.kill()


def is_first_request(body: Item) -> bool:
    """Whether a request is a run's first (it carries no tool output yet)."""
    items = body["input"] if isinstance(body["input"], list) else []
    return not any(item.get("type") == "function_call_output" for item in items)


def completed_activities(history: WorkflowHistory) -> int:
    kind = EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED
    return sum(1 for event in history.events if event.event_type == kind)


async def uninterrupted_output(tmp_path: Path, run_id: str, tools: list[str]) -> str | None:
    """The output of the same run in process, with no crash, on its own model server."""
    directory = tmp_path / "reference"
    directory.mkdir()
    async with (
        LocalModelServer(AutoPolicy()) as server,
        build_agent(server.base_url, Journal(directory, "reference"), tools) as agent,
    ):
        result = await agent.run(PROMPT, run_id=run_id)
    return result.output


@pytest.mark.slow
@pytest.mark.asyncio
@pytest.mark.timeout(180)
async def test_kill_after_the_first_model_request_another_worker_finishes_without_resending_it(
    tmp_path: Path, temporal: TemporalServer, client: Client
) -> None:
    """Worker killed once turn 1's request completed: another worker finishes, that request not resent."""
    run_id = "crash-after-model"
    async with LocalModelServer(AutoPolicy()) as server:
        with Workers(tmp_path, temporal, "crash-model", server.base_url) as workers:
            first = workers.start("--tools", "step", "--hold", "step")
            async with build_agent(server.base_url, Journal(tmp_path, "client"), ["step"]) as agent:
                durable = TemporalAgent(agent, name="crash-tests", client=client, task_queue="crash-model")
                await durable.enqueue(PROMPT, run_id=run_id)
                # The tool starts only once turn 1's model activity completed.
                await workers.wait_for("the tool's start", lambda: bool(workers.events("tool_start")))
                first.kill()
                killed_at = time.monotonic()
                workers.start("--tools", "step")
                result = await durable.result(run_id)
                recovery = time.monotonic() - killed_at
    first_requests = [body for body in server.requests if is_first_request(body)]
    assert len(first_requests) == 1
    assert len(server.requests) == 2
    resumed = workers.events("run_resumed")
    assert [(r["turns_done"], r["calls_done"]) for r in resumed] == [(1, 0)]
    assert len(workers.events("run_start")) == 1
    assert result.output == await uninterrupted_output(tmp_path, run_id, ["step"])
    print(f"kill -> completion: {recovery:.2f} s")


@pytest.mark.slow
@pytest.mark.asyncio
@pytest.mark.timeout(180)
async def test_kill_during_four_tools_reruns_only_the_unfinished_ones_with_their_keys(
    tmp_path: Path, temporal: TemporalServer, client: Client
) -> None:
    """Killed with two calls done and two in flight: only those in flight run again, same keys."""
    run_id = "crash-in-tools"
    tools = ["quick_a", "quick_b", "slow_a", "slow_b"]
    async with LocalModelServer(AutoPolicy()) as server:
        with Workers(tmp_path, temporal, "crash-tools", server.base_url) as workers:
            first = workers.start("--tools", ",".join(tools), "--hold", "slow_a,slow_b")
            async with build_agent(server.base_url, Journal(tmp_path, "client"), tools) as agent:
                durable = TemporalAgent(agent, name="crash-tests", client=client, task_queue="crash-tools")
                await durable.enqueue(PROMPT, run_id=run_id)
                handle = client.get_workflow_handle(run_id)

                async def quick_ones_recorded() -> bool:  # model:1 and the two quick calls
                    return completed_activities(await handle.fetch_history()) == 3

                await workers.wait_for("every tool's start", lambda: len(workers.events("tool_start")) == 4)
                await workers.wait_for("the quick calls' completion", quick_ones_recorded)
                first.kill()
                killed_at = time.monotonic()
                workers.start("--tools", ",".join(tools))
                result = await durable.result(run_id)
                recovery = time.monotonic() - killed_at
                async with durable.worker():  # the Replayer's workflow finds the agent here
                    await replay(await handle.fetch_history())  # the recovered history is deterministic
    starts = workers.events("tool_start")
    by_tool = {name: [r for r in starts if r["tool"] == name] for name in tools}
    assert [len(by_tool[name]) for name in tools] == [1, 1, 2, 2]
    for name in ("slow_a", "slow_b"):
        assert by_tool[name][0]["key"] == by_tool[name][1]["key"]
        assert by_tool[name][0]["pid"] != by_tool[name][1]["pid"]
    assert len([body for body in server.requests if is_first_request(body)]) == 1
    assert result.output == await uninterrupted_output(tmp_path, run_id, tools)
    print(f"kill -> completion: {recovery:.2f} s")


@pytest.mark.slow
@pytest.mark.asyncio
@pytest.mark.timeout(300)
async def test_soak_runs_on_three_workers_one_killed_all_finish_no_completed_call_reran(
    tmp_path: Path, temporal: TemporalServer, client: Client
) -> None:
    """SOAK_RUNS runs on three workers, one killed midway: all finish right; no finished call ran again."""
    tools = ["fetch", "store"]
    async with LocalModelServer(AutoPolicy()) as server:
        with Workers(tmp_path, temporal, "soak", server.base_url) as workers:
            started = [workers.start("--tools", ",".join(tools), "--sleep", "0.3") for _ in range(3)]
            for worker in started:
                await workers.wait_for("a worker's start", partial(_has_output, worker))
            async with build_agent(server.base_url, Journal(tmp_path, "client"), tools) as agent:
                durable = TemporalAgent(agent, name="crash-tests", client=client, task_queue="soak")
                run_ids = [await durable.enqueue(PROMPT, run_id=f"soak-{n}") for n in range(SOAK_RUNS)]
                victim = started[0].process.pid
                await workers.wait_for(
                    "the victim's tools to start", lambda: bool(workers.events("tool_start", pid=victim))
                )
                started[0].kill()
                results = [await durable.result(run_id) for run_id in run_ids]
    for run_id, result in zip(run_ids, results, strict=True):
        assert result.output == "\n".join(f"{name}: {tool_output(name, run_id)}" for name in tools)
    # Each call's activity completed once: the start that completed it (on the killed worker
    # before the kill, or on a live one) was its only start there and its last; any earlier start
    # was on the killed worker (in flight when it died).
    starts = workers.events("tool_start")
    for run_id in run_ids:
        for key, completer in await completed_calls(client, run_id):
            mine = [r["pid"] for r in starts if r["key"] == key]
            assert mine[-1] == completer, (key, mine)
            assert mine.count(completer) == 1, (key, mine)
            assert all(pid == victim for pid in mine[:-1]), (key, mine)


def _has_output(worker: Worker) -> bool:
    return worker.out.read_text() != ""


async def completed_calls(client: Client, run_id: str) -> list[tuple[str, int]]:
    """Each completed tool activity of ``run_id``: its idempotency key and the pid that ran it."""
    history = await client.get_workflow_handle(run_id).fetch_history()
    by_id = {event.event_id: event for event in history.events}
    calls = []
    for event in history.events:
        if event.event_type != EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            continue
        done = event.activity_task_completed_event_attributes
        activity_id = by_id[done.scheduled_event_id].activity_task_scheduled_event_attributes.activity_id
        if activity_id.startswith("tool:"):
            _, turn, _, call_id = activity_id.split(":", 3)
            identity = by_id[done.started_event_id].activity_task_started_event_attributes.identity
            calls.append((f"{run_id}:{turn}:{call_id}", int(identity.split("@")[0])))
    return calls
