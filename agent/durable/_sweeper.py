"""Heartbeats and the sweeper: a dead worker's pending DBOS runs finish on exactly one live worker.

DBOS (open source) recovers at launch only the runs of its own executor id. Every worker therefore
beats into a table beside DBOS's system tables, ``agent_runtime_workers``, and sweeps: the PENDING runs
of this application and application version whose executor is dead go back onto the queue, where any
live worker dequeues them. An executor is dead when

- its last beat is older than ``dead_after`` seconds, measured on the *database's* clock (workers'
  clocks differ); or
- its row says it ran on this host (same host name, boot and PID namespace) and that process is gone
  (the fast path: a CLI run restarted on the same machine resumes at once); or
- it has no row at all and none of its pending runs changed for ``dead_after`` seconds (a worker from
  before heartbeats, or one that left cleanly with runs unfinished).

Claiming is DBOS's own atomic UPDATE (PENDING and still owned by the dead executor -> ENQUEUED): of
several sweepers racing for one run exactly one wins, and a run already taken by a live worker is never
touched. That call is DBOS internal API, pinned to ``dbos>=3.4,<3.5`` and covered by a test.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Self

import anyio
import psutil
import sqlalchemy as sa
from dbos import DBOS, WorkflowStatus
from dbos._dbos import _get_dbos_instance  # internal: pinned by tests/test_sweeper.py
from dbos._sys_db import SystemDatabase
from dbos._utils import INTERNAL_QUEUE_NAME
from sqlalchemy.dialects import postgresql, sqlite
from structlog.typing import FilteringBoundLogger

from agent._errors import UsageError
from agent._logging import silent_logger

__all__ = ["WORKERS", "Sweeper"]

_metadata = sa.MetaData()

WORKERS = sa.Table(
    "agent_runtime_workers",
    _metadata,
    sa.Column("executor_id", sa.String(256), primary_key=True),
    # Part of the key: executor ids such as DBOS's default "local" collide across applications.
    sa.Column("app_name", sa.String(256), primary_key=True),
    sa.Column("hostname", sa.Text, nullable=False),
    sa.Column("host_id", sa.Text, nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("pid_started", sa.Float, nullable=False),
    sa.Column("last_beat", sa.Float, nullable=False),
)
"""The heartbeat table: one row per live executor; ``last_beat`` is epoch seconds on the database's clock."""

_PENDING = "PENDING"
_CREATE_LOCK = 0x6167_656E_7473  # pg advisory lock key: concurrent CREATE TABLE IF NOT EXISTS can fail on PG


@dataclass(frozen=True, slots=True)
class _Beat:
    host_id: str
    pid: int
    pid_started: float
    age: float


