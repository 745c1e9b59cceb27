"""Run results and run errors as plain JSON, for engines that store them (never pickle).

A durable run's result is read back by another process (``DBOSAgent.result``, ``agent runs``),
so it crosses the database as JSON: :func:`result_to_json` / :func:`result_from_json`, and a
failed run's error as :func:`error_to_json` / :func:`error_from_json`, which rebuild the same
exception class with its status, code and message. A durable wait for approvals publishes its
pending calls (:func:`pending_to_json` / :func:`pending_from_json`) and receives decisions
(:func:`decision_to_json` / :func:`decision_from_json`, strict: only a well-formed approval
approves).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any

import agent._errors as errors
from agent._approvals import Decision, PendingApproval
from agent._errors import AgentError, APIError, UsageError
from agent._output import output_from_json, output_to_json
from agent._result import JSONObject, RunResult, ToolCallRecord, Usage
from agent._wire import input_items

__all__ = [
    "decision_from_json",
    "decision_to_json",
    "error_from_json",
    "error_to_json",
    "input_to_json",
    "outcome_of",
    "pending_from_json",
    "pending_to_json",
    "result_from_json",
    "result_to_json",
]

_API_FIELDS = ("status", "code", "error_type", "param", "request_id", "body", "retry_after", "transient")


def result_to_json(result: RunResult) -> JSONObject:
    """``result`` as a JSON object (tuples become lists; the tools' exception objects are left out)."""
    return {
        "output": result.output,
        "items": result.items,
        "tool_calls": [record.to_json() for record in result.tool_calls],
        "usage": dataclasses.asdict(result.usage),
        "turns": result.turns,
        "response_ids": list(result.response_ids),
        "status": result.status,
        "incomplete_reason": result.incomplete_reason,
        "last_response": result.last_response,
        "output_parsed": output_to_json(result.output_parsed),
        "pending_approvals": [dataclasses.asdict(waiting) for waiting in result.pending_approvals],
        "state": result.state,
    }


def result_from_json(data: JSONObject, output_type: Any = None) -> RunResult:
    """The :class:`RunResult` that :func:`result_to_json` wrote.

    ``output_parsed`` is stored as its JSON dump: rebuilt as ``output_type`` when given, else
    left as that JSON (a reader in another process may not have the type at hand).
    """
    return RunResult(
        output=data["output"],
        items=list(data["items"]),
        tool_calls=tuple(ToolCallRecord.from_json(record) for record in data["tool_calls"]),
        usage=Usage(**data["usage"]),
        turns=data["turns"],
        response_ids=tuple(data["response_ids"]),
        status=data["status"],
        incomplete_reason=data["incomplete_reason"],
        last_response=data["last_response"],
        output_parsed=output_from_json(data.get("output_parsed"), output_type),
        pending_approvals=tuple(PendingApproval(**waiting) for waiting in data.get("pending_approvals", ())),
        state=data.get("state"),
    )


def error_to_json(error: AgentError) -> JSONObject:
    """``error`` as JSON: its class name, message and (for API errors) status, code and body."""
    data: JSONObject = {"type": type(error).__name__}
    if isinstance(error, APIError):
        data["message"] = error.message
        data.update({name: _jsonable(getattr(error, name)) for name in _API_FIELDS})
    else:
        data["message"] = str(error)
    return data


def error_from_json(data: JSONObject) -> AgentError:
    """The error :func:`error_to_json` wrote, as its own class (an unknown class: ``RunError``)."""
    kind = getattr(errors, str(data.get("type")), None)
    if not (isinstance(kind, type) and issubclass(kind, AgentError)):
        kind = errors.RunError
    message = str(data.get("message", ""))
    if issubclass(kind, APIError):
        fields: dict[str, Any] = {name: data[name] for name in _API_FIELDS if name in data}
        return kind(message, **fields)
    return kind(message)


def _jsonable(value: Any) -> Any:
    """``value`` if it is plain JSON data, else its text (an error's body may be anything)."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, list):
        return [_jsonable(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _jsonable(item) for key, item in value.items()}
    return str(value)


def decision_to_json(call_id: str, decision: Decision) -> JSONObject:
    """The message that decides call ``call_id``; raises ``TypeError``/``ValueError`` for
    edited arguments that are not a JSON object."""
    arguments = decision.arguments
    if arguments is not None:
        if not isinstance(arguments, dict):
            raise TypeError(f"edited arguments must be a JSON object, got {type(arguments).__name__}")
        arguments = json.loads(json.dumps(arguments, allow_nan=False))
    return {
        "call_id": call_id,
        "approved": decision.approved,
        "reason": decision.reason,
        "arguments": arguments,
    }


def decision_from_json(data: object) -> tuple[str, Decision] | None:
    """The call id and decision in a message :func:`decision_to_json` wrote, or ``None``.

    Strict, because the message crossed a database anyone with access may write to: a JSON
    object with a string ``call_id``, a boolean ``approved`` (``1``, ``"yes"``, ``None`` are not
    booleans), a string ``reason`` (or none), and ``arguments`` that are ``None`` or an object.
    Anything else is no decision at all.
    """
    if not isinstance(data, dict) or set(data) - {"call_id", "approved", "reason", "arguments"}:
        return None
    call_id, approved = data.get("call_id"), data.get("approved")
    reason, arguments = data.get("reason", ""), data.get("arguments")
    if not isinstance(call_id, str) or not isinstance(approved, bool) or not isinstance(reason, str):
        return None
    if arguments is not None and not isinstance(arguments, dict):
        return None
    if not approved:
        return call_id, Decision(False, reason=reason)
    return call_id, Decision(True, arguments=arguments)


def pending_to_json(turn: int, pending: Sequence[PendingApproval]) -> JSONObject:
    """What a durable run waiting for approvals publishes: its turn and the calls waiting."""
    return {"turn": turn, "pending": [dataclasses.asdict(waiting) for waiting in pending]}


def pending_from_json(data: object) -> tuple[PendingApproval, ...]:
    """The calls :func:`pending_to_json` published (none for anything else, e.g. a cleared wait)."""
    if not isinstance(data, dict) or not isinstance(data.get("pending"), list):
        return ()
    try:
        return tuple(PendingApproval(**waiting) for waiting in data["pending"])
    except TypeError:
        return ()


def outcome_of(document: JSONObject, output_type: Any = None) -> RunResult:
    """A durable run's stored document as its result, or its error raised (with partial_result)."""
    if "error" in document:
        error = error_from_json(document["error"])
        if document.get("partial_result"):
            error.partial_result = result_from_json(document["partial_result"], output_type)
        raise error
    return result_from_json(document["result"], output_type)


def input_to_json(input: str | Sequence[JSONObject]) -> str | list[JSONObject]:
    """A run's input as a durable engine stores it (JSON; items checked as Agent.run does)."""
    if isinstance(input, str):
        return input
    items = input_items(input)
    try:
        json.dumps(items, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"a durable run's input must be plain JSON to be stored: {exc}") from None
    return items
