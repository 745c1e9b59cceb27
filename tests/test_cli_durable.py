"""The durable commands: ``agent run --durable``, ``agent worker`` and ``agent runs`` (on DBOS)."""

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
from pathlib import Path

import anyio
import pytest

from agent import RunResult, tool
from agent.durable import _sweeper
from agent.durable.dbos import DBOSRuns
from agent.localmodel import AutoPolicy, LocalModelServer
from tests._support import REPO_ROOT
from tests.test_cli import AGENT_SCRIPT, NO_OPENAI, against, assert_one_line_error, invoke, process_env


@tool
async def held(text: str) -> str:
    """Wait until the test releases this call (files under $CLI_DURABLE_GATE count the starts)."""
    gate = Path(os.environ["CLI_DURABLE_GATE"])
    (gate / f"started-{uuid.uuid4().hex}").touch()
    while not (gate / "release").exists():
        await anyio.sleep(0.02)
    return f"released {text}"


TOOLS = "tests.test_cli:REGISTRY"
HELD = "tests.test_cli_durable:held"
SWEEPER_IS_A_PLACEHOLDER = "TEMPORARY stub" in (_sweeper.__doc__ or "")
"""Resuming a crashed process's run needs the sweeper (another branch): skipped until it is merged."""
LOCAL = {**NO_OPENAI, "AGENT_DURABLE_URL": None}
READY = " ready on "
WORKER_START_TIMEOUT = 30.0


DBOS_HANDLER = "__dbos_console_log_handler__"


class _CurrentStderr:
    """Whatever ``sys.stderr`` is at the time of writing (the CLI runner swaps it per command)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


@pytest.fixture(autouse=True, scope="module")
def _dbos_logs_to_current_stderr() -> Iterator[None]:
    """DBOS's log handler would keep the stderr of the first command run in-process (the CLI
    runner swaps it per command, then closes it): make it write to the current one."""
    logger = logging.getLogger("dbos")
    # Only DBOS's own console handler: pytest's capture handlers are StreamHandlers too.
    handlers = [h for h in logger.handlers if h.name == DBOS_HANDLER and isinstance(h, logging.StreamHandler)]
    added = None if handlers else logging.StreamHandler(_CurrentStderr())
    if added is not None:
        added.name = DBOS_HANDLER  # DBOS then adds none of its own
        logger.addHandler(added)
        handlers = [added]
    streams = [h.stream for h in handlers]
    for handler in handlers:
        handler.stream = _CurrentStderr()
    yield
    for handler, stream in zip(handlers, streams, strict=True):
        handler.stream = stream
    if added is not None:
        logger.removeHandler(added)


@pytest.fixture
def url(tmp_path: Path) -> str:
    """A SQLite database no worker has initialised."""
    return f"sqlite:///{tmp_path / 'runs.sqlite'}"


@pytest.fixture(scope="module")
def plain_output() -> str:
    """What ``agent run hello`` prints on the embedded local model with this module's tools."""
    result = invoke("run", "hello", "--tools", TOOLS, env=LOCAL)
    assert result.exit_code == 0, result.output
    return result.stdout


@contextmanager
def worker_process(url: str, log: Path, *args: str) -> Iterator[subprocess.Popen[bytes]]:
    """``agent worker`` as a real process, yielded once it has printed its ready line."""
    with log.open("wb") as stderr:
        command = [str(AGENT_SCRIPT), "worker", "--durable", url, *args]
        process = subprocess.Popen(command, env=process_env(), cwd=REPO_ROOT, stdout=stderr, stderr=stderr)
        try:
            wait_for_ready(process, log)
            yield process
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=15)


def wait_for_ready(process: subprocess.Popen[bytes], log: Path) -> None:
    """Poll the worker's stderr for its ready line; fail if it exits or time runs out."""
    deadline = time.monotonic() + WORKER_START_TIMEOUT
    while READY not in log.read_text():
        if process.poll() is not None:
            pytest.fail(f"the worker exited with {process.returncode}: {log.read_text()}")
        if time.monotonic() > deadline:
            pytest.fail(f"no ready line within {WORKER_START_TIMEOUT} s: {log.read_text()}")
        time.sleep(0.05)


def stop(process: subprocess.Popen[bytes], signum: signal.Signals = signal.SIGTERM) -> int:
    """Send ``signum`` to the worker (by PID) and return its exit code."""
    process.send_signal(signum)
    return process.wait(timeout=20)