class Sweeper:
    """One worker's heartbeat and sweeper, in the database that holds DBOS's system tables.

    Enter it (``async with``, which beats once) right after ``DBOS.launch()`` in a worker, run
    :meth:`run` in a task for as long as the worker serves, and leave it after ``DBOS.destroy()``.
    Sweeping needs DBOS launched in this process with the same application name; ``beat`` and
    ``aclose`` do not.

    Args:
        database_url: DBOS's system database, ``sqlite:///file`` or ``postgresql://...``.
        app_name: DBOS's application name (config ``name``); rows and runs of other apps are ignored.
        executor_id: this worker's DBOS executor id; never declared dead by its own sweeper.
        interval: seconds between two beats (and sweeps) in :meth:`run`.
        dead_after: seconds without a beat after which an executor is dead; keep it well above
            ``interval`` and above the longest the event loop may stall.
        logger: where :meth:`run` reports recoveries and failed sweeps; silent when not given.
    """

    def __init__(
        self,
        database_url: str,
        app_name: str,
        executor_id: str,
        *,
        interval: float = 2.0,
        dead_after: float = 10.0,
        logger: FilteringBoundLogger | None = None,
    ) -> None:
        if not 0 < interval < dead_after:
            raise UsageError(f"need 0 < interval < dead_after, got {interval=}, {dead_after=}")
        self.app_name = app_name
        self.executor_id = executor_id
        self.interval = interval
        self.dead_after = dead_after
        self._log = logger if logger is not None else silent_logger()
        self._engine = _make_engine(database_url)
        self._sqlite = self._engine.dialect.name == "sqlite"
        self._host_id = _host_id()
        self._pid_started = psutil.Process().create_time()
        self._table_ready = False
        self._closed = False

    async def __aenter__(self) -> Self:
        await self.beat()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def beat(self) -> None:
        """Record that this executor is alive now (by the database's clock); creates the table if missing."""
        self._check_open()
        await anyio.to_thread.run_sync(self._beat_sync)

    async def sweep_once(self) -> list[str]:
        """Re-enqueue the pending runs of dead executors; returns the ids that *this* call claimed.

        Only runs of this application and of the running DBOS's application version are considered.
        """
        self._check_open()
        pending = await DBOS.list_workflows_async(
            status=_PENDING,
            app_version=DBOS.application_version,
            application_name=self.app_name,
            load_input=False,
            load_output=False,
        )
        return await self._claim_dead(pending)

    async def recover(self, workflow_id: str) -> bool:
        """Re-enqueue one run if it is pending on a dead executor; ``True`` when this call claimed it."""
        self._check_open()
        pending = await DBOS.list_workflows_async(
            workflow_ids=[workflow_id],
            status=_PENDING,
            app_version=DBOS.application_version,
            application_name=self.app_name,
            load_input=False,
            load_output=False,
        )
        return bool(await self._claim_dead(pending))

    async def run(self) -> None:
        """Beat and sweep every ``interval`` seconds until cancelled; a failed round is logged, not fatal."""
        while True:
            await self._round()
            await anyio.sleep(self.interval)

    async def aclose(self) -> None:
        """Delete this executor's row (a clean exit is not a death) and release the database connections.

        Runs this executor leaves PENDING are recovered by other workers once quiet for ``dead_after``.
        Closing twice does nothing; any other use after closing raises ``UsageError``.
        """
        if self._closed:
            return
        self._closed = True
        try:
            await anyio.to_thread.run_sync(self._delete_row)
        finally:
            await anyio.to_thread.run_sync(self._engine.dispose)

    async def _round(self) -> None:
        try:
            await self.beat()
        except Exception:
            self._log.exception("heartbeat failed", executor_id=self.executor_id)
        try:
            recovered = await self.sweep_once()
        except Exception:
            self._log.exception("sweep failed", executor_id=self.executor_id)
            return
        if recovered:
            self._log.info("recovered runs of dead executors", executor_id=self.executor_id, runs=recovered)

    async def _claim_dead(self, pending: list[WorkflowStatus]) -> list[str]:
        sys_db = _system_database(self.app_name)
        if all(run.executor_id == self.executor_id for run in pending):
            return []  # the common case: nothing pending elsewhere, no need to read the beats
        now, beats = await anyio.to_thread.run_sync(self._read_beats)
        dead = self._dead_executors(pending, now, beats)
        targets = [(run.workflow_id, run.executor_id) for run in pending if run.executor_id in dead]
        if not targets:
            return []
        return await anyio.to_thread.run_sync(_claim, sys_db, targets)

    def _dead_executors(self, pending: list[WorkflowStatus], now: float, beats: dict[str, _Beat]) -> set[str]:
        quiet: dict[str, float] = {}  # executor -> seconds since its newest pending run changed
        for run in pending:
            if run.executor_id is not None and run.executor_id != self.executor_id:
                age = now - (run.updated_at or 0) / 1000
                quiet[run.executor_id] = min(age, quiet.get(run.executor_id, age))
        return {executor for executor, age in quiet.items() if self._is_dead(beats.get(executor), age)}

    def _is_dead(self, beat: _Beat | None, quiet_for: float) -> bool:
        if beat is None:
            return quiet_for > self.dead_after
        if beat.host_id == self._host_id and _process_gone(beat.pid, beat.pid_started):
            return True
        return beat.age > self.dead_after

    def _check_open(self) -> None:
        if self._closed:
            raise UsageError("this Sweeper is closed")

    # Blocking database work, run in worker threads.

    def _now(self) -> sa.ColumnElement[float]:
        if self._sqlite:  # julianday keeps milliseconds; strftime('%s') would round to seconds
            return sa.cast((sa.func.julianday("now") - 2440587.5) * 86400.0, sa.Float)
        return sa.cast(sa.func.extract("epoch", sa.func.clock_timestamp()), sa.Float)

    def _ensure_table(self, connection: sa.Connection) -> None:
        if self._table_ready:
            return
        if not self._sqlite:
            connection.execute(sa.select(sa.func.pg_advisory_xact_lock(_CREATE_LOCK)))
        connection.execute(sa.schema.CreateTable(WORKERS, if_not_exists=True))
        self._table_ready = True

    def _beat_sync(self) -> None:
        dialect_insert = sqlite.insert if self._sqlite else postgresql.insert
        insert = dialect_insert(WORKERS).values(
            executor_id=self.executor_id,
            app_name=self.app_name,
            hostname=socket.gethostname(),
            host_id=self._host_id,
            pid=os.getpid(),
            pid_started=self._pid_started,
            last_beat=self._now(),
        )
        changed = ("hostname", "host_id", "pid", "pid_started", "last_beat")
        upsert = insert.on_conflict_do_update(
            index_elements=[WORKERS.c.executor_id, WORKERS.c.app_name],
            set_={name: insert.excluded[name] for name in changed},
        )
        with self._engine.begin() as connection:
            self._ensure_table(connection)
            connection.execute(upsert)

    def _read_beats(self) -> tuple[float, dict[str, _Beat]]:
        with self._engine.begin() as connection:
            self._ensure_table(connection)
            now = float(connection.execute(sa.select(self._now())).scalar_one())
            rows = connection.execute(sa.select(WORKERS).where(WORKERS.c.app_name == self.app_name))
            beats = {row.executor_id: _beat(row, now) for row in rows}
        return now, beats

    def _delete_row(self) -> None:
        with self._engine.begin() as connection:
            self._ensure_table(connection)
            connection.execute(
                sa.delete(WORKERS).where(
                    WORKERS.c.executor_id == self.executor_id, WORKERS.c.app_name == self.app_name
                )
            )


