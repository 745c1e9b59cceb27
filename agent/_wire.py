"""The Responses wire format: request bodies out, response bodies in.

Parsing is tolerant and shallow on purpose. Output items are kept as the dicts the server sent,
unknown fields and unknown item types included, because they go back to the server verbatim
(reasoning items must, or reasoning models lose their chain of thought). Only the few fields
the loop acts on are validated: the envelope, and each ``function_call`` item.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from agent._errors import ProtocolError, UnansweredToolCallError
from agent._result import JSONObject, Usage

__all__ = [
    "FunctionCall",
    "ModelResponse",
    "check_calls_answered",
    "function_call_output",
    "input_items",
    "parse_response",
    "request_body",
]


class FunctionCall(BaseModel):
    """A ``function_call`` output item: the model asks for one tool call."""

    model_config = ConfigDict(frozen=True, extra="allow")

    type: Literal["function_call"]
    call_id: str
    name: str
    arguments: str = ""
    id: str | None = None


class _Envelope(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str
    status: str | None = None
    output: list[JSONObject]
    usage: JSONObject | None = None
    error: JSONObject | None = None
    incomplete_details: JSONObject | None = None


@dataclass(frozen=True, slots=True)
class ModelResponse:
    """One parsed response: the raw body plus the fields the loop needs."""

    body: JSONObject
    id: str
    status: str
    output: list[JSONObject]
    function_calls: tuple[FunctionCall, ...]
    usage: Usage
    error: JSONObject | None
    incomplete_reason: str | None

    @property
    def output_text(self) -> str:
        """The text of the response's assistant messages, one line per message."""
        return "\n".join(t for item in self.output if (t := _message_text(item)))


def _message_text(item: JSONObject) -> str:
    if item.get("type", "message") != "message" or item.get("role", "assistant") != "assistant":
        return ""
    content = item.get("content")
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    return "".join(
        part["text"]
        for part in content
        if isinstance(part, dict) and part.get("type") == "output_text" and "text" in part
    )


def parse_response(body: Any) -> ModelResponse:
    """Parse a response body, raising :class:`ProtocolError` if it is not a Responses object."""
    try:
        envelope = _Envelope.model_validate(body)
        calls = tuple(
            FunctionCall.model_validate(item)
            for item in envelope.output
            if item.get("type") == "function_call"
        )
    except ValidationError as exc:
        raise ProtocolError(f"not a Responses object: {_first_error(exc)}", body=body) from None
    incomplete = envelope.incomplete_details or {}
    return ModelResponse(
        body=body,
        id=envelope.id,
        status=envelope.status or "completed",
        # The body's own list, not the envelope's: pydantic copied every item while checking it,
        # and a run waiting for its next response would hold both.
        output=body["output"],
        function_calls=calls,
        usage=Usage.from_wire(envelope.usage),
        error=envelope.error,
        incomplete_reason=incomplete.get("reason"),
    )


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    return f"{loc}: {err['msg']}" if loc else err["msg"]


def input_items(value: str | Sequence[JSONObject]) -> list[JSONObject]:
    """Turn ``run()``'s input into a list of input items (a string is one user message)."""
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    return list(value)


def function_call_output(call_id: str, output: str) -> JSONObject:
    """The input item that answers one ``function_call``."""
    return {"type": "function_call_output", "call_id": call_id, "output": output}


def request_body(
    *,
    model: str,
    input: list[JSONObject],
    tools: list[JSONObject],
    tool_choice: str | JSONObject,
    parallel_tool_calls: bool,
    instructions: str | None,
    metadata: dict[str, str] | None,
    previous_response_id: str | None,
    extra_body: JSONObject | None,
    stream: bool = False,
) -> JSONObject:
    """Build a ``POST /responses`` body; unset options are left out, ``extra_body`` wins."""
    body: JSONObject = {"model": model, "input": input}
    if tools:
        body["tools"] = tools
        body["tool_choice"] = tool_choice
        body["parallel_tool_calls"] = parallel_tool_calls
    optional = {
        "instructions": instructions,
        "metadata": metadata,
        "previous_response_id": previous_response_id,
    }
    body.update((k, v) for k, v in optional.items() if v is not None)
    if stream:
        body["stream"] = True
    if extra_body:
        body.update(extra_body)
    return body


def check_calls_answered(items: Iterable[JSONObject], pending: Iterable[str] = ()) -> None:
    """Refuse a request in which a ``function_call`` has no ``function_call_output``.

    ``pending`` names calls made in an earlier, server-stored response (previous_response_id
    mode) that the new input must answer.
    """
    asked = list(pending)
    answered: set[str] = set()
    for item in items:
        kind = item.get("type")
        if kind == "function_call":
            asked.append(str(item.get("call_id")))
        elif kind == "function_call_output":
            answered.add(str(item.get("call_id")))
    missing = [call_id for call_id in asked if call_id not in answered]
    if missing:
        raise UnansweredToolCallError(
            f"no function_call_output for call(s) {', '.join(missing)}; "
            "every function_call needs one before the next request"
        )
