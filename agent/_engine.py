"""The engine boundary: the only two ways a run reaches the world.

A run does two kinds of work that are not a pure function of its state: it asks the model for
a response, and it calls a tool. The loop does both through an :class:`Engine`, with inputs and
outputs that are plain data (JSON, or frozen dataclasses that round-trip through JSON), so a
durable-execution engine can checkpoint each one as a step and replay it after a crash.
Everything else the loop does is a deterministic function of what these two return.

What a step needs besides its input (the HTTP client, the tools, limits, ``deps``, the event
outlet, the logger, the run id) belongs to the engine, which is made once per run. The
in-process engine (``_inprocess.py``) is the plain runtime; ``agent.durable`` wraps it to make each step
durable. A third engine implements the two methods of :class:`Engine` and nothing else.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from agent._approvals import PendingApproval
from agent._limits import DEFAULT_LIMITS, Limits
from agent._result import JSONObject, OutcomeKind
from agent._wire import FunctionCall, ModelResponse, parse_response

__all__ = ["Engine", "LiveTurn", "ModelRequest", "ToolOutcome", "ToolRequest", "response_from_json"]


@dataclass(frozen=True, slots=True)
class ModelRequest:
    """One model request: the ``/v1/responses`` request body of turn ``turn``."""

    turn: int
    body: JSONObject


@dataclass(frozen=True, slots=True)
class ToolRequest:
    """One tool call, as the model asked for it in turn ``turn``."""

    turn: int
    call_id: str
    name: str
    arguments: str
    """The arguments exactly as the model sent them (a JSON string, possibly broken)."""

    def to_json(self) -> JSONObject:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: JSONObject) -> ToolRequest:
        return cls(**data)


@dataclass(frozen=True, slots=True)
class ToolOutcome:
    """How one tool call ended: the output the model reads, and what the application is told."""

    output: str
    kind: OutcomeKind
    error: str | None
    duration: float
    """Seconds the call took in the engine (waiting for the tool's own slot and a thread included)."""
    exception: BaseException | None = field(default=None, compare=False, repr=False)
    """The exception the tool raised, for the record only: not data, so not in :meth:`to_json`
    (an outcome read back from JSON has ``None``)."""

    def to_json(self) -> JSONObject:
        return {"output": self.output, "kind": self.kind, "error": self.error, "duration": self.duration}

    @classmethod
    def from_json(cls, data: JSONObject) -> ToolOutcome:
        return cls(**data)


def response_from_json(body: JSONObject, limits: Limits = DEFAULT_LIMITS) -> ModelResponse:
    """A model request's output rebuilt from its JSON body (what a durable engine stored)."""
    return parse_response(body, max_output_items=limits.max_output_items)


class LiveTurn(Protocol):
    """The turn a streamed model request feeds while it is still being read.

    An engine that runs the request in-process may hand it each call as soon as the call's
    arguments are complete, so the tool starts before the response ends (eager tools). An
    engine that checkpoints the request as one step ignores it: the loop then starts the calls
    once the response is in.
    """

    def call_ready(self, call: FunctionCall) -> None:
        """A call's arguments arrived complete: start it now if it may start early."""

    @property
    def started(self) -> bool:
        """Whether any call has started (the request is then not sent again)."""


class Engine(Protocol):
    """What the loop goes through for everything that is not a pure function of its state."""

    async def request_model(self, request: ModelRequest, live: LiveTurn | None = None) -> ModelResponse:
        """One model request, retried as the engine sees fit; a response, or an ``AgentError``.

        The response round-trips through its JSON ``body`` (:func:`response_from_json`).
        """

    def call_tool(self, request: ToolRequest) -> Awaitable[ToolOutcome]:
        """One tool call to its outcome; raises nothing but the run's own cancellation.

        The loop calls this for a turn's calls one after another, in call order, and awaits
        the results concurrently later: an engine that numbers its steps numbers them here, so
        that a replay numbers them the same way whatever order the calls finish in.
        """

    async def wait_for_decisions(
        self, turn: int, pending: Sequence[PendingApproval]
    ) -> Mapping[str, object] | None:
        """Decisions for calls that need a person's approval, or ``None`` to pause the run.

        The in-process engine pauses (the run returns its state for :meth:`Agent.resume`); a
        durable engine can wait instead, durably (a run waiting for days holds no process).
        The values go through the same checks as ``Agent.resume``'s: only an approval runs.
        """
