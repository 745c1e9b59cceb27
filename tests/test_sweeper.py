"""The sweeper: heartbeats, dead-executor detection, exactly-once recovery of a dead worker's runs.

Dead executors are real: this file, run as a script, is a DBOS worker with its own executor id that starts
runs of `hold` (they wait for a gate file, so they stay PENDING) and is then killed with SIGKILL, or kept
alive without beating. The test process is the live worker "live-1" that finishes the recovered runs.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import inspect
import logging
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import pytest
import pytest_asyncio
import sqlalchemy as sa
import structlog
from dbos import DBOS, DBOSConfig, SetWorkflowID, WorkflowHandleAsync
from dbos._dbos import _get_dbos_instance
from dbos._serialization import DBOSPortableJSONSerializer
from dbos._sys_db import SystemDatabase
from dbos._utils import INTERNAL_QUEUE_NAME
from structlog.testing import CapturingLogger

from agent._errors import UsageError
from agent.durable._sweeper import WORKERS, Sweeper

APP = "sweeper-test"
VERSION = "sweeper-test-1"
LIVE = "live-1"
NEVER = 3600.0  # a dead_after no test waits for: only the same-host fast path can declare a death


async def _wait_for_gate(gate: str) -> int:
    while not os.path.exists(gate):
        await asyncio.sleep(0.02)
    return os.getpid()


_gate_step = DBOS.step(name="sweeper_test.gate")(_wait_for_gate)


async def _hold(gate: str) -> int:
    return await _gate_step(gate)


hold = DBOS.workflow(name="sweeper_test.hold")(_hold)


def _config(url: str, executor_id: str) -> DBOSConfig:
    return {
        "name": APP,
        "system_database_url": url,
        "executor_id": executor_id,
        "application_version": VERSION,
        "serializer": DBOSPortableJSONSerializer(),
        "log_level": "ERROR",
    }


# ---- the other worker, run as a script ---------------------------------------------------------------


async def _worker_main(url: str, executor_id: str, gate: str, ids: list[str], beat: bool) -> None:
    DBOS(config=_config(url, executor_id))
    DBOS.launch()
    if beat:
        await Sweeper(url, APP, executor_id).beat()  # never closed: the row must outlive this process
    for workflow_id in ids:
        with SetWorkflowID(workflow_id):
            await DBOS.start_workflow_async(hold, gate)
    print("READY", flush=True)
    await asyncio.sleep(3600)


class Worker:
    """A DBOS worker in a child process whose runs of `hold` are PENDING on `executor_id`."""

    def __init__(self, url: str, executor_id: str, gate: Path, ids: list[str], *, beat: bool) -> None:
        self.log = gate.parent / f"{executor_id}.log"
        arguments = [url, executor_id, str(gate), ",".join(ids), "beat" if beat else "quiet"]
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, __file__, *arguments], stdout=subprocess.PIPE, stderr=log
            )

    async def ready(self) -> None:
        assert self.process.stdout is not None
        line = await anyio.to_thread.run_sync(self.process.stdout.readline)
        assert line == b"READY\n", self.log.read_text()

    def kill(self) -> None:
        """SIGKILL, and reap it (a zombie still has a PID)."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        assert self.process.stdout is not None
        self.process.stdout.close()


# ---- fixtures ----------------------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.slow)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """DBOS's system database: a SQLite file, or a fresh database on the session's PostgreSQL (slow)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'runs.sqlite'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A SQLite file for the tests that run on SQLite only."""
    return f"sqlite:///{tmp_path / 'runs.sqlite'}"


@pytest_asyncio.fixture
async def live(database_url: str) -> AsyncIterator[str]:
    """DBOS launched in this process as executor "live-1"; yields the database URL."""
    DBOS(config=_config(database_url, LIVE))
    DBOS.launch()
    try:
        yield database_url
    finally:
        DBOS.destroy()


@pytest_asyncio.fixture
async def live_sqlite(sqlite_url: str) -> AsyncIterator[str]:
    """`live` on SQLite only."""
    DBOS(config=_config(sqlite_url, LIVE))
    DBOS.launch()
    try:
        yield sqlite_url
    finally:
        DBOS.destroy()


