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
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel
import anyio.to_thread
import sniffio
import structlog
from pydantic_core import to_json

from agent._arguments import ArgumentsError, safe_str
from agent._errors import HookError, ToolError
from agent._events import Emit, ToolCallFinished, ToolCallStarted
from agent._limits import DEFAULT_LIMITS, Limits
from agent._registry import ToolRegistry
from agent._result import OutcomeKind, ToolCallRecord
from agent._threads import LoopLocalLimiter, ThreadSlot
from agent._tools import Tool, ToolContext
from agent._wire import FunctionCall

__all__ = ["CallBatch", "ExecutionSettings", "TurnScope", "announce", "execute_call", "run_call"]


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

    def start(self, call: FunctionCall) -> None:
        """Start ``call`` in the group, unless it already started or the response's cap is reached."""
        if call.call_id in self._seen:
            return
        self._seen[call.call_id] = call
        if len(self._started) < self._scope.settings.limits.max_calls_per_response:
            self._started[call.call_id] = call
            self._group.start_soon(self._run, call)

    async def _run(self, call: FunctionCall) -> None:
        # execute_call in its steps, so that a hook raising at the end cannot lose the record.
        try:
            await announce(call, self._scope)
            record = self._records[call.call_id] = await run_call(call, self._scope)
            await self._scope.emit(ToolCallFinished(record))
        except HookError:
            # The first hook error ends the run; one from a call running beside it is dropped,
            # so that the group raises a single HookError, never a group of them.
            if self._hook_failed:
                return
            self._hook_failed = True
            raise

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
        cap = self._scope.settings.limits.max_calls_per_response
        message = (
            f"not run: the response asked for {len(self._seen)} tool calls, "
            f"more than max_calls_per_response ({cap})"
        )
        return _not_run(call, self._scope.turn, "rejected", message)


def _unfinished(call: FunctionCall, turn: int, why: str) -> ToolCallRecord:
    return _not_run(call, turn, "cancelled", f"tool {_shown(call.name)} was not run to its end: {why}")


def _not_run(call: FunctionCall, turn: int, kind: OutcomeKind, message: str) -> ToolCallRecord:
    return ToolCallRecord(
        name=call.name,
        call_id=call.call_id,
        arguments=call.arguments,
        output=_error_text(kind, message),
        kind=kind,
        error=message,
        duration=0.0,
        turn=turn,
    )


async def execute_call(call: FunctionCall, scope: TurnScope) -> ToolCallRecord:
    """Run one tool call to its outcome (the seam for one tool call).

    Raises only the run's own cancellation and :class:`~agent.HookError` (a hook for
    ``ToolCallStarted`` or ``ToolCallFinished`` raised: the run ends, as for any hook). Everything
    the model or the tool does ends in the returned record.
    """
    await announce(call, scope)
    record = await run_call(call, scope)
    await scope.emit(ToolCallFinished(record))
    return record


async def announce(call: FunctionCall, scope: TurnScope) -> None:
    """Log and emit a call's start (a hook may raise :class:`~agent.HookError` here)."""
    scope.log.debug("tool.start", call_id=call.call_id, tool=call.name, arguments=call.arguments)
    await scope.emit(ToolCallStarted(scope.turn, call.call_id, call.name, call.arguments))


async def run_call(call: FunctionCall, scope: TurnScope) -> ToolCallRecord:
    """The call's record, events aside; raises only the run's own cancellation."""
    started = time.perf_counter()
    try:
        outcome = await _outcome(call, scope)
    except anyio.get_cancelled_exc_class():
        raise
    except Exception as exc:  # a fault of the runtime's own: still one outcome, and a loud log
        scope.log.exception("tool.internal_error", call_id=call.call_id, tool=call.name)
        message = f"the runtime failed while running tool {_shown(call.name)} ({type(exc).__name__})"
        outcome = _failure("tool_error", message)
    duration = time.perf_counter() - started
    scope.log.info(
        "tool.end",
        call_id=call.call_id,
        tool=call.name,
        kind=outcome.kind,
        duration=round(duration, 6),
        error=outcome.error,
    )
    return ToolCallRecord(
        name=call.name,
        call_id=call.call_id,
        arguments=call.arguments,
        output=outcome.output,
        kind=outcome.kind,
        error=outcome.error,
        duration=duration,
        turn=scope.turn,
    )


