"""The command line's Temporal side: ``agent worker --temporal`` and ``agent run --temporal``.

Imported only when one of them runs (``temporalio`` is an optional extra, slow to import).
"""

from __future__ import annotations

import signal
from collections.abc import Awaitable, Callable

import anyio
from temporalio.client import Client

from agent._agent import Agent
from agent._console import RunDisplay
from agent._errors import UsageError
from agent._events import Hooks
from agent._result import RunResult
from agent.durable.temporal import DEFAULT_NAME, TemporalAgent, start_run

__all__ = ["connect", "enqueue", "run", "runner", "serve"]


async def connect(address: str) -> Client:
    """A client of the Temporal server at ``address`` (HOST:PORT); a clear error if it is not there."""
    try:
        return await Client.connect(address)
    except RuntimeError as exc:
        raise UsageError(f"cannot reach the Temporal server at {address}: {exc}") from None


async def serve(
    agent: Agent, *, address: str, name: str | None, task_queue: str | None, announce: Callable[[str], None]
) -> str:
    """Be a worker until SIGINT or SIGTERM; returns the signal's name after a clean close."""
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        client = await connect(address)
        durable = TemporalAgent(agent, name=name or DEFAULT_NAME, client=client, task_queue=task_queue)
        async with durable.worker():
            announce(f"worker ready on Temporal {address}, task queue {durable.task_queue}")
            async for signum in signals:
                return signal.Signals(signum).name
    raise AssertionError("the signal receiver ended")  # pragma: no cover - it never does


async def run(
    agent: Agent,
    prompt: str,
    *,
    address: str,
    name: str | None,
    task_queue: str | None,
    run_id: str,
    hooks: Hooks,
) -> RunResult:
    """Run ``prompt`` as a workflow (this process serves meanwhile, as do other workers); its result."""
    client = await connect(address)
    durable = TemporalAgent(
        agent, name=name or DEFAULT_NAME, client=client, task_queue=task_queue, hooks=hooks
    )
    async with durable.worker():
        return await durable.run(prompt, run_id=run_id)


async def enqueue(
    prompt: str, *, address: str, name: str | None, task_queue: str | None, run_id: str | None
) -> str:
    """Start ``prompt`` as a workflow for the workers, without waiting; its run id."""
    client = await connect(address)
    handle = await start_run(client, prompt, name=name or DEFAULT_NAME, task_queue=task_queue, run_id=run_id)
    return handle.id


def runner(
    prompt: str,
    address: str,
    name: str | None,
    task_queue: str | None,
    run_id: str,
    note: Callable[[str], None],
) -> Callable[[Agent, RunDisplay], Awaitable[RunResult]]:
    """``agent run --temporal``'s runner: the run id goes to stderr first, to find the run again."""

    async def go(agent: Agent, display: RunDisplay) -> RunResult:
        note(f"temporal run {run_id} on {address}")
        hooks = display.hooks()
        return await run(
            agent, prompt, address=address, name=name, task_queue=task_queue, run_id=run_id, hooks=hooks
        )

    return go
