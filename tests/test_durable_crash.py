"""Crash semantics of durable runs on DBOS, with real processes (issue 8's acceptance).

Each worker is ``python -m tests.durable_app`` in a subprocess (see that module), killed with
SIGKILL; the local model server runs in this process, so the tests count the requests it saw, and
the workers' tools write a journal of every start and end (wall-clock times, one clock for all
processes). PostgreSQL comes from the ``postgres_url`` fixture, SQLite is a file in ``tmp_path``.

A restarted worker recovers a dead run on one of two paths, both tested:

- ``same-executor``: it has the dead worker's executor id, and DBOS recovers that executor's
  pending runs when it launches;
- ``new-executor``: it has a new id, and ``DBOSAgent.run(run_id=...)`` asks the sweeper to recover
  the run, whose executor's process is gone.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest

from agent.durable.dbos import MODEL_STEP, TOOL_STEP, DBOSRuns
from agent.localmodel import AutoPolicy, Item, LocalModelServer, ResponseRequest
from tests.durable_app import Journal, build_agent, read_journal, tool_output

REPO = Path(__file__).resolve().parent.parent
PROMPT = "Do the work."
APP_NAME = "crash-tests"
DEADLINE = 30.0
"""Seconds any one awaited condition may take (a worker starts in ~2 s on an idle machine)."""
SOAK_RUNS = min(int(os.environ.get("AGENT_SOAK_RUNS", "60")), 60)


# ---------------------------------------------------------------- workers


@dataclass
class Worker:
    """One ``tests.durable_app`` process; its stdout and stderr go to files."""

    process: subprocess.Popen[bytes]
    out: Path
    err: Path
    executor_id: str

    @property
    def pid(self) -> int:
        return self.process.pid

    def stdout(self) -> str:
        return self.out.read_text()

    def kill(self) -> None:
        """SIGKILL by PID (no clean-up of any kind), then reap it."""
        if self.process.poll() is None:
            os.kill(self.pid, signal.SIGKILL)
        self.process.wait()

    def describe(self) -> str:
        tail = self.err.read_text()[-3000:]
        return f"worker {self.executor_id} (pid {self.pid}, exit {self.process.poll()}):\n{tail}"


class Workers:
    """Starts workers on one database and model server; kills every one of them on exit."""

    def __init__(self, tmp_path: Path, database_url: str, model_url: str, journal_dir: Path) -> None:
        self._tmp_path = tmp_path
        self._common = ["--database", database_url, "--model-url", model_url, "--dir", str(journal_dir)]
        self.started: list[Worker] = []

    def start(self, executor_id: str, *args: str) -> Worker:
        number = len(self.started)
        out, err = self._tmp_path / f"worker-{number}.out", self._tmp_path / f"worker-{number}.err"
        command = [sys.executable, "-m", "tests.durable_app", *self._common, "--executor-id", executor_id]
        with out.open("wb") as stdout, err.open("wb") as stderr:
            process = subprocess.Popen([*command, *args], cwd=REPO, stdout=stdout, stderr=stderr)
        worker = Worker(process, out, err, executor_id)
        self.started.append(worker)
        return worker

    def describe(self) -> str:
        return "\n".join(worker.describe() for worker in self.started)

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc_info: object) -> None:
        for worker in self.started:
            worker.kill()


async def wait_for(
    what: str, condition: Callable[[], bool | Awaitable[bool]], workers: Workers, *alive: Worker
) -> None:
    """Poll ``condition`` until it holds; fail after ``DEADLINE`` or if a worker in ``alive`` exits."""
    deadline = time.monotonic() + DEADLINE
    while not await _holds(condition):
        exited = [worker for worker in alive if worker.process.poll() is not None]
        if exited or time.monotonic() > deadline:
            why = "a worker exited" if exited else f"not within {DEADLINE} s"
            pytest.fail(f"waiting for {what}: {why}\n{workers.describe()}")
        await asyncio.sleep(0.02)


async def _holds(condition: Callable[[], bool | Awaitable[bool]]) -> bool:
    outcome = condition()
    return await outcome if inspect.isawaitable(outcome) else outcome


async def result_line(worker: Worker, workers: Workers) -> dict[str, Any]:
    """The run's result, as the worker prints it when its run completes."""
    await wait_for("the run's result", lambda: worker.stdout().endswith("\n"), workers, worker)
    result: dict[str, Any] = json.loads(worker.stdout())
    return result


# ---------------------------------------------------------------- journal and requests


def events(journal_dir: Path, event: str, **match: Any) -> list[dict[str, Any]]:
    """The journal records of ``event`` whose fields equal ``match``."""
    records = read_journal(journal_dir)
    return [r for r in records if r["event"] == event and all(r.get(k) == v for k, v in match.items())]