@pytest.fixture
def gate(tmp_path: Path) -> Iterator[Path]:
    """The file whose existence lets every `hold` run finish; created at teardown so nothing hangs."""
    path = tmp_path / "gate"
    yield path
    path.touch()


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    """Child workers started by a test; killed at teardown whatever happened."""
    started: list[Worker] = []
    yield started
    for worker in started:
        if worker.process.poll() is None:
            worker.kill()


def _ids(prefix: str, count: int) -> list[str]:
    return [f"{prefix}-{n}" for n in range(count)]


async def _start_worker(
    workers: list[Worker], url: str, executor_id: str, gate: Path, ids: list[str], *, beat: bool
) -> Worker:
    worker = Worker(url, executor_id, gate, ids, beat=beat)
    workers.append(worker)
    await worker.ready()
    return worker


async def _results(ids: list[str]) -> dict[str, object]:
    handles: list[WorkflowHandleAsync[object]] = [await DBOS.retrieve_workflow_async(i) for i in ids]
    with anyio.fail_after(30):
        return {i: await h.get_result(polling_interval_sec=0.05) for i, h in zip(ids, handles, strict=True)}


def _beat_age(url: str, executor_id: str) -> float:
    """Seconds since `executor_id`'s last beat, by the database's clock."""
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    now = (
        (sa.func.julianday("now") - 2440587.5) * 86400.0
        if engine.dialect.name == "sqlite"
        else sa.func.extract("epoch", sa.func.clock_timestamp())
    )
    try:
        with engine.connect() as connection:
            query = sa.select(now - WORKERS.c.last_beat).where(WORKERS.c.executor_id == executor_id)
            return float(connection.execute(query).scalar_one())
    finally:
        engine.dispose()


# ---- the DBOS internals the sweeper relies on --------------------------------------------------------


def test_dbos_version_is_in_the_pinned_range() -> None:
    """The sweeper uses DBOS internals checked against 3.4.x only."""
    version = importlib.metadata.version("dbos")
    assert version.startswith("3.4."), (
        f"dbos {version} is outside the pinned range >=3.4,<3.5: recheck the internals _sweeper.py uses"
    )


def test_reenqueue_for_recovery_keeps_its_signature() -> None:
    """`SystemDatabase.reenqueue_for_recovery(workflow_id, executor_ids, recovery_queue_name) -> bool`."""
    signature = inspect.signature(SystemDatabase.reenqueue_for_recovery)
    expected = ["self", "workflow_id", "executor_ids", "recovery_queue_name"]
    assert expected == list(signature.parameters), (
        f"DBOS changed SystemDatabase.reenqueue_for_recovery to {signature}: redo the sweeper's claim"
    )
    assert signature.return_annotation in (bool, "bool"), "reenqueue_for_recovery no longer returns the claim"
    assert isinstance(INTERNAL_QUEUE_NAME, str), "dbos._utils.INTERNAL_QUEUE_NAME is gone"


@pytest.mark.asyncio
async def test_reenqueue_for_recovery_claims_once(
    live_sqlite: str, gate: Path, workers: list[Worker]
) -> None:
    """DBOS's claim: True for the first call on a dead executor's run, False for every later one."""
    dead = await _start_worker(workers, live_sqlite, "dead-pin", gate, ["pin-0"], beat=False)
    dead.kill()
    sys_db = _get_dbos_instance()._sys_db
    assert sys_db.app_name == APP, "DBOS's SystemDatabase.app_name no longer holds the application name"
    claims = [sys_db.reenqueue_for_recovery("pin-0", ["dead-pin"], INTERNAL_QUEUE_NAME) for _ in range(3)]
    assert claims == [True, False, False], "reenqueue_for_recovery is no longer a one-winner atomic claim"


# ---- behaviour ---------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_racing_sweepers_recover_each_run_exactly_once(
    live: str, gate: Path, workers: list[Worker]
) -> None:
    """Three sweepers racing on a killed executor's runs: each run claimed once, all finish here."""
    ids = _ids("race", 12)
    dead = await _start_worker(workers, live, "dead-1", gate, ids, beat=True)
    dead.kill()
    sweepers = [Sweeper(live, APP, f"live-{n}", dead_after=NEVER) for n in (1, 2, 3)]
    for sweeper in sweepers:
        await sweeper.beat()
    claims = await asyncio.gather(*(sweeper.sweep_once() for sweeper in sweepers))
    gate.touch()
    claimed = [workflow_id for claim in claims for workflow_id in claim]
    assert sorted(ids) == sorted(claimed)
    assert {i: os.getpid() for i in ids} == await _results(ids)
    for sweeper in sweepers:
        await sweeper.aclose()


