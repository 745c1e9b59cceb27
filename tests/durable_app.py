"""A durable worker for the crash tests and the durable bench: ``python -m tests.durable_app ...``.

It runs in a subprocess, so a test can kill it with SIGKILL. It builds an :class:`Agent` on the
local model server whose base URL it is given, with tools named by ``--tools`` that log to a
journal, opens a :class:`DBOSAgent` on ``--database``, and then either

- runs one run (``--run-id`` and ``--prompt``) and prints its result as one JSON line
  (``{"output": ..., "status": ...}``), or
- serves the durable queue until it is killed, after printing ``ready``.

The journal is one JSON-lines file per process, ``DIR/journal-<pid>.jsonl``; every line has the
wall-clock time ``t`` (``time.time()``, one clock for every process of the machine), the ``pid``
and the worker's ``executor`` id, an ``event`` and the ``run_id``:

- ``tool_start`` / ``tool_end`` (with ``tool`` and ``key``, the call's idempotency key), written by
  each tool as it starts and as it finishes;
- ``run_start``, ``run_resumed`` (with ``turns_done`` and ``calls_done``) and ``run_end``, written
  by the worker's hooks.

A tool named in ``--hold`` sleeps ``--hold-seconds`` (long: the test kills the worker meanwhile),
every other tool sleeps ``--sleep``. A tool named in ``--approve`` needs approval (the run
waits for ``DBOSRuns.approve`` / ``deny``). A tool returns ``"<name> done for <run_id>"``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import time
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

from dbos import DBOS

from agent import Agent, Hooks, RunFinished, RunResumed, RunStarted, Tool, ToolContext, tool
from agent.durable.dbos import DBOSAgent

MODEL = "local-model"
JOURNAL_GLOB = "journal-*.jsonl"


class Journal:
    """Appends JSON lines to this process's journal file (one ``write`` each, so lines never mix)."""

    def __init__(self, directory: Path, executor_id: str) -> None:
        self.path = directory / f"journal-{os.getpid()}.jsonl"
        self._executor_id = executor_id
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def write(self, event: str, run_id: str, **fields: Any) -> None:
        record = {
            "t": time.time(),
            "pid": os.getpid(),
            "executor": self._executor_id,
            "event": event,
            "run_id": run_id,
            **fields,
        }
        os.write(self._fd, (json.dumps(record) + "\n").encode())


def read_journal(directory: Path) -> list[dict[str, Any]]:
    """Every complete line of every journal in ``directory``, oldest first."""
    records = []
    for path in directory.glob(JOURNAL_GLOB):
        for line in path.read_text().splitlines(keepends=True):
            if line.endswith("\n"):  # a line being written is not complete yet
                records.append(json.loads(line))
    return sorted(records, key=lambda record: record["t"])


def tool_output(name: str, run_id: str) -> str:
    """What the tool ``name`` returns in run ``run_id``."""
    return f"{name} done for {run_id}"


def make_tool(name: str, journal: Journal, pause: float, *, needs_approval: bool = False) -> Tool[..., Any]:
    """A tool that logs its start and end and sleeps ``pause`` seconds in between."""

    async def logged(ctx: ToolContext[None]) -> str:
        journal.write("tool_start", ctx.run_id, tool=name, key=ctx.idempotency_key)
        await asyncio.sleep(pause)
        journal.write("tool_end", ctx.run_id, tool=name, key=ctx.idempotency_key)
        return tool_output(name, ctx.run_id)

    description = f"The crash tests' tool {name}."
    return tool(logged, name=name, description=description, needs_approval=needs_approval)


def build_agent(
    base_url: str,
    journal: Journal,
    tools: Sequence[str],
    *,
    hold: Sequence[str] = (),
    hold_seconds: float = 300.0,
    sleep: float = 0.0,
    approve: Sequence[str] = (),
) -> Agent:
    """The agent every worker (and the tests' uninterrupted reference run) uses."""
    made = [
        make_tool(name, journal, hold_seconds if name in hold else sleep, needs_approval=name in approve)
        for name in tools
    ]
    return Agent(MODEL, base_url=base_url, api_key="local", tools=made, tool_timeout=None, max_retries=0)


def journal_hooks(journal: Journal) -> Hooks:
    """Hooks that log each run's start (or resumption) and end."""

    def started(event: RunStarted) -> None:
        journal.write("run_start", event.run_id)

    def resumed(event: RunResumed) -> None:
        journal.write("run_resumed", event.run_id, turns_done=event.turns_done, calls_done=event.calls_done)

    def finished(event: RunFinished) -> None:
        # RunFinished carries no run id; the hook runs inside the run's workflow.
        journal.write("run_end", DBOS.workflow_id or "", status=event.result.status)

    return Hooks(on_run_start=started, on_run_resumed=resumed, on_run_end=finished)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.durable_app", description=__doc__)
    parser.add_argument("--database", required=True, help="sqlite:///path or postgresql://...")
    parser.add_argument("--model-url", required=True, help="the local model server's base URL")
    parser.add_argument("--dir", required=True, type=Path, help="where the journal goes")
    parser.add_argument("--tools", default="work", help="comma-separated tool names")
    parser.add_argument("--hold", default="", help="comma-separated tools that sleep --hold-seconds")
    parser.add_argument("--hold-seconds", type=float, default=300.0)
    parser.add_argument("--sleep", type=float, default=0.0, help="seconds every other tool sleeps")
    parser.add_argument("--approve", default="", help="comma-separated tools that need approval")
    parser.add_argument("--name", default="crash-tests", help="the DBOS application name")
    parser.add_argument("--executor-id", default=None)
    parser.add_argument("--global-concurrency", type=int, default=None)
    parser.add_argument("--worker-concurrency", type=int, default=None)
    parser.add_argument("--poll-interval", type=float, default=0.1)
    parser.add_argument("--heartbeat-interval", type=float, default=0.5)
    parser.add_argument("--dead-after", type=float, default=5.0)
    parser.add_argument("--run-id", default=None, help="run this run (else: serve the queue)")
    parser.add_argument("--prompt", default="go")
    return parser.parse_args(argv)


def _names(text: str) -> list[str]:
    return [name for name in text.split(",") if name]


async def main(args: argparse.Namespace) -> None:
    executor_id = args.executor_id or f"worker-{os.getpid()}"
    journal = Journal(args.dir, executor_id)
    agent = build_agent(
        args.model_url,
        journal,
        _names(args.tools),
        hold=_names(args.hold),
        hold_seconds=args.hold_seconds,
        sleep=args.sleep,
        approve=_names(args.approve),
    )
    durable = DBOSAgent(
        agent,
        name=args.name,
        database_url=args.database,
        hooks=journal_hooks(journal),
        executor_id=executor_id,
        global_concurrency=args.global_concurrency,
        worker_concurrency=args.worker_concurrency,
        poll_interval=args.poll_interval,
        heartbeat_interval=args.heartbeat_interval,
        dead_after=args.dead_after,
    )
    async with agent, durable:
        if args.run_id is not None:
            result = await durable.run(args.prompt, run_id=args.run_id)
            print(json.dumps({"output": result.output, "status": result.status}), flush=True)
            return
        print(f"ready {executor_id}", flush=True)
        await _until_terminated()


async def _until_terminated() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


def run(argv: Sequence[str] | None = None) -> None:
    """The program's entry point."""
    entry: Callable[[argparse.Namespace], Coroutine[Any, Any, None]] = main
    asyncio.run(entry(parse_args(argv)))


if __name__ == "__main__":
    run()
