"""A paused run's saved state: written when the run pauses, read back (and checked) to resume it.

The state is plain JSON (see the README's "Approvals" section for its fields). Reading it back
checks more than its digest: the calls it waits for must be ``function_call`` items of its own
conversation that no output answers yet, so a state can only resume calls its model asked for.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from agent._approvals import PendingApproval, reseal, seal, unsealed
from agent._engine import response_from_json
from agent._errors import InvalidStateError, ProtocolError
from agent._loop import RunState
from agent._result import JSONObject, ToolCallRecord, Usage
from agent._wire import FunctionCall

__all__ = ["DoneCalls", "Resume", "Resumption", "record_done", "resumption", "saved_state"]


def saved_state(run_id: str, model: str, state: RunState, key: bytes | None) -> JSONObject:
    """The JSON state of a run that paused for ``state.awaiting``, sealed with its digest."""
    return seal(
        {
            "run_id": run_id,
            "model": model,
            "turn": len(state.response_ids),
            "items": state.items,
            "pending_items": state.pending,
            "records": [record.to_json() for record in state.records],
            "usage": dataclasses.asdict(state.usage),
            "response_ids": state.response_ids,
            "last_response": state.last.body if state.last else None,
            "awaiting": [dataclasses.asdict(waiting) for waiting in state.awaiting],
            "done": {},
        },
        key,
    )


@dataclass(frozen=True, slots=True)
class Resumption:
    """What resuming a saved state needs: the run's state, the calls it waits for, and what
    earlier resumes of the same state already ran."""

    run_id: str
    nonce: str
    turn: int
    state: RunState
    waiting: list[FunctionCall]
    done: dict[str, ToolCallRecord]


@dataclass(frozen=True, slots=True)
class Resume:
    """One call of :meth:`Agent.resume`: the checked state, the decisions, the caller's state object."""

    resumption: Resumption
    decisions: Mapping[str, object]
    saved: object


def resumption(saved: object, key: bytes | None) -> Resumption:
    """Read and check a saved state; raise InvalidStateError for anything that does not add up."""
    data = unsealed(saved, key)
    try:
        return _read(data)
    except InvalidStateError:
        raise
    except (KeyError, TypeError, ValueError, ValidationError, ProtocolError) as exc:
        raise InvalidStateError(f"the run state is malformed ({type(exc).__name__}: {exc})") from None


def record_done(saved: object, key: bytes | None, records: list[ToolCallRecord]) -> None:
    """Write the calls a resume ran into ``saved`` (when it is the dict the caller holds), so a
    second resume of the same object reuses them instead of running them again."""
    if not isinstance(saved, dict) or not records:
        return
    done = saved.setdefault("done", {})
    for record in records:
        done[record.call_id] = record.to_json()
    reseal(saved, key)


def _read(data: Mapping[str, Any]) -> Resumption:
    items = _list_of_objects(data["items"], "items")
    awaiting = [PendingApproval(**entry) for entry in _list_of_objects(data["awaiting"], "awaiting")]
    turn = _int(data["turn"], "turn")
    last = data["last_response"]
    state = RunState(
        items=items,
        pending=_list_of_objects(data["pending_items"], "pending_items"),
        records=[ToolCallRecord.from_json(record) for record in _list_of_objects(data["records"], "records")],
        usage=Usage(**data["usage"]),
        response_ids=[str(each) for each in data["response_ids"]],
        last=response_from_json(last) if isinstance(last, dict) else None,
    )
    if turn != len(state.response_ids) or not awaiting:
        raise InvalidStateError("the run state does not wait for any call of its last turn")
    waiting = [_asked(items, entry, turn) for entry in awaiting]
    done_data = data.get("done") or {}
    if not isinstance(done_data, dict):
        raise InvalidStateError("the run state's 'done' is not an object")
    asked = {call.call_id for call in waiting}
    done = {
        call_id: ToolCallRecord.from_json(record) for call_id, record in done_data.items() if call_id in asked
    }
    return Resumption(str(data["run_id"]), str(data["nonce"]), turn, state, waiting, done)


def _asked(items: list[JSONObject], entry: PendingApproval, turn: int) -> FunctionCall:
    """The conversation's call that ``entry`` waits for: asked by the model, not yet answered."""
    mine = [item for item in items if item.get("call_id") == entry.call_id]
    calls = [item for item in mine if item.get("type") == "function_call"]
    answered = any(item.get("type") == "function_call_output" for item in mine)
    if len(calls) != 1 or answered or entry.turn != turn:
        why = "which its conversation does not ask (or already answers)"
        raise InvalidStateError(f"the run state waits for call {entry.call_id!r}, {why}")
    call = FunctionCall.model_validate(calls[0])
    if (call.name, call.arguments) != (entry.tool_name, entry.arguments):
        why = "differs from the one the model asked"
        raise InvalidStateError(f"the run state's call {entry.call_id!r} {why}")
    return call


def _list_of_objects(value: Any, name: str) -> list[JSONObject]:
    if not isinstance(value, list) or not all(isinstance(each, dict) for each in value):
        raise InvalidStateError(f"the run state's {name!r} is not a list of objects")
    return [dict(each) for each in value]


def _int(value: Any, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidStateError(f"the run state's {name!r} is not an integer")
    return value


class DoneCalls:
    """The approved calls this process ran while resuming saved states, by state and call id.

    A saved file read twice gives two dicts: this is what stops the second resume from running
    a call the first one ran. Bounded: the oldest entries go first.
    """

    def __init__(self, capacity: int = 10_000) -> None:
        self._capacity = capacity
        self._records: OrderedDict[tuple[str, str], ToolCallRecord] = OrderedDict()

    def known(self, nonce: str, call_ids: Iterable[str]) -> dict[str, ToolCallRecord]:
        """The records of the calls of state ``nonce`` among ``call_ids`` already run here."""
        found = {call_id: self._records.get((nonce, call_id)) for call_id in call_ids}
        return {call_id: record for call_id, record in found.items() if record is not None}

    def add(self, nonce: str, records: Iterable[ToolCallRecord]) -> None:
        for record in records:
            self._records[(nonce, record.call_id)] = record
            while len(self._records) > self._capacity:
                self._records.popitem(last=False)