@pytest.mark.asyncio
async def test_live_executor_runs_are_never_taken(live: str, gate: Path) -> None:
    """Runs of an executor that keeps beating stay with it, however long past dead_after."""
    ids = _ids("kept", 3)
    for workflow_id in ids:
        with SetWorkflowID(workflow_id):
            await DBOS.start_workflow_async(hold, str(gate))
    owner = Sweeper(live, APP, LIVE, interval=0.1, dead_after=1.0)
    other = Sweeper(live, APP, "live-2", interval=0.1, dead_after=1.0)
    taken: list[str] = []
    async with owner, other, anyio.create_task_group() as tasks:
        tasks.start_soon(owner.run)
        with anyio.move_on_after(2.5):
            while True:
                taken += await other.sweep_once()
                await anyio.sleep(0.05)
        tasks.cancel_scope.cancel()
    gate.touch()
    assert taken == []
    assert {i: os.getpid() for i in ids} == await _results(ids)


@pytest.mark.slow  # waits dead_after on top of a child worker's start: over 5 s
@pytest.mark.asyncio
async def test_stale_heartbeat_is_dead_after_dead_after_and_not_before(
    live: str, gate: Path, workers: list[Worker]
) -> None:
    """An executor alive but silent is dead once its beat is dead_after old by the database clock."""
    ids = _ids("stale", 2)
    silent = await _start_worker(workers, live, "silent-1", gate, ids, beat=True)
    dead_after = 2.0
    sweeper = Sweeper(live, APP, LIVE, interval=0.1, dead_after=dead_after)
    sweeps: list[tuple[float, list[str], float]] = []
    with anyio.fail_after(20):
        while not sweeps or not sweeps[-1][1]:
            before = _beat_age(live, "silent-1")
            claimed = await sweeper.sweep_once()
            sweeps.append((before, claimed, _beat_age(live, "silent-1")))
            await anyio.sleep(0.05)
    silent.kill()
    # Silent is not dead: until the kill its DBOS may dequeue the runs again; then they are
    # pending on a dead process of this host, and one more sweep takes them back at once.
    await sweeper.sweep_once()
    gate.touch()
    assert sweeps[0][0] < dead_after, "the machine is too slow for this test: the first sweep came late"
    assert sweeps[0][1] == [], "taken before dead_after"
    assert all(before <= dead_after for before, claimed, _ in sweeps if not claimed), "kept after dead_after"
    before, claimed, after = sweeps[-1]
    assert sorted(ids) == sorted(claimed)
    assert after > dead_after
    assert {i: os.getpid() for i in ids} == await _results(ids)
    await sweeper.aclose()


@pytest.mark.asyncio
async def test_same_host_dead_pid_is_dead_at_once(live: str, gate: Path, workers: list[Worker]) -> None:
    """A row of this host whose process is gone is dead without waiting for dead_after."""
    ids = _ids("gone", 2)
    dead = await _start_worker(workers, live, "gone-1", gate, ids, beat=True)
    async with Sweeper(live, APP, LIVE, dead_after=NEVER) as sweeper:
        assert await sweeper.sweep_once() == []
        dead.kill()
        assert sorted(ids) == sorted(await sweeper.sweep_once())
    gate.touch()
    assert {i: os.getpid() for i in ids} == await _results(ids)


@pytest.mark.slow  # waits dead_after on top of a child worker's start: over 5 s
@pytest.mark.asyncio
async def test_executor_without_row_is_dead_once_its_runs_are_quiet(
    live_sqlite: str, gate: Path, workers: list[Worker]
) -> None:
    """An executor that never beat is dead once its pending runs have not changed for dead_after."""
    ids = _ids("rowless", 2)
    dead = await _start_worker(workers, live_sqlite, "rowless-1", gate, ids, beat=False)
    dead.kill()
    # 3 s: SQLite's updated_at has whole seconds on Python 3.11, so a run may look up to 1 s older.
    async with Sweeper(live_sqlite, APP, LIVE, interval=0.1, dead_after=3.0) as sweeper:
        assert await sweeper.sweep_once() == []
        with anyio.fail_after(20):
            while not (claimed := await sweeper.sweep_once()):
                await anyio.sleep(0.1)
    gate.touch()
    assert sorted(ids) == sorted(claimed)
    assert {i: os.getpid() for i in ids} == await _results(ids)