def is_first_request(body: Item) -> bool:
    """Whether a request is a run's first (it carries no tool output yet)."""
    items = body["input"] if isinstance(body["input"], list) else []
    return not any(item.get("type") == "function_call_output" for item in items)


def expected_output(run_id: str, tools: list[str]) -> str:
    """What the AutoPolicy answers once every tool of the run returned."""
    return "\n".join(f"{name}: {tool_output(name, run_id)}" for name in tools)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh durable database: a SQLite file, or a new database on the session's PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'runs.sqlite'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def journal_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "journal"
    directory.mkdir()
    return directory


async def uninterrupted_output(tmp_path: Path, run_id: str, tools: list[str]) -> str | None:
    """The output of the same run in process, with no crash, on its own model server."""
    directory = tmp_path / "reference"
    directory.mkdir()
    async with LocalModelServer(AutoPolicy()) as server:
        agent = build_agent(server.base_url, Journal(directory, "reference"), tools)
        async with agent:
            result = await agent.run(PROMPT, run_id=run_id)
    return result.output


# ---------------------------------------------------------------- 1. killed after turn 1's request


@pytest.mark.asyncio
@pytest.mark.parametrize("recovery", ["same-executor", "new-executor"])
async def test_kill_after_first_model_step_restart_completes_run_without_repeating_it(
    tmp_path: Path, database_url: str, journal_dir: Path, recovery: str
) -> None:
    """Killed after turn 1's request was checkpointed: a restart finishes the run, not re-sending it."""
    run_id = "crash-after-turn-1"
    run = ["--tools", "step", "--run-id", run_id, "--prompt", PROMPT]
    restart_id = "worker-a" if recovery == "same-executor" else "worker-b"
    async with LocalModelServer(AutoPolicy()) as server, DBOSRuns(database_url, name=APP_NAME) as runs:
        with Workers(tmp_path, database_url, server.base_url, journal_dir) as workers:
            first = workers.start("worker-a", *run, "--hold", "step")
            # The tool starts only once turn 1's model step returned, i.e. was checkpointed.
            await wait_for(
                "the tool's start", lambda: bool(events(journal_dir, "tool_start")), workers, first
            )
            first.kill()
            info = await runs.show(run_id)
            assert info is not None
            assert (info.turns, info.tool_calls) == (1, 0)
            restarted = workers.start(restart_id, *run)
            result = await result_line(restarted, workers)

    first_requests = [body for body in server.requests if is_first_request(body)]
    assert len(first_requests) == 1
    assert len(server.requests) == 2
    assert result == {"output": await uninterrupted_output(tmp_path, run_id, ["step"]), "status": "completed"}


# ---------------------------------------------------------------- 2. killed while four tools run


@dataclass
class ToolCrash:
    """What a run killed during its first turn's tools, then restarted, left behind."""

    first: Worker
    restarted: Worker
    result: dict[str, Any]
    requests: list[Item]


async def crash_during_tools(
    tmp_path: Path, database_url: str, journal_dir: Path, tools: list[str], held: list[str], restart_id: str
) -> ToolCrash:
    """Run ``tools`` in one turn; kill the worker once all started and those not ``held`` are
    checkpointed; restart it (executor ``restart_id``) with nothing held; return the outcome."""
    run_id = "crash-in-tools"
    run = ["--tools", ",".join(tools), "--run-id", run_id, "--prompt", PROMPT]
    async with LocalModelServer(AutoPolicy()) as server, DBOSRuns(database_url, name=APP_NAME) as runs:
        with Workers(tmp_path, database_url, server.base_url, journal_dir) as workers:
            first = workers.start("worker-a", *run, "--hold", ",".join(held))

            async def checkpointed() -> bool:
                info = await runs.show(run_id)
                return info is not None and info.tool_calls == len(tools) - len(held)

            def started() -> bool:
                return len(events(journal_dir, "tool_start")) == len(tools)

            await wait_for("every tool's start", started, workers, first)
            await wait_for("the finished calls' checkpoints", checkpointed, workers, first)
            first.kill()
            restarted = workers.start(restart_id, *run)
            result = await result_line(restarted, workers)
    return ToolCrash(first, restarted, result, server.requests)


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("database_url", "recovery"),
    [("sqlite", "same-executor"), ("postgresql", "new-executor")],
    indirect=["database_url"],
)
async def test_kill_during_four_tools_reruns_only_the_unfinished_ones_with_their_keys(
    tmp_path: Path, database_url: str, journal_dir: Path, recovery: str
) -> None:
    """Killed with two calls done and two in flight: only those in flight run again, same keys."""
    tools = ["quick_a", "quick_b", "slow_a", "slow_b"]
    restart_id = "worker-a" if recovery == "same-executor" else "worker-b"
    crash = await crash_during_tools(tmp_path, database_url, journal_dir, tools, tools[2:], restart_id)

    first, restarted = crash.first.pid, crash.restarted.pid
    for name in ["quick_a", "quick_b"]:
        assert [r["pid"] for r in events(journal_dir, "tool_start", tool=name)] == [first]
        assert [r["pid"] for r in events(journal_dir, "tool_end", tool=name)] == [first]
    for name in ["slow_a", "slow_b"]:
        starts = events(journal_dir, "tool_start", tool=name)
        assert [r["pid"] for r in starts] == [first, restarted]
        assert starts[0]["key"] == starts[1]["key"]
        assert starts[0]["key"].startswith("crash-in-tools:1:call_")
        assert [r["pid"] for r in events(journal_dir, "tool_end", tool=name)] == [restarted]
    assert [is_first_request(body) for body in crash.requests] == [True, False]
    assert crash.result == {"output": expected_output("crash-in-tools", tools), "status": "completed"}


