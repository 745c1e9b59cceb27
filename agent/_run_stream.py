"""A run's events as an async iterator, owned by a task group that a context manager scopes.

Why a context manager and not a bare async generator: a generator abandoned by ``break`` is
closed later, by the garbage collector, from another task, and cannot cancel the run's task
group cleanly. ``async with agent.run_stream(...) as events`` ends the run exactly when the
block is left (the shape of ``httpx.AsyncClient.stream``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from agent._events import Emit, Hooks, RunEvent, RunFinished, dispatch_to_hooks
from agent._result import RunResult

__all__ = ["RunStream", "open_run_stream"]

_BUFFER = 256
"""Events held for a slow consumer before the run waits for it (nothing is ever dropped)."""


class RunStream:
    """The events of one streamed run, in order; ``result`` once :class:`RunFinished` was seen."""

    def __init__(self, receive: MemoryObjectReceiveStream[RunEvent]) -> None:
        self._receive = receive
        self.result: RunResult | None = None
        """The run's result, set when its :class:`RunFinished` event has been consumed."""
        self._error: BaseException | None = None

    def __aiter__(self) -> RunStream:
        return self

    async def __anext__(self) -> RunEvent:
        try:
            event: RunEvent | None = await self._receive.receive()
        except anyio.EndOfStream:
            event = None
        if event is None:
            # Raised out here: inside the except block the run's error would gain a context,
            # and ``from None`` would erase its cause (a HookError's hook exception).
            if self._error is not None:
                raise self._error
            raise StopAsyncIteration
        if isinstance(event, RunFinished):
            self.result = event.result
        return event


@asynccontextmanager
async def open_run_stream(
    start: Callable[[Emit], Awaitable[RunResult]], hooks: Hooks | None
) -> AsyncIterator[RunStream]:
    """Run ``start(emit)`` in a task group; its events go to hooks, then to the iterator."""
    send, receive = anyio.create_memory_object_stream[RunEvent](_BUFFER)
    stream = RunStream(receive)
    failure: Exception | None = None
    async with receive:
        async with anyio.create_task_group() as group:
            group.start_soon(_produce, start, hooks, send, stream)
            try:
                yield stream
            except Exception as exc:
                # Re-raised below as itself, not wrapped in the task group's ExceptionGroup.
                failure = exc
            finally:
                group.cancel_scope.cancel()
        if failure is not None:
            raise failure


async def _produce(
    start: Callable[[Emit], Awaitable[RunResult]],
    hooks: Hooks | None,
    send: MemoryObjectSendStream[RunEvent],
    stream: RunStream,
) -> None:
    async def emit(event: RunEvent) -> None:
        await dispatch_to_hooks(hooks, event)
        await send.send(event)

    async with send:
        try:
            await start(emit)
        except Exception as exc:
            # Raised to the consumer at the end of the events, with what the run did so far.
            stream._error = exc
