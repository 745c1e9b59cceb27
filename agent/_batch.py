"""One turn's tool calls: all at once through the engine, each to exactly one record.

The loop's side of the tool operation: it starts the calls in call order (so a durable engine
numbers their steps the same way on every replay), holds the run-wide concurrency limit, and
emits each call's start and end around the engine's step, never inside it.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass

import anyio
import anyio.abc

from agent._engine import Engine, ToolOutcome, ToolRequest
from agent._errors import HookError
from agent._events import Emit, ToolCallFinished, ToolCallStarted
from agent._execution import error_text, shown_name
from agent._limits import Limits
from agent._registry import ToolRegistry
from agent._result import OutcomeKind, ToolCallRecord
from agent._wire import FunctionCall

__all__ = ["CallBatch", "TurnScope", "record_of"]


@dataclass(frozen=True, slots=True)
class TurnScope:
    """What every tool call of one turn shares."""

    engine: Engine
    turn: int
    limiter: anyio.CapacityLimiter
    """The run-wide limit on calls running at once."""
    tools: ToolRegistry
    """Which calls may start while their response still streams (``eager`` tools)."""
    limits: Limits
    emit: Emit


class CallBatch:
    """One turn's tool calls: started one by one as they arrive, all finished with the group.

    Calls run concurrently in ``group``; a call id started twice runs once. Calls past
    ``Limits.max_calls_per_response`` are not run: each gets a ``rejected`` record. :meth:`settle`
    gives every call exactly one record, in the order asked for, never in completion order.
    """

    def __init__(self, group: anyio.abc.TaskGroup, scope: TurnScope) -> None:
        self._group = group
        self._scope = scope
        self._records: dict[str, ToolCallRecord] = {}
        self._started: dict[str, FunctionCall] = {}
        self._seen: dict[str, FunctionCall] = {}
        """Every call given to :meth:`start`, run or rejected, in arrival order."""
        self._hook_failed = False

    @property
    def started(self) -> bool:
        """Whether any call has started (a streamed request is then not retried)."""
        return bool(self._started)

    @property
    def started_calls(self) -> tuple[FunctionCall, ...]:
        """The calls started so far, in the order they started."""
        return tuple(self._started.values())

    def call_ready(self, call: FunctionCall) -> None:
        """A streamed call is complete: start it now unless its tool waits for the response."""
        tool = self._scope.tools.get(call.name)
        if tool is None or (tool.eager and tool.needs_approval is False):
            self.start(call)

    def start(self, call: FunctionCall) -> None:
        """Start ``call`` in the group, unless it already started or the response's cap is reached."""
        if call.call_id in self._seen:
            return
        self._seen[call.call_id] = call
        if len(self._started) < self._scope.limits.max_calls_per_response:
            self._started[call.call_id] = call
            # Asked of the engine here, in call order; awaited in the call's own task.
            step = self._scope.engine.call_tool(_request(self._scope.turn, call))
            self._group.start_soon(self._run, call, step)

    def deny(self, call: FunctionCall, reason: str) -> None:
        """Answer ``call`` without running it: a ``denied`` record saying ``reason``."""
        if call.call_id in self._seen:
            return
        self._seen[call.call_id] = call
        message = f"tool {shown_name(call.name)} was not run: {reason}"
        self._records[call.call_id] = _not_run(call, self._scope.turn, "denied", message)

    def reuse(self, call: FunctionCall, record: ToolCallRecord) -> None:
        """Answer ``call`` with a record it already has (an approved call run by an earlier resume)."""
        if call.call_id not in self._seen:
            self._seen[call.call_id] = call
            self._records[call.call_id] = record

    async def _run(self, call: FunctionCall, step: Awaitable[ToolOutcome]) -> None:
        scope = self._scope
        awaited = False
        try:
            await scope.emit(ToolCallStarted(scope.turn, call.call_id, call.name, call.arguments))
            async with scope.limiter:
                awaited = True
                outcome = await step
            record = self._records[call.call_id] = record_of(call, scope.turn, outcome)
            await scope.emit(ToolCallFinished(record))
        except HookError:
            # The first hook error ends the run; one from a call running beside it is dropped,
            # so that the group raises a single HookError, never a group of them.
            if self._hook_failed:
                return
            self._hook_failed = True
            raise
        finally:
            if not awaited and inspect.iscoroutine(step):
                step.close()  # cancelled before it began: it never runs, and says nothing

    async def settle(
        self, calls: Sequence[FunctionCall] | None, why: str, *, emit_finished: bool = True
    ) -> list[ToolCallRecord]:
        """One record per call of ``calls`` (default: every call given to :meth:`start`), once
        the group is done.

        A call past the cap gets a ``rejected`` record; any other call without a finished record
        (never started, or cancelled) a ``cancelled`` one saying ``why``, so every call still
        has exactly one output. ``emit_finished=False`` emits nothing (and so never waits: a run
        being torn down can still settle).
        """
        records = []
        for call in self._seen.values() if calls is None else calls:
            record = self._records.get(call.call_id)
            if record is None and call.call_id in self._seen and call.call_id not in self._started:
                record = self._rejected(call)
            elif record is None:
                record = _unfinished(call, self._scope.turn, why)
                if emit_finished and call.call_id in self._started:  # announced: announce its end too
                    await self._scope.emit(ToolCallFinished(record))
            records.append(record)
        return records

    def _rejected(self, call: FunctionCall) -> ToolCallRecord:
        cap = self._scope.limits.max_calls_per_response
        message = (
            f"not run: the response asked for {len(self._seen)} tool calls, "
            f"more than max_calls_per_response ({cap})"
        )
        return _not_run(call, self._scope.turn, "rejected", message)


def record_of(call: FunctionCall, turn: int, outcome: ToolOutcome) -> ToolCallRecord:
    """The record of ``call`` that ended in ``outcome``."""
    return ToolCallRecord(
        name=call.name,
        call_id=call.call_id,
        arguments=call.arguments,
        output=outcome.output,
        kind=outcome.kind,
        error=outcome.error,
        duration=outcome.duration,
        turn=turn,
        exception=outcome.exception,
    )


def _request(turn: int, call: FunctionCall) -> ToolRequest:
    return ToolRequest(turn, call.call_id, call.name, call.arguments)


def _unfinished(call: FunctionCall, turn: int, why: str) -> ToolCallRecord:
    message = f"tool {shown_name(call.name)} was not run to its end: {why}"
    return _not_run(call, turn, "cancelled", message)


def _not_run(call: FunctionCall, turn: int, kind: OutcomeKind, message: str) -> ToolCallRecord:
    return record_of(call, turn, ToolOutcome(error_text(kind, message), kind, message, 0.0))