async def _outcome(call: FunctionCall, scope: TurnScope) -> _Outcome:
    settings = scope.settings
    tool = settings.tools.get(call.name)
    if tool is None:
        names = ", ".join(settings.tools.names) or "none"
        return _failure("unknown_tool", f"unknown tool {_shown(call.name)}; available tools: {names}")
    try:
        arguments = await _validate(tool, call.arguments, settings.limits)
    except ArgumentsError as exc:
        return _Outcome("invalid_arguments", _error_text("invalid_arguments", str(exc)), exc.detail)
    context = _context(call, tool, scope) if tool.context_param else None
    timeout = tool.timeout if tool.timeout is not None else settings.tool_timeout
    # Waiting for the run-wide and the tool's slots is not bounded by the timeout: their
    # holders give them back at their own timeout, so the wait always ends. (Plain nesting:
    # an exit stack per call cost more than the rest of the dispatch.)
    try:
        async with scope.limiter:
            if tool.limiter is None:
                return await _in_thread_slot(tool, arguments, context, settings, limit=timeout)
            async with tool.limiter.get():
                return await _in_thread_slot(tool, arguments, context, settings, limit=timeout)
    finally:
        if context is not None:
            context.finish()


_OFF_LOOP_CHARACTERS = 64 * 1024
"""Arguments longer than this are validated in a worker thread: one error per item of a hostile
array can keep pydantic busy for seconds, which must not stall every other run on the loop."""


async def _validate(tool: Tool[..., Any], arguments: str, limits: Limits) -> dict[str, Any]:
    if len(arguments) <= _OFF_LOOP_CHARACTERS:
        return tool.validate(arguments, limits)
    return await anyio.to_thread.run_sync(tool.validate, arguments, limits)


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
    # A worker thread is held until the tool really returns, even after its timeout: hung tools
    # can hold them all. So the wait for one has its own deadline, the call's timeout (and the
    # tool, once it has a thread, gets its whole timeout too).
    threads = settings.thread_limiter.get()
    thread: ThreadSlot | None = None
    if threads.available_tokens >= 1 or limit is None:  # no wait: spare the cancel scope
        thread = await ThreadSlot.acquire(threads)
    else:
        with anyio.move_on_after(limit):
            thread = await ThreadSlot.acquire(threads)
    if thread is None:
        total = settings.thread_limiter.total
        return _failure(
            "timeout",
            f"tool {tool.name!r} could not start within {limit} seconds: no worker thread was free "
            f"(all {total:g} are running other sync tools); try again later",
        )
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
            outcome = _failure("tool_error", str(exc.message))
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
        return _Outcome("ok", _sendable(value))
    try:
        return _Outcome("ok", to_json(value).decode())
    except Exception as exc:  # unserialisable, circular, a property that raises...
        kind = type(value).__name__
        detail = f"the tool returned a {kind}, which cannot be sent as JSON"
        return _Outcome("tool_error", _error_text("tool_error", detail), f"{detail}: {safe_str(exc)}")


def _exception_outcome(tool: Tool[..., Any], exc: Exception, expose: bool) -> _Outcome:
    text = safe_str(exc)
    detail = f"{type(exc).__name__}: {text}"
    message = f"tool {tool.name!r} failed with {type(exc).__name__}"
    if expose:
        message = f"{message}: {text}"
    return _Outcome("tool_error", _error_text("tool_error", message), detail)


def _failure(kind: OutcomeKind, message: str) -> _Outcome:
    return _Outcome(kind, _error_text(kind, message), message)


def _error_text(kind: OutcomeKind, message: str) -> str:
    """The stable form in which the model reads an error: ``{"error": {"type", "message"}}``."""
    return json.dumps({"error": {"type": kind, "message": _sendable(message)}}, ensure_ascii=False)


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _sendable(text: str) -> str:
    """``text`` with each lone surrogate (legal in JSON, not in UTF-8) replaced by U+FFFD."""
    if text.isascii():
        return text
    return _LONE_SURROGATE.sub("\ufffd", text)


def _shown(name: str) -> str:
    """A name the model wrote, quoted for a message, and cut short if long."""
    return repr(name) if len(name) <= 100 else repr(name[:100]) + "..."
