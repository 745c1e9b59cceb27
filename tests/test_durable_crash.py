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
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agent.durable.dbos import DBOSRuns
from agent.localmodel import AutoPolicy, Item, LocalModelServer
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


async def wait_for(what: str, condition: Callable[[], bool], workers: Workers, *alive: Worker) -> None:
    """Poll ``condition`` until it holds; fail after ``DEADLINE`` or if a worker in ``alive`` exits."""
    deadline = time.monotonic() + DEADLINE
    while not condition():
        exited = [worker for worker in alive if worker.process.poll() is not None]
        if exited or time.monotonic() > deadline:
            why = "a worker exited" if exited else f"not within {DEADLINE} s"
            pytest.fail(f"waiting for {what}: {why}\n{workers.describe()}")
        await asyncio.sleep(0.02)


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


def rounds(body: Item) -> int:
    """How many rounds of tool outputs a request carries (0: it is the run's first request)."""
    items = body["input"] if isinstance(body["input"], list) else []
    return sum(1 for item in items if item.get("type") == "function_call_output")


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

    first_requests = [body for body in server.requests if rounds(body) == 0]
    assert len(first_requests) == 1
    assert len(server.requests) == 2
    assert result == {"output": await uninterrupted_output(tmp_path, run_id, ["step"]), "status": "completed"}


# ---------------------------------------------------------------- 2. killed while four tools run


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
    run_id = "crash-in-tools"
    tools = ["quick_a", "quick_b", "slow_a", "slow_b"]
    run = ["--tools", ",".join(tools), "--run-id", run_id, "--prompt", PROMPT]
    restart_id = "worker-a" if recovery == "same-executor" else "worker-b"
    async with LocalModelServer(AutoPolicy()) as server, DBOSRuns(database_url, name=APP_NAME) as runs:
        with Workers(tmp_path, database_url, server.base_url, journal_dir) as workers:
            first = workers.start("worker-a", *run, "--hold", "slow_a,slow_b")

            async def two_checkpointed() -> bool:
                info = await runs.show(run_id)
                return info is not None and info.tool_calls == 2

            await wait_for(
                "both slow tools' starts", lambda: len(events(journal_dir, "tool_start")) == 4, workers, first
            )
            deadline = time.monotonic() + DEADLINE
            while not await two_checkpointed():  # the quick calls' steps are in the database
                assert time.monotonic() < deadline, workers.describe()
                await asyncio.sleep(0.02)
            first.kill()
            restarted = workers.start(restart_id, *run)
            result = await result_line(restarted, workers)

    for name in ["quick_a", "quick_b"]:
        assert [r["pid"] for r in events(journal_dir, "tool_start", tool=name)] == [first.pid]
        assert [r["pid"] for r in events(journal_dir, "tool_end", tool=name)] == [first.pid]
    for name in ["slow_a", "slow_b"]:
        starts = events(journal_dir, "tool_start", tool=name)
        assert [r["pid"] for r in starts] == [first.pid, restarted.pid]
        assert starts[0]["key"] == starts[1]["key"]
        assert starts[0]["key"].startswith(f"{run_id}:1:call_")
        assert [r["pid"] for r in events(journal_dir, "tool_end", tool=name)] == [restarted.pid]
    resumed = events(journal_dir, "run_resumed", pid=restarted.pid)
    assert [(r["turns_done"], r["calls_done"]) for r in resumed] == [(1, 2)]
    assert result == {"output": expected_output(run_id, tools), "status": "completed"}