def result_of(url: str, run_id: str) -> RunResult:
    """Wait (with a deadline) for a durable run's result, from a client."""

    async def wait() -> RunResult:
        with anyio.fail_after(30):
            async with DBOSRuns(url) as runs:
                return await runs.result(run_id)

    return anyio.run(wait)


def test_durable_run_prints_what_an_in_process_run_prints(url: str, plain_output: str) -> None:
    """``agent run --durable`` on the local model prints the same answer as ``agent run``."""
    result = invoke("run", "hello", "--tools", TOOLS, "--durable", url, env=LOCAL)
    assert result.exit_code == 0, result.output
    assert plain_output == result.stdout
    assert "durable run " in result.stderr


def test_durable_run_on_postgres_prints_what_an_in_process_run_prints(
    postgres_url: str, plain_output: str
) -> None:
    """The same on PostgreSQL, and ``agent runs`` lists the run there as completed."""
    result = invoke(
        "run", "hello", "--tools", TOOLS, "--durable", postgres_url, "--run-id", "pg-1", env=LOCAL
    )
    assert result.exit_code == 0, result.output
    assert plain_output == result.stdout
    listed = invoke("runs", "--durable", postgres_url, "--json", env=LOCAL)
    assert [(r["run_id"], r["status"]) for r in json.loads(listed.stdout)] == [("pg-1", "completed")]


def test_run_again_with_its_run_id_returns_the_recorded_result(url: str) -> None:
    """A second ``--run-id`` of a finished run prints its result without asking the model again."""
    with LocalModelServer(AutoPolicy()) as server:
        env = {**against(server), "AGENT_DURABLE_URL": url}
        first = invoke("run", "hello", "--tools", TOOLS, "--run-id", "r-1", "--json", env=env)
        requests = len(server.requests)
        again = invoke("run", "ignored", "--tools", TOOLS, "--run-id", "r-1", "--json", env=env)
    assert (first.exit_code, again.exit_code) == (0, 0), first.output + again.output
    assert requests == len(server.requests)
    assert json.loads(first.stdout)["output"] == json.loads(again.stdout)["output"]


def test_enqueue_prints_the_run_id_and_runs_lists_it_enqueued(url: str) -> None:
    """``--enqueue`` works on a fresh database with no worker; the run waits, listed as enqueued."""
    enqueued = invoke("run", "hello", "--durable", url, "--enqueue", "--run-id", "q-1", env=LOCAL)
    assert enqueued.exit_code == 0, enqueued.output
    assert enqueued.stdout == "q-1\n"
    listed = invoke("runs", "list", "--durable", url, env=LOCAL)
    assert listed.exit_code == 0, listed.output
    header, row = listed.stdout.splitlines()
    assert header.split() == ["RUN", "ID", "STATUS", "TURNS", "TOOL", "CALLS", "CREATED"]
    assert row.split()[:4] == ["q-1", "enqueued", "0", "0"]


def test_runs_started_from_python_are_listed_under_the_shared_default_name(url: str) -> None:
    """A run enqueued with ``DBOSRuns(url)`` (no name) is seen by ``agent runs`` (no --name)."""

    async def enqueue() -> str:
        async with DBOSRuns(url) as runs:
            return await runs.enqueue("hello", run_id="py-1")

    anyio.run(enqueue)
    listed = invoke("runs", "--json", env={**LOCAL, "AGENT_DURABLE_URL": url})
    assert [r["run_id"] for r in json.loads(listed.stdout)] == ["py-1"]
    other = invoke("runs", "--json", "--name", "other-app", env={**LOCAL, "AGENT_DURABLE_URL": url})
    assert json.loads(other.stdout) == []


