"""The durable side of the ``agent`` command: ``worker``, ``run --durable`` and ``runs`` (on DBOS).

``agent._cli`` imports this module only when a durable command runs: DBOS is an optional extra
and takes about a second to import, which ``agent run`` without ``--durable`` should not pay.
Everything here is async and prints nothing; the command line decides what to show.
"""

from __future__ import annotations

import dataclasses
import json
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import anyio
from pydantic_core import to_json
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from agent._agent import Agent
from agent._errors import AgentError, UsageError
from agent._events import Hooks
from agent._result import RunResult
from agent._urls import redact, url_secrets
from agent.durable.dbos import DEFAULT_NAME, DBOSAgent, DBOSRuns, RunInfo

__all__ = [
    "DEFAULT_NAME",
    "DurableError",
    "decide_run",
    "enqueue",
    "list_runs",
    "render_run",
    "render_runs",
    "run",
    "serve",
    "show_run",
    "shown_database",
]


class DurableError(AgentError):
    """The durable database or DBOS failed (unreachable, refused, not a DBOS database...)."""


def shown_database(url: str) -> str:
    """``url`` as the command line prints it: never its password."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return "(a database URL that cannot be parsed)"
    query = {key: value for key, value in parsed.query.items() if "password" not in key.lower()}
    return parsed.set(query=query).render_as_string(hide_password=True)


@asynccontextmanager
async def _database_errors(url: str) -> AsyncIterator[None]:
    """DBOS's and the database driver's failures as one :class:`DurableError`, credentials out."""
    try:
        yield
    except AgentError:
        raise
    except Exception as exc:
        message = redact(f"{type(exc).__name__}: {exc}", _secrets(url)).splitlines()[0]
        raise DurableError(f"durable database {shown_database(url)}: {message}") from exc


def _secrets(url: str) -> tuple[str, ...]:
    try:
        password = make_url(url).password
    except ArgumentError:
        password = None
    return tuple(sorted({*url_secrets(url), *([str(password)] if password else [])}, key=len, reverse=True))


async def serve(
    agent: Agent,
    *,
    database_url: str,
    name: str | None,
    worker_concurrency: int | None,
    global_concurrency: int | None,
    announce: Callable[[str], None],
) -> str:
    """Be a worker until SIGINT or SIGTERM; returns the signal's name after a clean close.

    ``announce`` gets the ready line once DBOS is launched. A signal that arrives during the
    launch is kept and ends the worker as soon as it is ready.
    """
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with _database_errors(database_url):
            worker = DBOSAgent(
                agent,
                name=name or DEFAULT_NAME,
                database_url=database_url,
                worker_concurrency=worker_concurrency,
                global_concurrency=global_concurrency,
            )
            async with worker:
                announce(f"worker {worker.executor_id} ready on {shown_database(database_url)}")
                async for signum in signals:
                    return signal.Signals(signum).name
    raise AssertionError("the signal receiver ended")  # pragma: no cover - it never does


async def run(
    agent: Agent,
    prompt: str,
    *,
    database_url: str,
    name: str | None,
    run_id: str,
    hooks: Hooks,
) -> RunResult:
    """Run ``prompt`` durably in this process (a worker meanwhile), or resume/await ``run_id``."""
    async with _database_errors(database_url):
        worker = DBOSAgent(agent, name=name or DEFAULT_NAME, database_url=database_url)
        async with worker:
            return await worker.run(prompt, run_id=run_id, hooks=hooks)


async def enqueue(prompt: str, *, database_url: str, name: str | None, run_id: str | None) -> str:
    """Enqueue ``prompt`` for the workers, from this process (no worker code runs here)."""
    async with _database_errors(database_url), DBOSRuns(database_url, name=name or DEFAULT_NAME) as runs:
        return await runs.enqueue(prompt, run_id=run_id)


async def list_runs(*, database_url: str, name: str | None, limit: int) -> list[RunInfo]:
    """The newest runs of application ``name``, newest first."""
    async with _database_errors(database_url), DBOSRuns(database_url, name=name or DEFAULT_NAME) as runs:
        return await runs.list(limit=limit)


async def show_run(*, database_url: str, name: str | None, run_id: str) -> RunInfo | None:
    """One run, or ``None`` if there is none with that id."""
    async with _database_errors(database_url), DBOSRuns(database_url, name=name or DEFAULT_NAME) as runs:
        return await runs.show(run_id)


async def decide_run(
    *,
    database_url: str,
    name: str | None,
    run_id: str,
    call_id: str,
    approved: bool,
    arguments: str | None = None,
    reason: str = "",
) -> None:
    """``agent runs approve`` / ``deny``: decide one call of a run waiting for approvals.

    ``arguments``: a JSON object (text) to run the approved call with instead of the model's.
    """
    edited = _edited_arguments(arguments)
    async with _database_errors(database_url), DBOSRuns(database_url, name=name or DEFAULT_NAME) as runs:
        if approved:
            await runs.approve(run_id, call_id, arguments=edited)
        else:
            await runs.deny(run_id, call_id, reason=reason)


def _edited_arguments(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"--arguments is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise UsageError("--arguments must be a JSON object")
    return value


def render_runs(infos: list[RunInfo], *, as_json: bool) -> str:
    """``agent runs list``: a table, or a JSON list of the runs."""
    return _json([dataclasses.asdict(info) for info in infos]) if as_json else _table(infos)


def render_run(info: RunInfo, *, as_json: bool) -> str:
    """``agent runs show``: the run in detail, or as a JSON object."""
    return _json(dataclasses.asdict(info)) if as_json else _details(info)


def _json(value: Any) -> str:
    return to_json(value, indent=2).decode()


_COLUMNS = ("RUN ID", "STATUS", "TURNS", "TOOL CALLS", "CREATED")


def _table(infos: list[RunInfo]) -> str:
    """One line per run under a header, columns aligned (plain text: it is meant to be piped)."""
    rows = [_COLUMNS] + [
        (i.run_id, i.status, str(i.turns), str(i.tool_calls), _when(i.created_at)) for i in infos
    ]
    widths = [max(len(row[column]) for row in rows) for column in range(len(_COLUMNS))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows
    )


def _details(info: RunInfo) -> str:
    """One run, a field a line; the output (or error) last, as it is."""
    fields = [
        ("run id", info.run_id),
        ("status", info.status),
        ("executor", info.executor_id or "-"),
        ("created", _when(info.created_at)),
        ("turns", str(info.turns)),
        ("tool calls", str(info.tool_calls)),
    ]
    for waiting in info.pending_approvals:
        fields.append(("waits for", f"{waiting.call_id}  {waiting.tool_name}({waiting.arguments})"))
    if info.error is not None:
        fields.append(("error", info.error))
    if info.output is not None:
        fields.append(("output", info.output))
    return "\n".join(f"{label + ':':<12}{value}" for label, value in fields)


def _when(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
