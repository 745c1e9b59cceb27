"""A Temporal worker for the crash tests and the bench: ``python -m tests.temporal_app ...``.

It runs in a subprocess, so a test can kill it with SIGKILL. It builds the same agent as
``tests.durable_app`` (tools named by ``--tools`` that write a journal, on the local model server
at ``--model-url``), connects to the Temporal server at ``--temporal``, prints ``ready`` once its
:meth:`TemporalAgent.worker` serves task queue ``--task-queue``, and serves until it is killed
(or SIGTERM). Its hooks journal ``run_start``, ``run_resumed`` and ``run_end`` (live only: not on a replay).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from collections.abc import Sequence
from pathlib import Path

from temporalio import workflow
from temporalio.client import Client

from agent import Hooks, RunFinished, RunResumed, RunStarted
from agent.durable.temporal import TemporalAgent
from tests.durable_app import Journal, build_agent


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.temporal_app", description=__doc__)
    parser.add_argument("--temporal", required=True, help="HOST:PORT of the Temporal server")
    parser.add_argument("--task-queue", required=True)
    parser.add_argument("--model-url", required=True, help="the local model server's base URL")
    parser.add_argument("--dir", required=True, type=Path, help="where the journal goes")
    parser.add_argument("--tools", default="work", help="comma-separated tool names")
    parser.add_argument("--hold", default="", help="comma-separated tools that sleep --hold-seconds")
    parser.add_argument("--hold-seconds", type=float, default=300.0)
    parser.add_argument("--sleep", type=float, default=0.0, help="seconds every other tool sleeps")
    parser.add_argument("--name", default="crash-tests", help="the application name")
    parser.add_argument("--heartbeat-timeout", type=float, default=2.0)
    parser.add_argument("--sticky-timeout", type=float, default=1.0)
    return parser.parse_args(argv)


def _names(text: str) -> list[str]:
    return [name for name in text.split(",") if name]


async def main(args: argparse.Namespace) -> None:
    executor_id = f"worker-{os.getpid()}"
    journal = Journal(args.dir, executor_id)
    agent = build_agent(
        args.model_url,
        journal,
        _names(args.tools),
        hold=_names(args.hold),
        hold_seconds=args.hold_seconds,
        sleep=args.sleep,
    )

    def started(event: RunStarted) -> None:
        journal.write("run_start", event.run_id)

    def resumed(event: RunResumed) -> None:
        journal.write("run_resumed", event.run_id, turns_done=event.turns_done, calls_done=event.calls_done)

    def finished(event: RunFinished) -> None:
        # RunFinished carries no run id; the hook runs in the run's workflow.
        journal.write("run_end", workflow.info().workflow_id, status=event.result.status)

    client = await Client.connect(args.temporal)
    durable = TemporalAgent(
        agent,
        name=args.name,
        client=client,
        task_queue=args.task_queue,
        hooks=Hooks(on_run_start=started, on_run_resumed=resumed, on_run_end=finished),
        heartbeat_timeout=args.heartbeat_timeout,
        sticky_timeout=args.sticky_timeout,
    )
    async with agent, durable.worker():
        print(f"ready {executor_id}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
