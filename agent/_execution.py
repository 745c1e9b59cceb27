"""One turn's tool calls: run them all at once, each to exactly one outcome.

:func:`execute_call` is the seam for one tool call (a durable-execution engine can wrap it as a
checkpointed step); it never raises except when the run itself is cancelled. Whatever the tool
does - bad arguments, an exception, a hang - the model gets one ``function_call_output`` it can
react to, and the application gets a :class:`ToolCallRecord` saying what happened.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel
import sniffio
import structlog
from pydantic_core import PydanticSerializationError, to_json

from agent._errors import ToolError
from agent._events import Emit, ToolCallFinished, ToolCallStarted
from agent._limits import DEFAULT_LIMITS, Limits
from agent._registry import ToolRegistry
from agent._result import OutcomeKind, ToolCallRecord
from agent._threads import LoopLocalLimiter, ThreadSlot
from agent._tools import ArgumentsError, Tool, ToolContext
from agent._wire import FunctionCall

__all__ = ["CallBatch", "ExecutionSettings", "TurnScope", "execute_call"]


@dataclass(frozen=True, slots=True)
class ExecutionSettings:
    """How tool calls run; one per agent, shared read-only by all its runs."""

    tools: ToolRegistry
    tool_timeout: float | None
    thread_limiter: LoopLocalLimiter
    """Worker threads for sync tools, counted until each thread really ends."""
    expose_exception_messages: bool = False
    limits: Limits = DEFAULT_LIMITS


@dataclass(frozen=True, slots=True)
class _Outcome:
    kind: OutcomeKind
    output: str
    error: str | None = None


@dataclass(frozen=True, slots=True)
class TurnScope:
    """What every tool call of one turn shares."""

    settings: ExecutionSettings
    limiter: anyio.CapacityLimiter
    """The run-wide limit on calls running at once."""
    deps: Any
    turn: int
    log: structlog.typing.FilteringBoundLogger
    emit: Emit


class CallBatch:
    """One turn's tool calls: started one by one as they arrive, all finished with the group.

    Calls run concurrently in ``group``; a call id started twice runs once. :meth:`settle`
    gives every call exactly one record, in the order asked for, never in completion order.
    """

    def __init__(self, group: anyio.abc.TaskGroup, scope: TurnScope) -> None:
        self._group = group
        self._scope = scope
        self._records: dict[str, ToolCallRecord] = {}
        self._started: dict[str, FunctionCall] = {}

    @property
    def started(self) -> bool:
        """Whether any call has started (a streamed request is then not retried)."""
        return bool(self._started)

    def start(self, call: FunctionCall) -> None:
        """Start ``call`` in the group, unless it already started."""
        if call.call_id not in self._started:
            self._started[call.call_id] = call
            self._group.start_soon(self._run, call)

    async def _run(self, call: FunctionCall) -> None:
        self._records[call.call_id] = await execute_call(call, self._scope)

    async def settle(self, calls: Sequence[FunctionCall] | None, why: str) -> list[ToolCallRecord]:
        """One record per call of ``calls`` (default: those started), once the group is done.

        A call without a finished record (never started, or cancelled) gets a ``cancelled``
        record saying ``why``, so every call still has exactly one output.
        """
        records = []
        for call in self._started.values() if calls is None else calls:
            record = self._records.get(call.call_id)
            if record is None:
                record = _unfinished(call, self._scope.turn, why)
                if call.call_id in self._started:  # it was announced: announce its end too
                    await self._scope.emit(ToolCallFinished(record))
            records.append(record)
        return records


def _unfinished(call: FunctionCall, turn: int, why: str) -> ToolCallRecord:
    message = f"tool {call.name!r} was not run to its end: {why}"
    return ToolCallRecord(
        name=call.name,
        call_id=call.call_id,
        arguments=call.arguments,
        output=_error_text("cancelled", message),
        kind="cancelled",
        error=message,
        duration=0.0,
        turn=turn,
    )


async def execute_call(call: FunctionCall, scope: TurnScope) -> ToolCallRecord:
    """Run one tool call to its outcome (the seam for one tool call)."""
    log = scope.log.bind(call_id=call.call_id, tool=call.name)
    started = time.perf_counter()
    log.debug("tool.start", arguments=call.arguments)
    await scope.emit(ToolCallStarted(scope.turn, call.call_id, call.name, call.arguments))
    outcome = await _outcome(call, scope)
    duration = time.perf_counter() - started
    log.info("tool.end", kind=outcome.kind, duration=round(duration, 6), error=outcome.error)
    record = ToolCallRecord(
        name=call.name,
        call_id=call.call_id,
        arguments=call.arguments,
        output=outcome.output,
        kind=outcome.kind,
        error=outcome.error,
        duration=duration,
        turn=scope.turn,
    )
    await scope.emit(ToolCallFinished(record))
    return record


async def _outcome(call: FunctionCall, scope: TurnScope) -> _Outcome:
    settings = scope.settings
    tool = settings.tools.get(call.name)
    if tool is None:
        names = ", ".join(settings.tools.names) or "none"
        return _failure("unknown_tool", f"unknown tool {call.name!r}; available tools: {names}")
    try:
        arguments = tool.validate(call.arguments)
    except ArgumentsError as exc:
        return _failure("invalid_arguments", str(exc))
    context = _context(call, tool, scope) if tool.context_param else None
    timeout = tool.timeout if tool.timeout is not None else settings.tool_timeout
    # Waiting for a slot (run-wide, per tool, worker thread) is not the tool's time: the
    # timeout starts once the call can really run. (Plain nesting: an exit stack per call
    # cost more than the rest of the dispatch.)
    async with scope.limiter:
        if tool.limiter is None:
            return await _in_thread_slot(tool, arguments, context, settings, limit=timeout)
        async with tool.limiter.get():
            return await _in_thread_slot(tool, arguments, context, settings, limit=timeout)


def _context(call: FunctionCall, tool: Tool[..., Any], scope: TurnScope) -> ToolContext[Any]:
    # Only for tools that take one: its threading.Event alone is six objects per call.
    loop = None if tool.is_async else anyio.lowlevel.current_token()
    return ToolContext(call.call_id, tool.name, scope.deps, scope.turn, emit=scope.emit, loop=loop)


async def _in_thread_slot(
    tool: Tool[..., Any],
    arguments: dict[str, Any],
    context: ToolContext[Any] | None,
    settings: ExecutionSettings,
    *,
    limit: float | None,
) -> _Outcome:
    if tool.is_async:
        return await _run_with_timeout(tool, arguments, context, settings, None, limit=limit)
    thread = await ThreadSlot.acquire(settings.thread_limiter.get())
    try:
        return await _run_with_timeout(tool, arguments, context, settings, thread, limit=limit)
    finally:
        thread.close()


async def _run_with_timeout(
    tool: Tool[..., Any],
    arguments: dict[str, Any],
    context: ToolContext[Any] | None,
    settings: ExecutionSettings,
    thread: ThreadSlot | None,
    *,
    limit: float | None,
) -> _Outcome:
    outcome: _Outcome | None = None
    with anyio.move_on_after(math.inf if limit is None else limit):
        try:
            outcome = _success(await _invoke(tool.bind(arguments, context), thread))
        except anyio.get_cancelled_exc_class():
            if context is not None:
                context.cancel_event.set()
            if _being_cancelled():
                raise
            outcome = _failure("cancelled", f"tool {tool.name!r} was cancelled")
        except ToolError as exc:
            outcome = _failure("tool_error", exc.message)
        except Exception as exc:
            outcome = _exception_outcome(tool, exc, settings.expose_exception_messages)
    if outcome is None:  # the time limit cancelled the call
        return _failure("timeout", f"tool {tool.name!r} did not finish within {limit} seconds")
    return outcome


async def _invoke(call: Callable[[], Any], thread: ThreadSlot | None) -> Any:
    """Await an async tool on the loop; run a sync one on its worker thread."""
    if thread is None:
        return await call()
    value = await thread.run(call)
    return await value if inspect.isawaitable(value) else value


def _being_cancelled() -> bool:
    """Whether a cancellation came from outside the tool (timeout, run cancelled)."""
    if anyio.current_effective_deadline() == -math.inf:
        return True
    if sniffio.current_async_library() == "asyncio":
        task = asyncio.current_task()
        return task is not None and task.cancelling() > 0
    return False


def _success(value: Any) -> _Outcome:
    if isinstance(value, str):
        return _Outcome("ok", value)
    try:
        return _Outcome("ok", to_json(value).decode())
    except PydanticSerializationError:
        kind = type(value).__name__
        return _failure("tool_error", f"the tool returned a {kind}, which cannot be sent as JSON")


def _exception_outcome(tool: Tool[..., Any], exc: Exception, expose: bool) -> _Outcome:
    detail = f"{type(exc).__name__}: {exc}"
    message = f"tool {tool.name!r} failed with {type(exc).__name__}"
    if expose:
        message = f"{message}: {exc}"
    return _Outcome("tool_error", _error_text("tool_error", message), detail)


def _failure(kind: OutcomeKind, message: str) -> _Outcome:
    return _Outcome(kind, _error_text(kind, message), message)


def _error_text(kind: OutcomeKind, message: str) -> str:
    """The stable form in which the model reads an error: ``{"error": {"type", "message"}}``."""
    return json.dumps({"error": {"type": kind, "message": message}}, ensure_ascii=False)
