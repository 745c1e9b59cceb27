"""What a run reports: usage, one record per tool call, and the run's result."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from agent._approvals import PendingApproval

__all__ = ["JSONObject", "OutcomeKind", "RunResult", "ToolCallRecord", "Usage"]

JSONObject = dict[str, Any]
"""A JSON object as it crosses the wire (a Responses input or output item, a request body)."""

OutcomeKind = Literal[
    "ok", "invalid_arguments", "unknown_tool", "timeout", "cancelled", "tool_error", "rejected", "denied"
]
"""How one tool call ended. Every kind but ``"ok"`` is sent to the model as an error output.

``"rejected"``: the runtime did not run the call because a limit forbade it (e.g. more calls in
one response than ``Limits.max_calls_per_response``). ``"denied"``: a person (or the
``on_approval`` policy) did not approve it, or no valid decision was given."""


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens spent, summed over the responses of a run."""

    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0

    @classmethod
    def from_wire(cls, usage: JSONObject | None) -> Usage:
        """Read a response's ``usage`` object; a missing or partial one counts as zeros."""
        if not usage:
            return cls(requests=1)
        return cls(
            requests=1,
            input_tokens=_int(usage.get("input_tokens")),
            output_tokens=_int(usage.get("output_tokens")),
            total_tokens=_int(usage.get("total_tokens")),
            cached_tokens=_int(_get(usage, "input_tokens_details", "cached_tokens")),
            reasoning_tokens=_int(_get(usage, "output_tokens_details", "reasoning_tokens")),
        )

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            requests=self.requests + other.requests,
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            total_tokens=self.total_tokens + other.total_tokens,
            cached_tokens=self.cached_tokens + other.cached_tokens,
            reasoning_tokens=self.reasoning_tokens + other.reasoning_tokens,
        )


def _get(obj: JSONObject, key: str, sub: str) -> Any:
    inner = obj.get(key)
    return inner.get(sub) if isinstance(inner, dict) else None


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


@dataclass(frozen=True, slots=True)
class ToolCallRecord:
    """One executed ``function_call``: what the model asked, what it got back, and how it went."""

    name: str
    call_id: str
    arguments: str
    """The arguments exactly as the model sent them (a JSON string, possibly broken)."""
    output: str
    """The ``function_call_output`` text the model received (a result, or an error text)."""
    kind: OutcomeKind
    error: str | None
    """Why the call failed, for the application (may say more than the model was told)."""
    duration: float
    """Seconds from the call's start to its outcome, including waiting for a concurrency slot."""
    turn: int
    exception: BaseException | None = field(default=None, compare=False, repr=False)
    """The exception the tool raised (traceback included), for the developer; ``None`` when it
    raised none. Never sent to the model, never in ``==``, ``repr`` or JSON: a result read back
    from JSON (a durable run's) has ``None`` here."""

    @property
    def ok(self) -> bool:
        """Whether the tool ran and returned a result."""
        return self.kind == "ok"

    def to_json(self) -> JSONObject:
        """The record as JSON, without its exception (not data, and it may hold secrets)."""
        return {
            "name": self.name,
            "call_id": self.call_id,
            "arguments": self.arguments,
            "output": self.output,
            "kind": self.kind,
            "error": self.error,
            "duration": self.duration,
            "turn": self.turn,
        }

    @classmethod
    def from_json(cls, data: JSONObject) -> ToolCallRecord:
        """The record :meth:`to_json` wrote (``exception`` is ``None``)."""
        return cls(**{key: value for key, value in data.items() if key != "exception"})


@dataclass(frozen=True, slots=True)
class RunResult:
    """The outcome of :meth:`Agent.run`.

    Continue a conversation with ``await agent.run(result.items + [next_message])``.
    """

    output: str
    """The final answer's text (the output_text parts of the last response's messages)."""
    items: list[JSONObject]
    """The whole conversation: the input items, every output item and every tool output."""
    tool_calls: tuple[ToolCallRecord, ...]
    usage: Usage
    turns: int
    """How many model responses the run took."""
    response_ids: tuple[str, ...]
    status: Literal["completed", "incomplete", "awaiting_approval"] = "completed"
    """``"awaiting_approval"``: the run paused for :attr:`pending_approvals`; resume it from
    :attr:`state` with :meth:`Agent.resume`."""
    incomplete_reason: str | None = None
    """Why the last response was cut short (e.g. ``"max_output_tokens"``), when ``status`` says so."""
    last_response: JSONObject = field(default_factory=dict, repr=False)
    """The last response body as received, unknown fields included (e.g. a gateway's own)."""
    output_parsed: Any = None
    """The final answer as the run's ``output_type`` (an instance of it); ``None`` without one,
    or when the run ended ``"incomplete"``."""
    pending_approvals: tuple[PendingApproval, ...] = ()
    """The calls waiting for a decision (``status == "awaiting_approval"``), in call order."""
    state: JSONObject | None = field(default=None, repr=False, compare=False)
    """A paused run's saved state: JSON-serialisable, for :meth:`Agent.resume` (``None`` unless
    ``status == "awaiting_approval"``)."""
