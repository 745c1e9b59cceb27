"""What a resumed durable run's consumers see: the live part only, after one ``RunResumed``."""

from __future__ import annotations

from dataclasses import dataclass, field

from agent._events import (
    ApprovalRequested,
    Emit,
    ModelResponded,
    RunEvent,
    RunFinished,
    RunResumed,
    RunStarted,
    ToolCallFinished,
    ToolCallStarted,
    TurnFinished,
)

__all__ = ["ReplayGate"]


@dataclass(slots=True)
class ReplayGate:
    """What a resumed run's consumers see: the live part only, after one :class:`RunResumed`.

    A step's events wait until the step's fate is known: a step whose body runs is live (its
    ``ToolCallStarted`` goes out as the body begins); a step answered from its checkpoint was
    done before the crash, and its events were sent then. ``ApprovalRequested`` waits likewise
    for the step that records the call's inline decision (:meth:`live_approval`).
    """

    emit_to: Emit
    run_id: str
    model: str
    done: tuple[int, int] = (0, 0)
    """Model requests and tool calls checkpointed before this execution began."""
    _start: RunStarted | None = None
    _held: dict[tuple[int, str], ToolCallStarted] = field(default_factory=dict)
    _asks: dict[tuple[int, str], ApprovalRequested] = field(default_factory=dict)
    _live_turns: set[int] = field(default_factory=set)
    _live_calls: set[tuple[int, str]] = field(default_factory=set)
    _replayed_turns: set[int] = field(default_factory=set)
    _replayed_calls: set[tuple[int, str]] = field(default_factory=set)

    async def emit(self, event: RunEvent) -> None:
        if isinstance(event, RunStarted):
            self._start = event
            return
        if isinstance(event, ToolCallStarted):
            self._held[(event.turn, event.call_id)] = event
            return
        if isinstance(event, ApprovalRequested):
            self._asks[(event.turn, event.call_id)] = event
            return
        if self._replayed(event):
            return
        if isinstance(event, ToolCallFinished):  # a call that ended without its step's body
            await self._release((event.record.turn, event.record.call_id))
        if isinstance(event, RunFinished):
            await self._begin()
        await self.emit_to(event)

    def _replayed(self, event: RunEvent) -> bool:
        if isinstance(event, ToolCallFinished):
            return (event.record.turn, event.record.call_id) in self._replayed_calls
        if isinstance(event, ModelResponded):
            return event.turn in self._replayed_turns
        if isinstance(event, TurnFinished):
            live_call = any(turn == event.turn for turn, _ in self._live_calls)
            return event.turn in self._replayed_turns and not live_call
        return False

    async def live_model(self, turn: int) -> None:
        await self._begin()
        self._live_turns.add(turn)

    async def live_call(self, turn: int, call_id: str) -> None:
        await self._begin()
        self._live_calls.add((turn, call_id))
        await self._release((turn, call_id))

    def model_done(self, turn: int) -> None:
        if turn not in self._live_turns:
            self._replayed_turns.add(turn)

    def call_done(self, turn: int, call_id: str) -> None:
        if (turn, call_id) not in self._live_calls:
            self._replayed_calls.add((turn, call_id))
            self._held.pop((turn, call_id), None)

    async def live_approval(self, turn: int, call_id: str) -> ApprovalRequested | None:
        """The decision step of call ``call_id`` runs: its ``ApprovalRequested`` goes out (and
        is returned, for the step)."""
        await self._begin()
        asked = self._asks.pop((turn, call_id), None)
        if asked is not None:
            await self.emit_to(asked)
        return asked

    def approval_done(self, turn: int, call_id: str) -> None:
        """The decision step ended (a replayed one's event was sent before the crash)."""
        self._asks.pop((turn, call_id), None)

    async def _release(self, key: tuple[int, str]) -> None:
        started = self._held.pop(key, None)
        if started is not None:
            await self.emit_to(started)

    async def _begin(self) -> None:
        """Send the run's first event: RunStarted, or RunResumed if steps were replayed."""
        start, self._start = self._start, None
        if start is None:
            return
        if any(self.done):
            await self.emit_to(RunResumed(self.run_id, self.model, *self.done))
        else:
            await self.emit_to(start)