@pytest.mark.asyncio
async def test_run_resumed_counts_every_checkpointed_call(tmp_path: Path, journal_dir: Path) -> None:
    """``RunResumed.calls_done`` counts all checkpointed calls, also those replayed after a live one began."""
    database_url = f"sqlite:///{tmp_path / 'runs.sqlite'}"
    tools = ["slow", "quick_a", "quick_b"]  # the live call first: its body starts before the replays end
    crash = await crash_during_tools(tmp_path, database_url, journal_dir, tools, ["slow"], "worker-a")

    resumed = events(journal_dir, "run_resumed", pid=crash.restarted.pid)
    assert [(r["turns_done"], r["calls_done"]) for r in resumed] == [(1, 2)]


# ---------------------------------------------------------------- 3. three workers, one killed


class TimedPolicy:
    """:class:`AutoPolicy`, noting when it answered which run's request of which turn."""

    def __init__(self) -> None:
        self._inner = AutoPolicy()
        self.answered: list[tuple[float, str, int]] = []
        """``(wall time, prompt, turn)`` of every request, turn counted from 1."""

    def respond(self, request: ResponseRequest) -> list[Item]:
        self.answered.append((time.time(), request.last_user_text() or "", request.rounds + 1))
        return self._inner.respond(request)


def open_calls(records: list[dict[str, Any]], pid: int) -> set[str]:
    """The keys of the tool calls ``pid`` started and has not finished."""
    started = {r["key"] for r in records if r["event"] == "tool_start" and r["pid"] == pid}
    return started - {r["key"] for r in records if r["event"] == "tool_end" and r["pid"] == pid}


def max_concurrent_runs(records: list[dict[str, Any]], killed_pid: int, killed_at: float) -> int:
    """The most runs in flight at once, a run being in flight on a worker from its first to its last event.

    The first event is ``run_start`` or ``run_resumed``, the last ``run_end``; a run the killed
    worker had not finished was in flight there until the kill. Each interval lies inside the time
    the run held a slot of the queue, so the figure is at most the number of slots taken at once.
    """
    begins: dict[tuple[int, str], float] = {}
    ends: dict[tuple[int, str], float] = {}
    for r in records:
        where = (r["pid"], r["run_id"])
        if r["event"] in ("run_start", "run_resumed"):
            begins.setdefault(where, r["t"])
        elif r["event"] == "run_end":
            ends[where] = r["t"]
    edges: list[tuple[float, int]] = []
    for where, begin in begins.items():
        end = ends.get(where, killed_at if where[0] == killed_pid else None)
        assert end is not None, f"run {where[1]} began on pid {where[0]} and never ended there"
        edges += [(begin, 1), (end, -1)]
    in_flight = most = 0
    for _, change in sorted(edges):  # at equal times an end (-1) sorts before a begin
        in_flight += change
        most = max(most, in_flight)
    return most


def runs_again_after_checkpoint(
    steps: dict[str, list[Any]], records: list[dict[str, Any]], answered: list[tuple[float, str, int]]
) -> list[str]:
    """Steps that started again after their checkpoint was written (none may).

    A step's checkpoint is written once, when it first completes (``completed_at_epoch_ms``, wall
    time); a tool's start or a model request later than that would be the step running twice.
    """
    late = []
    for run_id, run_steps in steps.items():
        for step in run_steps:
            done = step["completed_at_epoch_ms"] / 1000 + 0.001
            output = step["output"]
            if step["function_name"] == TOOL_STEP:
                key = f"{run_id}:{output['turn']}:{output['call_id']}"
                starts = [r["t"] for r in records if r["event"] == "tool_start" and r.get("key") == key]
                late += [f"tool call {key}" for t in starts if t > done]
            elif step["function_name"] == MODEL_STEP:
                sent = [
                    t for t, prompt, turn in answered if prompt == f"job {run_id}" and turn == output["turn"]
                ]
                late += [f"model request {run_id}:{output['turn']}" for t in sent if t > done]
    return late


