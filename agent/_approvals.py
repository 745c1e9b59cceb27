"""Human approval of tool calls: which calls need it, the decisions, and a paused run's state.

A run whose response asks for calls that need approval runs the others, then pauses: its
:class:`RunResult` has ``status="awaiting_approval"``, the calls waiting, and ``state``, a JSON
snapshot from which :meth:`Agent.resume` goes on, in this process or another. Only a
:class:`Decision` made by :func:`approve` runs a call: a missing decision, ``None``, ``True``,
a string, a dict... deny it (pydantic-ai #8060 ran a tool on ``None``).
"""

from __future__ import annotations

import hashlib
import hmac
import inspect
import json
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

from agent._errors import InvalidStateError

if TYPE_CHECKING:
    from agent._tools import ToolContext

__all__ = [
    "STATE_VERSION",
    "Decision",
    "NeedsApproval",
    "PendingApproval",
    "approve",
    "deny",
    "needs_approval",
    "seal",
    "unsealed",
]

STATE_VERSION = 1
"""The version of the saved-state format this runtime writes (and the newest it reads)."""

_FORMAT = "agent-runtime/run-state"

NeedsApproval: TypeAlias = "bool | Callable[[ToolContext[Any], dict[str, Any]], bool | Awaitable[bool]]"
"""``@tool(needs_approval=...)``: always, never, or a predicate on the call's context and its
validated arguments. Only a predicate's ``False`` lets the call run unasked; anything else it
returns (``None`` included) or raises means the call waits for a person."""


@dataclass(frozen=True, slots=True)
class Decision:
    """A person's answer for one call; make it with :func:`approve` or :func:`deny`."""

    approved: bool
    reason: str = ""
    """Why it was denied: the model reads it."""
    arguments: dict[str, Any] | None = None
    """Arguments to run the call with instead of the model's (validated like the model's)."""


def approve(*, arguments: Mapping[str, Any] | None = None) -> Decision:
    """Run the call, with the model's arguments or with ``arguments`` instead."""
    return Decision(True, arguments=dict(arguments) if arguments is not None else None)


def deny(reason: str = "") -> Decision:
    """Do not run the call; the model gets a ``denied`` output saying ``reason``."""
    return Decision(False, reason=str(reason))


@dataclass(frozen=True, slots=True)
class PendingApproval:
    """A call that waits for a decision."""

    call_id: str
    tool_name: str
    arguments: str
    """The arguments as the model wrote them (a JSON text)."""
    turn: int

    @property
    def parsed_arguments(self) -> Any:
        """The arguments as JSON values (``None`` if the model's text is not JSON)."""
        try:
            return json.loads(self.arguments)
        except ValueError:
            return None


async def needs_approval(rule: NeedsApproval, context: ToolContext[Any], arguments: dict[str, Any]) -> bool:
    """Whether a call waits for a person under ``rule``: anything but a clear ``False`` says yes."""
    if isinstance(rule, bool):
        return rule
    try:
        answer = rule(context, arguments)
        if inspect.isawaitable(answer):
            answer = await answer
    except Exception:
        return True
    return answer is not False


def checked_decision(value: object) -> Decision | None:
    """``value`` if it is a usable decision, else ``None`` (which denies the call)."""
    if not isinstance(value, Decision) or not isinstance(value.approved, bool):
        return None
    if value.arguments is not None and not isinstance(value.arguments, dict):
        return None
    return value


def seal(state: dict[str, Any], key: bytes | None) -> dict[str, Any]:
    """``state`` with its format, version and digest (HMAC-SHA256 under ``key``, else SHA-256)."""
    state = {"format": _FORMAT, "version": STATE_VERSION, "nonce": uuid.uuid4().hex, **state}
    state.pop("digest", None)
    state["digest"] = _digest(state, key)
    return state


def reseal(state: dict[str, Any], key: bytes | None) -> None:
    """Recompute ``state``'s digest in place, after the runtime recorded something in it."""
    state.pop("digest", None)
    state["digest"] = _digest(state, key)


def unsealed(state: object, key: bytes | None) -> dict[str, Any]:
    """A saved state, checked: a JSON object of our format, a version we read, an intact digest."""
    if state is None:
        raise InvalidStateError("no run state: only a run that paused for approvals has one")
    if isinstance(state, (str, bytes)):
        try:
            state = json.loads(state)
        except ValueError:
            raise InvalidStateError("the run state is not JSON") from None
    if not isinstance(state, dict) or state.get("format") != _FORMAT:
        raise InvalidStateError("this is not a run state saved by agent-runtime")
    version = state.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise InvalidStateError(f"the run state has no valid version (got {version!r})")
    if version > STATE_VERSION:
        raise InvalidStateError(
            f"the run state has version {version}, newer than this runtime reads ({STATE_VERSION}):"
            " resume it with a newer agent-runtime"
        )
    body = {k: v for k, v in state.items() if k != "digest"}
    digest = state.get("digest")
    if not isinstance(digest, str) or not hmac.compare_digest(digest, _digest(body, key)):
        keyed = " (or it was sealed with another state_key)" if key else ""
        raise InvalidStateError(f"the run state was changed after it was saved{keyed}")
    return state


def _digest(state: Mapping[str, Any], key: bytes | None) -> str:
    canonical = json.dumps(state, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
    if key is None:
        return "sha256:" + hashlib.sha256(canonical).hexdigest()
    return "hmac-sha256:" + hmac.new(key, canonical, hashlib.sha256).hexdigest()
