"""One tool call, run in this process to exactly one outcome.

:func:`run_tool` is what the in-process engine does for the boundary's tool operation; it never
raises except when the run itself is cancelled. Whatever the tool does - bad arguments, an
exception, a hang - the model gets one output it can react to, and the application a
:class:`~agent._engine.ToolOutcome` saying what happened.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import math
import re
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
import anyio.lowlevel
import anyio.to_thread
import sniffio
import structlog
from pydantic_core import to_json

from agent._arguments import ArgumentsError, safe_str
from agent._engine import ToolOutcome, ToolRequest
from agent._errors import ToolError
from agent._events import Emit
from agent._limits import DEFAULT_LIMITS, Limits
from agent._registry import ToolRegistry
from agent._result import OutcomeKind
from agent._threads import LoopLocalLimiter, ThreadSlot
from agent._tools import Tool, ToolContext

__all__ = ["ExecutionSettings", "ToolEnvironment", "error_text", "run_tool", "shown_name"]

E = TypeVar("E", bound=BaseException)


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
class ToolEnvironment:
    """What every tool call of one run shares besides its own request."""

    settings: ExecutionSettings
    deps: Any
    emit: Emit
    log: structlog.typing.FilteringBoundLogger
    run_id: str


@dataclass(frozen=True, slots=True)
class _Outcome:
    kind: OutcomeKind
    output: str
    error: str | None = None
    exception: BaseException | None = None


async def run_tool(request: ToolRequest, env: ToolEnvironment) -> ToolOutcome:
    """The call's outcome; raises only the run's own cancellation."""
    env.log.debug("tool.start", call_id=request.call_id, tool=request.name, arguments=request.arguments)
    started = time.perf_counter()
    try:
        outcome = await _outcome(request, env)
    except anyio.get_cancelled_exc_class():
        raise
    except Exception as exc:  # a fault of the runtime's own: still one outcome, and a loud log
        env.log.exception("tool.internal_error", call_id=request.call_id, tool=request.name)
        message = f"the runtime failed while running tool {shown_name(request.name)} ({type(exc).__name__})"
        outcome = _failure("tool_error", message, _without_own_frame(exc))
    duration = time.perf_counter() - started
    env.log.info(
        "tool.end",
        call_id=request.call_id,
        tool=request.name,
        kind=outcome.kind,
        duration=round(duration, 6),
        error=outcome.error,
    )
    if outcome.exception is not None and env.log.is_enabled_for(logging.DEBUG):
        _log_traceback(env.log, request, outcome.exception)
    return ToolOutcome(outcome.output, outcome.kind, outcome.error, duration, outcome.exception)


def _log_traceback(
    log: structlog.typing.FilteringBoundLogger, request: ToolRequest, exc: BaseException
) -> None:
    """The tool's traceback, for the developer: at debug level only, as it may quote secrets."""
    text = "".join(traceback.format_exception(exc)).rstrip("\n")
    log.debug("tool.exception", call_id=request.call_id, tool=request.name, traceback=text)


async def _outcome(request: ToolRequest, env: ToolEnvironment) -> _Outcome:
    settings = env.settings
    tool = settings.tools.get(request.name)
    if tool is None:
        names = ", ".join(settings.tools.names) or "none"
        return _failure("unknown_tool", f"unknown tool {shown_name(request.name)}; available tools: {names}")
    try:
        arguments = await _validate(tool, request.arguments, settings.limits)
    except ArgumentsError as exc:
        return _Outcome("invalid_arguments", error_text("invalid_arguments", str(exc)), exc.detail)
    context = _context(request, tool, env) if tool.context_param else None
    timeout = tool.timeout if tool.timeout is not None else settings.tool_timeout
    # Waiting for the tool's slot is not bounded by the timeout: its holders give it back at
    # their own timeout, so the wait always ends. (The run-wide limit is the loop's.)
    try:
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


def _context(request: ToolRequest, tool: Tool[..., Any], env: ToolEnvironment) -> ToolContext[Any]:
    # Only for tools that take one: its threading.Event alone is six objects per call.
    loop = None if tool.is_async else anyio.lowlevel.current_token()
    return ToolContext(
        request.call_id, tool.name, env.deps, request.turn, emit=env.emit, loop=loop, run_id=env.run_id
    )


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
            outcome = _failure("tool_error", str(exc.message), _without_own_frame(exc))
        except Exception as exc:
            outcome = _exception_outcome(tool, _without_own_frame(exc), settings.expose_exception_messages)
    if outcome is None:  # the time limit cancelled the call
        return _failure("timeout", f"tool {tool.name!r} did not finish within {limit} seconds")
    return outcome


async def _invoke(call: Callable[[], Any], thread: ThreadSlot | None) -> Any:
    """Await an async tool on the loop; run a sync one on its worker thread."""
    if thread is None:
        return await call()
    value = await thread.run(call)
    return await value if inspect.isawaitable(value) else value


def _without_own_frame(exc: E) -> E:
    """``exc`` with its traceback starting below this module's catching frame.

    That frame holds the outcome, which will hold ``exc``: kept, it would make a reference
    cycle (exception, traceback, frame, outcome) that only the garbage collector frees.
    """
    tb = exc.__traceback__
    return exc.with_traceback(tb.tb_next) if tb is not None else exc


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
        return _Outcome("tool_error", error_text("tool_error", detail), f"{detail}: {safe_str(exc)}", exc)


def _exception_outcome(tool: Tool[..., Any], exc: Exception, expose: bool) -> _Outcome:
    text = safe_str(exc)
    detail = f"{type(exc).__name__}: {text}"
    message = f"tool {tool.name!r} failed with {type(exc).__name__}"
    if expose:
        message = f"{message}: {text}"
    return _Outcome("tool_error", error_text("tool_error", message), detail, exc)


def _failure(kind: OutcomeKind, message: str, exception: BaseException | None = None) -> _Outcome:
    return _Outcome(kind, error_text(kind, message), message, exception)


def error_text(kind: OutcomeKind, message: str) -> str:
    """The stable form in which the model reads an error: ``{"error": {"type", "message"}}``."""
    return json.dumps({"error": {"type": kind, "message": _sendable(message)}}, ensure_ascii=False)


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _sendable(text: str) -> str:
    """``text`` with each lone surrogate (legal in JSON, not in UTF-8) replaced by U+FFFD."""
    if text.isascii():
        return text
    return _LONE_SURROGATE.sub("\ufffd", text)


def shown_name(name: str) -> str:
    """A name the model wrote, quoted for a message, and cut short if long."""
    return repr(name) if len(name) <= 100 else repr(name[:100]) + "..."