async def wait_until_finished(runs: DBOSRuns, run_ids: list[str], workers: Workers) -> None:
    """Poll the runs' statuses until none is pending; fail after a deadline.

    Not ``runs.result()``: a wait for a run that is never recovered must end with the test.
    """
    deadline = time.monotonic() + 4 * DEADLINE
    while True:
        statuses = await runs.client.list_workflows_async(workflow_ids=run_ids, load_input=False)
        unfinished = sorted(s.workflow_id for s in statuses if s.status in ("ENQUEUED", "PENDING"))
        if not unfinished:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"runs never finished: {unfinished}\n{workers.describe()}")
        await asyncio.sleep(0.1)


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.asyncio
async def test_three_workers_one_killed_every_run_finishes_and_no_step_runs_twice(
    tmp_path: Path, postgres_url: str, journal_dir: Path
) -> None:
    """Three workers, one killed: all runs end right, no step twice; the limit of 4 reached, not passed."""
    policy = TimedPolicy()
    serve = ["--tools", "work", "--sleep", "0.3", "--global-concurrency", "4"]
    run_ids = [f"soak-{number:03d}" for number in range(SOAK_RUNS)]
    async with LocalModelServer(policy) as server, DBOSRuns(postgres_url, name=APP_NAME) as runs:
        with Workers(tmp_path, postgres_url, server.base_url, journal_dir) as workers:
            pool = [workers.start(f"soak-worker-{number}", *serve) for number in range(3)]
            await wait_for("ready", lambda: all(w.stdout().startswith("ready") for w in pool), workers, *pool)
            for run_id in run_ids:
                await runs.enqueue(f"job {run_id}", run_id=run_id)

            def victim() -> Worker | None:
                """A worker with a tool call in flight, once a third of the runs ended."""
                records = read_journal(journal_dir)
                if sum(r["event"] == "run_end" for r in records) < SOAK_RUNS // 3:
                    return None
                return next((worker for worker in pool if open_calls(records, worker.pid)), None)

            await wait_for("a third of the runs done", lambda: victim() is not None, workers, *pool)
            killed = victim()
            assert killed is not None
            killed.kill()
            killed_at = time.time()
            await wait_until_finished(runs, run_ids, workers)
            outputs = {run_id: (await runs.result(run_id)).output for run_id in run_ids}
            steps = {run_id: await runs.client.list_workflow_steps_async(run_id) for run_id in run_ids}
            statuses = await runs.client.list_workflows_async(workflow_ids=run_ids)

    records = read_journal(journal_dir)
    assert outputs == {run_id: expected_output(run_id, ["work"]) for run_id in run_ids}
    assert runs_again_after_checkpoint(steps, records, policy.answered) == []
    left_by_killed = {r["run_id"] for r in records if r["pid"] == killed.pid} - {
        r["run_id"] for r in records if r["pid"] == killed.pid and r["event"] == "run_end"
    }
    assert left_by_killed, "the killed worker had a run in flight"
    # Nobody restarted the killed executor and a DBOSRuns client recovers nothing: a run it left
    # can have finished on a live worker only after that worker's sweeper re-enqueued it.
    finished_by = {status.workflow_id: status.executor_id for status in statuses}
    live = {worker.executor_id for worker in pool if worker is not killed}
    assert {finished_by[run_id] for run_id in left_by_killed} <= live
    assert max_concurrent_runs(records, killed.pid, killed_at) == 4


# ---------------------------------------------------------------- found on the way


def threads_awaiting_a_result() -> list[str]:
    """Threads of this process that are inside DBOS's blocking wait for a workflow's result."""
    waiting = []
    for thread_id, frame in sys._current_frames().items():
        stack = traceback.extract_stack(frame)
        if any(entry.name == "await_workflow_result" for entry in stack):
            waiting.append(str(thread_id))
    return waiting


@pytest.mark.asyncio
async def test_cancelled_result_wait_leaves_no_thread_waiting(tmp_path: Path) -> None:
    """A cancelled ``DBOSRuns.result()`` stops waiting: no thread polls on (it would block the exit)."""
    async with DBOSRuns(f"sqlite:///{tmp_path / 'runs.sqlite'}", name=APP_NAME) as runs:
        run_id = await runs.enqueue("no worker serves this")
        with anyio.move_on_after(0.3):
            await runs.result(run_id)
        deadline = time.monotonic() + 2.0
        while threads_awaiting_a_result() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        left = threads_awaiting_a_result()
        # Cancelled, the run is done: a thread still waiting for it (the bug) ends, so does pytest.
        await runs.client.cancel_workflow_async(run_id)
    assert left == []