def _beat(row: sa.Row[tuple[object, ...]], now: float) -> _Beat:
    return _Beat(row.host_id, row.pid, row.pid_started, now - row.last_beat)


def _claim(sys_db: SystemDatabase, targets: Iterable[tuple[str, str | None]]) -> list[str]:
    """DBOS's atomic claim: PENDING on that executor -> ENQUEUED; only the winner gets ``True``."""
    return [
        workflow_id
        for workflow_id, executor_id in targets
        if executor_id is not None
        and sys_db.reenqueue_for_recovery(workflow_id, [executor_id], INTERNAL_QUEUE_NAME)
    ]


def _system_database(app_name: str) -> SystemDatabase:
    sys_db = _get_dbos_instance()._sys_db
    if sys_db.app_name != app_name:
        raise UsageError(f"the Sweeper is for application {app_name!r}, but DBOS runs {sys_db.app_name!r}")
    return sys_db


def _make_engine(url: str) -> sa.Engine:
    parsed = sa.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        # DBOS's own busy timeout: ride out writers instead of failing with "database is locked".
        return sa.create_engine(parsed, connect_args={"timeout": 30})
    if parsed.get_backend_name() in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return sa.create_engine(parsed, pool_size=2, max_overflow=2, pool_pre_ping=True)


def _host_id() -> str:
    """This host and PID namespace: a PID means the same process only where all three agree."""
    parts = [socket.gethostname()]
    with contextlib.suppress(OSError), open("/proc/sys/kernel/random/boot_id") as boot:
        parts.append(boot.read().strip())
    with contextlib.suppress(OSError):
        parts.append(str(os.stat("/proc/self/ns/pid").st_ino))
    return "/".join(parts)


def _process_gone(pid: int, started: float) -> bool:
    """Whether the process that wrote a row is gone: no such PID, a zombie, or a PID reused since."""
    try:
        process = psutil.Process(pid)
        return process.status() == psutil.STATUS_ZOMBIE or abs(process.create_time() - started) > 0.01
    except psutil.NoSuchProcess:
        return True
    except psutil.Error:  # cannot tell (e.g. access denied): the heartbeat decides
        return False