@pytest.mark.asyncio
async def test_recover_claims_one_run_of_a_dead_executor(
    live_sqlite: str, gate: Path, workers: list[Worker]
) -> None:
    """`recover` claims the asked run once, leaves the others, and refuses a second claim."""
    ids = _ids("one", 2)
    dead = await _start_worker(workers, live_sqlite, "one-1", gate, ids, beat=True)
    dead.kill()
    async with Sweeper(live_sqlite, APP, LIVE, dead_after=NEVER) as sweeper:
        first, again = await sweeper.recover("one-0"), await sweeper.recover("one-0")
        assert (first, again) == (True, False)
        assert await sweeper.sweep_once() == ["one-1"]
    gate.touch()
    assert {i: os.getpid() for i in ids} == await _results(ids)


@pytest.mark.asyncio
async def test_failed_sweeps_are_logged_and_beats_go_on(sqlite_url: str) -> None:
    """`run` survives failing sweeps (here: DBOS not launched), logs each, and keeps beating."""
    capture = CapturingLogger()
    wrapper = structlog.make_filtering_bound_logger(logging.INFO)
    logger = structlog.wrap_logger(capture, processors=[], wrapper_class=wrapper)
    async with Sweeper(sqlite_url, APP, "lonely-1", interval=0.1, dead_after=5.0, logger=logger) as sweeper:
        with anyio.move_on_after(0.5):
            await sweeper.run()
        age = _beat_age(sqlite_url, "lonely-1")
    failures = [call for call in capture.calls if call.kwargs["event"] == "sweep failed"]
    assert len(failures) >= 2
    assert age < 0.3


@pytest.mark.asyncio
async def test_aclose_removes_the_row(sqlite_url: str) -> None:
    """A clean exit deletes the executor's heartbeat row."""
    sweeper = Sweeper(sqlite_url, APP, "bye-1")
    await sweeper.beat()
    engine = sa.create_engine(sqlite_url)
    count = sa.select(sa.func.count()).select_from(WORKERS).where(WORKERS.c.executor_id == "bye-1")
    with engine.connect() as connection:
        assert connection.execute(count).scalar_one() == 1
    await sweeper.aclose()
    with engine.connect() as connection:
        assert connection.execute(count).scalar_one() == 0
    engine.dispose()


@pytest.mark.asyncio
async def test_closed_sweeper_refuses_use(sqlite_url: str) -> None:
    """After aclose, beat raises UsageError."""
    sweeper = Sweeper(sqlite_url, APP, "bye-2")
    await sweeper.aclose()
    with pytest.raises(UsageError, match="closed"):
        await sweeper.beat()


@pytest.mark.parametrize(("interval", "dead_after"), [(0.0, 10.0), (2.0, 2.0), (5.0, 1.0)])
def test_bad_timings_are_refused(sqlite_url: str, interval: float, dead_after: float) -> None:
    """dead_after must exceed a positive interval, or live workers would look dead between beats."""
    with pytest.raises(UsageError, match="interval"):
        Sweeper(sqlite_url, APP, "x", interval=interval, dead_after=dead_after)


@pytest.mark.asyncio
async def test_concurrent_first_beats_create_the_table_once(database_url: str) -> None:
    """Several sweepers beating at once on a new database all succeed (the table is created once)."""
    sweepers = [Sweeper(database_url, APP, f"first-{n}") for n in range(4)]
    await asyncio.gather(*(sweeper.beat() for sweeper in sweepers))
    for sweeper in sweepers:
        await sweeper.aclose()


if __name__ == "__main__":
    url, executor_id, gate_path, ids, mode = sys.argv[1:]
    asyncio.run(_worker_main(url, executor_id, gate_path, ids.split(","), mode == "beat"))
