"""Durable runs on DBOS: throughput of two workers, and the time from a kill to the recovered result.

Workers are ``python -m tests.durable_app`` subprocesses (the crash tests' worker: an agent with
one tool ``work`` that returns at once, a ``DBOSAgent`` serving the queue), the local model server
(``AutoPolicy``, no delay) runs in this process, SQLite is a file in a temporary directory and
PostgreSQL a throwaway server (``tests/_postgres.py``, from the dev extras' binaries). A run is
two model requests and one tool call: three checkpointed steps.

- **runs/s**: two workers serve; ``--runs`` runs are enqueued through ``DBOSRuns`` (a client in
  this process); from before the first enqueue to the last run's end (the workers' journal).
- **kill → recovered (sweeper)**: a third process runs one run itself and is killed (SIGKILL) as
  its tool starts; a live worker's sweeper recovers the run. Time from the kill to the run's end
  on that worker.
- **kill → recovered (restart)**: the same, but nobody sweeps: a new process with the dead one's
  executor id is started at once and DBOS recovers the run at launch; process start included.

Each kill figure is the median of ``--kills`` kills. The workers use ``DBOSAgent``'s defaults for
the queue's poll interval (0.2 s) and the heartbeat/sweep interval (2 s) unless told otherwise.
A figure that did not happen within ``--deadline`` seconds shows as ``timeout``.

Run (about two and a half minutes on a busy two-core machine)::

    .venv/bin/python bench/bench_durable.py
    .venv/bin/python bench/bench_durable.py --runs 100 --databases sqlite
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from _common import Table, median

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # the worker program and the PostgreSQL helper live in tests/

from agent.durable.dbos import DBOSRuns  # noqa: E402
from agent.localmodel import AutoPolicy, LocalModelServer  # noqa: E402
from tests._postgres import start_postgres  # noqa: E402
from tests.durable_app import read_journal  # noqa: E402

APP_NAME = "bench-durable"
WORKER = [sys.executable, "-m", "tests.durable_app"]


class Workers:
    """``tests.durable_app`` processes on one database; all killed (by PID) on exit."""

    def __init__(self, directory: Path, database_url: str, model_url: str, args: argparse.Namespace) -> None:
        self.journal = directory / "journal"
        self.journal.mkdir()
        self._directory = directory
        self._common = [
            *("--database", database_url, "--model-url", model_url, "--dir", str(self.journal)),
            *("--name", APP_NAME, "--tools", "work"),
            *("--poll-interval", str(args.poll_interval), "--heartbeat-interval", str(args.heartbeat)),
        ]
        self._deadline = args.deadline
        self._processes: list[subprocess.Popen[bytes]] = []

    def start(self, executor_id: str, *extra: str) -> subprocess.Popen[bytes]:
        log = self._directory / f"{executor_id}-{len(self._processes)}.log"
        with log.open("wb") as output:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.durable_app",
                    *self._common,
                    "--executor-id",
                    executor_id,
                    *extra,
                ],
                cwd=REPO,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        self._processes.append(process)
        return process

    def serve(self, count: int) -> None:
        """Start ``count`` serving workers and wait until each is ready."""
        for number in range(count):
            self.start(f"serve-{number}")
        self.wait("workers ready", lambda: len(self.events("ready")) >= count)

    def events(self, event: str, run_id: str | None = None) -> list[dict[str, object]]:
        if event == "ready":
            logs = self._directory.glob("serve-*.log")
            ready = [log for log in logs if "\nready " in "\n" + log.read_text()]
            return [{"event": "ready"} for _ in ready]
        records = read_journal(self.journal)
        return [r for r in records if r["event"] == event and run_id in (None, r["run_id"])]

    def wait(self, what: str, condition: Callable[[], bool]) -> bool:
        """Poll ``condition``; False if it did not hold within the deadline."""
        deadline = time.monotonic() + self._deadline
        while not condition():
            if time.monotonic() > deadline:
                print(f"  ({what}: not within {self._deadline} s)", file=sys.stderr)
                return False
            time.sleep(0.01)
        return True

    def close(self) -> None:
        for process in self._processes:
            if process.poll() is None:
                os.kill(process.pid, signal.SIGKILL)
            process.wait()


async def throughput(workers: Workers, database_url: str, runs: int) -> float:
    """Runs per second of the serving workers, from the first enqueue to the last run's end."""
    run_ids = [f"tput-{number}" for number in range(runs)]
    async with DBOSRuns(database_url, name=APP_NAME) as client:
        started = time.time()
        for run_id in run_ids:
            await client.enqueue(f"job {run_id}", run_id=run_id)
        for run_id in run_ids:
            await client.result(run_id)
    ended = max(float(str(r["t"])) for r in workers.events("run_end") if str(r["run_id"]) in run_ids)
    return runs / (ended - started)


def kill_to_recovered(workers: Workers, run_id: str, *, restart: bool) -> float | None:
    """Seconds from killing the worker of run ``run_id`` (as its tool starts) to the run's end."""
    executor_id = f"victim-{run_id}"
    run = ["--run-id", run_id, "--prompt", f"job {run_id}"]
    victim = workers.start(executor_id, *run, "--hold", "work")
    if not workers.wait("the tool's start", lambda: bool(workers.events("tool_start", run_id))):
        return None
    os.kill(victim.pid, signal.SIGKILL)
    killed_at = time.time()
    victim.wait()
    if restart:
        workers.start(executor_id, *run)
    if not workers.wait("the recovered run's end", lambda: bool(workers.events("run_end", run_id))):
        return None
    return float(str(workers.events("run_end", run_id)[0]["t"])) - killed_at


@contextmanager
def database(kind: str, directory: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{directory / 'runs.sqlite'}"
        return
    (directory / "postgres").mkdir()
    with start_postgres(directory / "postgres") as server:
        yield server.create_database("bench")


def measure(kind: str, args: argparse.Namespace, table: Table) -> None:
    with ExitStack() as stack:
        directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-durable-")))
        url = stack.enter_context(database(kind, directory))
        model = stack.enter_context(LocalModelServer(AutoPolicy(), max_requests=0))
        workers = Workers(directory, url, model.base_url, args)
        stack.callback(workers.close)
        # Restarts first, with no worker serving: a serving worker's sweeper would recover the run.
        restarts = [kill_to_recovered(workers, f"restart-{n}", restart=True) for n in range(args.kills)]
        workers.serve(2)
        rate = asyncio.run(throughput(workers, url, args.runs))
        sweeps = [kill_to_recovered(workers, f"sweep-{n}", restart=False) for n in range(args.kills)]
    table.add(kind, f"{rate:.1f}", _seconds(sweeps), _seconds(restarts))


def _seconds(samples: list[float | None]) -> str:
    done = [sample for sample in samples if sample is not None]
    return f"{median(done):.2f} s" if len(done) == len(samples) else "timeout"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=200, help="runs enqueued for the throughput")
    parser.add_argument("--kills", type=int, default=3, help="kills per recovery figure")
    parser.add_argument("--databases", default="sqlite,postgresql")
    parser.add_argument("--poll-interval", type=float, default=0.2, help="the queue's poll interval")
    parser.add_argument("--heartbeat", type=float, default=2.0, help="heartbeat and sweep interval")
    parser.add_argument("--deadline", type=float, default=60.0, help="seconds any one wait may take")
    args = parser.parse_args()
    table = Table("database", "runs/s, 2 workers", "kill → recovered (sweeper)", "kill → recovered (restart)")
    for kind in args.databases.split(","):
        measure(kind, args, table)
    print(table.render())


if __name__ == "__main__":
    main()
