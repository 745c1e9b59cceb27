"""What a run reports while it works: typed events, and optional hooks that receive them.

The loop emits every event through one callable; :meth:`Agent.run` hands them to the
:class:`Hooks` it was given, :meth:`Agent.run_stream` also yields them to the caller.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeAlias

from agent._errors import HookError
from agent._result import JSONObject, RunResult, ToolCallRecord, Usage

__all__ = [
    "ApprovalRequested",
    "ArgumentsDelta",
    "Emit",
    "Hooks",
    "ModelResponded",
    "RunEvent",
    "RunFinished",
    "RunResumed",
    "RunStarted",
    "StreamEvent",
    "StreamRestarted",
    "TextDelta",
    "ToolCallFinished",
    "ToolCallStarted",
    "ToolProgress",
    "TurnFinished",
    "dispatch_to_hooks",
]


@dataclass(frozen=True, slots=True)
class RunStarted:
    """A run began."""

    run_id: str
    model: str


@dataclass(frozen=True, slots=True)
class RunResumed:
    """A run goes on from where it stopped (in place of :class:`RunStarted`): a durable run
    after a crash, or a paused run resumed with :meth:`Agent.resume`.

    The steps it had completed are not run again and their events are not sent again: what
    follows is only the live part. ``turns_done`` model responses and ``calls_done`` tool
    calls were taken from the run's checkpoints (or its saved state).
    """

    run_id: str
    model: str
    turns_done: int
    calls_done: int


@dataclass(frozen=True, slots=True)
class TextDelta:
    """A piece of the model's answer text, as it streams in."""

    turn: int
    item_id: str
    delta: str


@dataclass(frozen=True, slots=True)
class ArgumentsDelta:
    """A piece of a function call's JSON arguments, as they stream in."""

    turn: int
    item_id: str
    delta: str


@dataclass(frozen=True, slots=True)
class StreamEvent:
    """A stream event with no typed counterpart, passed through as received.

    Reasoning-summary deltas, refusals, and event types the API adds later arrive this way.
    """

    turn: int
    type: str
    data: JSONObject


@dataclass(frozen=True, slots=True)
class StreamRestarted:
    """The turn's stream broke before any tool started and is being requested again.

    Drop the text and argument deltas of this turn received so far: they will come again.
    """

    turn: int


@dataclass(frozen=True, slots=True)
class ModelResponded:
    """A model response arrived complete (its raw body included)."""

    turn: int
    response_id: str
    status: str
    usage: Usage
    body: JSONObject


@dataclass(frozen=True, slots=True)
class ApprovalRequested:
    """A call needs a person's approval before it runs (``@tool(needs_approval=...)``).

    Without an ``on_approval`` hook (or when it returns ``None``) the run pauses once the
    turn's other calls are done; see :attr:`RunResult.pending_approvals`.
    """

    turn: int
    call_id: str
    tool_name: str
    arguments: str
    """The arguments as the model wrote them (a JSON text)."""


@dataclass(frozen=True, slots=True)
class ToolCallStarted:
    """A tool call began (after its arguments arrived complete)."""

    turn: int
    call_id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class ToolProgress:
    """Something a running tool reported through ``ToolContext.report``."""

    turn: int
    call_id: str
    name: str
    data: Any


@dataclass(frozen=True, slots=True)
class ToolCallFinished:
    """A tool call ended; ``record`` says how (output or error, and duration)."""

    record: ToolCallRecord


@dataclass(frozen=True, slots=True)
class TurnFinished:
    """A turn ended: its response arrived and all its tool calls finished."""

    turn: int
    response_id: str
    usage: Usage
    tool_calls: int


@dataclass(frozen=True, slots=True)
class RunFinished:
    """The run ended with ``result``."""

    result: RunResult


RunEvent: TypeAlias = (
    RunStarted
    | RunResumed
    | TextDelta
    | ArgumentsDelta
    | StreamEvent
    | StreamRestarted
    | ModelResponded
    | ApprovalRequested
    | ToolCallStarted
    | ToolProgress
    | ToolCallFinished
    | TurnFinished
    | RunFinished
)
"""Every event a run emits."""

Emit: TypeAlias = Callable[[RunEvent], Awaitable[None]]


class OnRunStart(Protocol):
    """Called when a run starts; may be sync or async."""

    def __call__(self, event: RunStarted, /) -> Awaitable[None] | None: ...


class OnRunResume(Protocol):
    """Called when a durable run goes on after a crash; may be sync or async."""

    def __call__(self, event: RunResumed, /) -> Awaitable[None] | None: ...


class OnRunEnd(Protocol):
    """Called with the result when a run ends normally; may be sync or async."""

    def __call__(self, event: RunFinished, /) -> Awaitable[None] | None: ...


class OnModelResponse(Protocol):
    """Called for each complete model response; may be sync or async."""

    def __call__(self, event: ModelResponded, /) -> Awaitable[None] | None: ...


class OnToolStart(Protocol):
    """Called as each tool call starts; may be sync or async."""

    def __call__(self, event: ToolCallStarted, /) -> Awaitable[None] | None: ...


class OnApproval(Protocol):
    """Decides a call inline (a policy): ``approve()``, ``deny(reason)``, or ``None`` to let a
    person decide later (the run then pauses). May be sync or async; anything else denies."""

    def __call__(self, event: ApprovalRequested, /) -> Any: ...


class OnToolEnd(Protocol):
    """Called as each tool call ends, with its record; may be sync or async."""

    def __call__(self, event: ToolCallFinished, /) -> Awaitable[None] | None: ...


@dataclass(frozen=True, slots=True)
class Hooks:
    """Callbacks for users who prefer them to iterating over events; every one is optional.

    A hook runs inside the run: keep it quick, and an exception it raises ends the run.
    """

    on_run_start: OnRunStart | None = None
    on_run_end: OnRunEnd | None = None
    on_run_resumed: OnRunResume | None = None
    on_model_response: OnModelResponse | None = None
    on_tool_start: OnToolStart | None = None
    on_tool_end: OnToolEnd | None = None
    on_approval: OnApproval | None = None
    """Not an observer like the others: its answer decides the call (see :class:`OnApproval`)."""

    def hook_for(self, event: RunEvent) -> Callable[[Any], Awaitable[None] | None] | None:
        """The hook that wants ``event``, if any."""
        name = _HOOK_NAMES.get(type(event))
        hook: Callable[[Any], Awaitable[None] | None] | None = getattr(self, name) if name else None
        return hook


_HOOK_NAMES: dict[type, str] = {
    RunStarted: "on_run_start",
    RunFinished: "on_run_end",
    RunResumed: "on_run_resumed",
    ModelResponded: "on_model_response",
    ToolCallStarted: "on_tool_start",
    ToolCallFinished: "on_tool_end",
}


async def dispatch_to_hooks(hooks: Hooks | None, event: RunEvent) -> None:
    """Call the hook for ``event``, awaiting it if it is async."""
    hook = hooks.hook_for(event) if hooks else None
    if hook is None:
        return
    try:
        outcome = hook(event)
        if inspect.isawaitable(outcome):
            await outcome
    except Exception as exc:
        name = type(event).__name__
        raise HookError(f"the hook for {name} raised {type(exc).__name__}: {exc}") from exc