@pytest.mark.timeout(120)
def test_worker_process_runs_an_enqueued_run(url: str, tmp_path: Path, plain_output: str) -> None:
    """An enqueued run is run by ``agent worker``; ``runs show`` reports it completed with its output."""
    invoke("run", "hello", "--durable", url, "--enqueue", "--run-id", "w-1", env=LOCAL)
    with worker_process(url, tmp_path / "worker.log", "--tools", TOOLS) as worker:
        result = result_of(url, "w-1")
        code = stop(worker)
    assert code == 0, (tmp_path / "worker.log").read_text()
    assert plain_output == result.output + "\n"
    shown = invoke("runs", "show", "w-1", "--durable", url, "--json", env=LOCAL)
    info = json.loads(shown.stdout)
    assert ("completed", result.output, 2, 2) == (
        info["status"],
        info["output"],
        info["turns"],
        info["tool_calls"],
    )
    text = invoke("runs", "show", "w-1", "--durable", url, env=LOCAL).stdout
    assert "status:     completed" in text.splitlines()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_worker_exits_cleanly_on_a_signal(url: str, tmp_path: Path, signum: signal.Signals) -> None:
    """Ctrl-C or SIGTERM closes the worker: exit code 0, one line saying so, no traceback."""
    log = tmp_path / "worker.log"
    with worker_process(url, log, "--concurrency", "2", "--global-concurrency", "4") as worker:
        code = stop(worker, signum)
    text = log.read_text()
    assert code == 0, text
    assert f"worker stopped ({signum.name})" in text
    assert "Traceback" not in text


def test_runs_show_of_an_unknown_id_fails_with_one_line(url: str) -> None:
    """``agent runs show`` of an id that does not exist exits 1 with one error line."""
    result = invoke("runs", "show", "nope", "--durable", url, env=LOCAL)
    assert_one_line_error(result, 1, mentions="no run 'nope'")


def test_unreachable_database_fails_with_one_line_without_its_password() -> None:
    """A database that refuses the connection: exit 1, one line, the password never shown."""
    result = invoke("runs", "--durable", "postgresql://me:s3cret@127.0.0.1:1/db", env=LOCAL)
    assert_one_line_error(result, 1, mentions="postgresql://me:***@127.0.0.1:1/db")
    assert "s3cret" not in result.output


@pytest.mark.parametrize(
    ("args", "mentions"),
    [
        (["run", "hi", "--enqueue"], "need --durable"),
        (["run", "hi", "--run-id", "x"], "need --durable"),
        (["worker"], "no database for durable runs"),
        (["runs"], "no database for durable runs"),
        (["runs", "show", "--durable", "sqlite:///x.db"], "usage: agent runs"),
        (["runs", "drop", "--durable", "sqlite:///x.db"], "usage: agent runs"),
        (["runs", "--durable", "mysql://me@127.0.0.1/db"], "sqlite:///path or postgresql://"),
        (["runs", "--durable", "sqlite:///x.db", "--name", "No"], "application name"),
        (["worker", "--durable", "sqlite:///x.db", "--name", "No"], "application name"),
    ],
)
def test_durable_caller_mistakes_exit_2_with_one_line(args: list[str], mentions: str) -> None:
    """No or a bad database URL, --run-id/--enqueue without one, a bad name or action: exit 2."""
    assert_one_line_error(invoke(*args, env=LOCAL), 2, mentions=mentions)


def test_the_command_line_imports_dbos_only_for_durable_commands() -> None:
    """``import agent._cli`` (every command) does not pay for importing DBOS."""
    code = "import sys, agent._cli; print('dbos' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30
    )
    assert done.stdout.strip() == "False"


@pytest.mark.skipif(SWEEPER_IS_A_PLACEHOLDER, reason="needs the sweeper to recover a dead process's run")
@pytest.mark.timeout(120)
def test_run_again_with_its_run_id_after_a_crash_resumes_it(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kill -9 while a tool runs; ``agent run --run-id`` again finishes the run, the tool run twice."""
    monkeypatch.setenv("CLI_DURABLE_GATE", str(tmp_path))
    args = ["run", "hello", "--tools", HELD, "--durable", url, "--run-id", "c-1"]
    with (tmp_path / "crashed.log").open("wb") as log:
        process = subprocess.Popen(
            [str(AGENT_SCRIPT), *args], env=process_env(), cwd=REPO_ROOT, stdout=log, stderr=log
        )
        try:
            deadline = time.monotonic() + WORKER_START_TIMEOUT
            while not list(tmp_path.glob("started-*")) and time.monotonic() < deadline:
                time.sleep(0.02)
        finally:
            process.kill()
            process.wait(timeout=15)
    assert len(list(tmp_path.glob("started-*"))) == 1, (tmp_path / "crashed.log").read_text()
    (tmp_path / "release").touch()
    resumed = invoke(*args, "--json", env=LOCAL)
    assert resumed.exit_code == 0, resumed.output
    assert json.loads(resumed.stdout)["output"] == "held: released example"
    assert len(list(tmp_path.glob("started-*"))) == 2
