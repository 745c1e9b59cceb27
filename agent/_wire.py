"""The Responses wire format: request bodies out, response bodies in.

Parsing is tolerant and shallow on purpose. Output items are kept as the dicts the server sent,
unknown fields and unknown item types included, because they go back to the server verbatim
(reasoning items must, or reasoning models lose their chain of thought). Only the few fields
the loop acts on are validated: the envelope, and each ``function_call`` item.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import accumulate
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from agent._errors import ProtocolError, ResponseTooLargeError, UnansweredToolCallError, UsageError
from agent._limits import DEFAULT_LIMITS
from agent._result import JSONObject, Usage

__all__ = [
    "STRICT_JSON",
    "FunctionCall",
    "JSONRefused",
    "ModelResponse",
    "check_calls_answered",
    "encode_request",
    "failure_is_transient",
    "function_call_output",
    "input_items",
    "load_json",
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
    # ``output`` is checked by hand and kept as sent: validating it would copy every item.
    model_config = ConfigDict(extra="ignore")

    id: str
    status: str | None = None
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

    @property
    def refusal(self) -> str | None:
        """The text of the response's ``refusal`` content parts; ``None`` when it has none."""
        parts = [
            str(part.get("refusal", ""))
            for item in self.output
            if item.get("type", "message") == "message" and isinstance(item.get("content"), list)
            for part in item["content"]
            if isinstance(part, dict) and part.get("type") == "refusal"
        ]
        return "\n".join(parts) if parts else None


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


def parse_response(
    body: Any, *, max_output_items: int = DEFAULT_LIMITS.max_output_items, status: int | None = None
) -> ModelResponse:
    """Parse a response body, raising :class:`ProtocolError` if it is not a Responses object.

    More than ``max_output_items`` output items raise :class:`ResponseTooLargeError`;
    ``status`` is the HTTP status the errors report.
    """
    output = _output(body, max_output_items, status)
    try:
        envelope = _Envelope.model_validate(body)
        calls = tuple(
            FunctionCall.model_validate(item) for item in output if item.get("type") == "function_call"
        )
    except ValidationError as exc:
        error = ProtocolError(f"not a Responses object: {_first_error(exc)}", body=body, status=status)
    else:
        return _response(body, envelope, output, calls)
    raise error  # outside the except block: pydantic's error would hold on to the whole body


def _output(body: Any, max_items: int, status: int | None) -> list[JSONObject]:
    output = body.get("output") if isinstance(body, dict) else None
    if not isinstance(output, list):
        raise ProtocolError("not a Responses object: output: a list is required", body=body, status=status)
    if len(output) > max_items:
        raise ResponseTooLargeError(
            f"the response has {len(output)} output items, more than Limits.max_output_items={max_items}",
            status=status,
        )
    if not all(isinstance(item, dict) for item in output):
        raise ProtocolError("not a Responses object: output: every item must be an object", status=status)
    return output


def _response(
    body: JSONObject, envelope: _Envelope, output: list[JSONObject], calls: tuple[FunctionCall, ...]
) -> ModelResponse:
    incomplete = envelope.incomplete_details or {}
    return ModelResponse(
        body=body,
        id=envelope.id,
        status=envelope.status or "completed",
        output=output,
        function_calls=calls,
        usage=Usage.from_wire(envelope.usage),
        error=envelope.error,
        incomplete_reason=incomplete.get("reason"),
    )


_TRANSIENT_FAILURES = frozenset({"server_error", "rate_limit_exceeded"})


def failure_is_transient(error: JSONObject | None) -> bool:
    """Whether a failed response (or a stream's ``error`` event) may succeed if asked again.

    One rule for both shapes the API reports a failure in: ``server_error`` and
    ``rate_limit_exceeded`` are transient; anything else (``invalid_prompt``, quota) is not.
    """
    return isinstance(error, dict) and error.get("code") in _TRANSIENT_FAILURES


class JSONRefused(ValueError):
    """Wire text that is not JSON we accept; the message says why."""

    def __init__(self, reason: str, *, too_deep: bool = False) -> None:
        super().__init__(reason)
        self.too_deep = too_deep
        """The text nests deeper than ``Limits.max_json_depth`` (or than Python can parse)."""


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is not a finite number")
    return value


STRICT_JSON = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite_float)
"""JSON as the RFC has it: ``NaN``/``Infinity`` and floats that overflow are refused (Python's
parser takes them). One decoder for everything read (``json.loads`` with options builds a new
one per call): bodies, events, a call's arguments, the local server's requests."""
_STRINGS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKETS = re.compile(r"[^\[\]{}]+")
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


def load_json(data: bytes | str, *, max_depth: int) -> Any:
    """Parse JSON from the wire: UTF-8, finite numbers only, nested at most ``max_depth`` deep.

    Raises :class:`JSONRefused` (never ``RecursionError`` or ``UnicodeDecodeError``).
    """
    too_deep = False
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        too_deep = _depth(text, max_depth) > max_depth
        if not too_deep:
            return STRICT_JSON.decode(text)
        reason = f"nested deeper than Limits.max_json_depth={max_depth}"
    except RecursionError:
        reason, too_deep = "nested too deep to parse", True
    except UnicodeDecodeError as exc:
        reason = f"not UTF-8 (byte {exc.start})"
    except ValueError as exc:
        reason = str(exc)[:200]
    # Raised out here: the parser's exception holds the whole text.
    raise JSONRefused(reason, too_deep=too_deep)


def _depth(text: str, limit: int) -> int:
    """How deep ``text`` nests; cheap when it has fewer brackets than ``limit``."""
    if text.count("{") + text.count("[") <= limit:
        return 0
    brackets = _NOT_BRACKETS.sub("", _STRINGS.sub("", text))
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0)


_UTF8 = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)
_ASCII = json.JSONEncoder(separators=(",", ":"), allow_nan=False)


def encode_request(body: JSONObject) -> bytes:
    """A request body as compact UTF-8 JSON; :class:`UsageError` if it is not JSON-able.

    Text the model wrote may hold lone surrogates (``"\\ud800"`` is legal JSON, but UTF-8
    cannot carry it): such a body goes out ``\\u``-escaped instead.
    """
    try:
        try:
            return _UTF8.encode(body).encode()
        except UnicodeEncodeError:
            return _ASCII.encode(body).encode()
    except (TypeError, ValueError, RecursionError) as exc:
        reason = str(exc)[:200]
    raise UsageError(f"the request body cannot be sent as JSON: {reason}")


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
    options: JSONObject | None = None,
) -> JSONObject:
    """Build a ``POST /responses`` body; unset options are left out, ``extra_body`` wins.

    ``options`` are more fields (model settings, ``text``) that ``extra_body`` also overrides.
    """
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
    if options:
        body.update(options)
    if stream:
        body["stream"] = True
    if extra_body:
        body.update(extra_body)
    if body.get("store") is False and _replays_reasoning(body, input):
        body["include"] = _with_encrypted_reasoning(body.get("include"))
    return body


_ENCRYPTED_REASONING = "reasoning.encrypted_content"


def _replays_reasoning(body: JSONObject, input: list[JSONObject]) -> bool:
    """Whether a stateless request (``store: false``) needs the reasoning sent back in full.

    Unstored reasoning items can only be replayed with their encrypted content, which the
    server returns only when asked; a ``reasoning`` option says the model reasons.
    """
    return "reasoning" in body or any(item.get("type") == "reasoning" for item in input)


def _with_encrypted_reasoning(include: Any) -> Any:
    if include is None:
        return [_ENCRYPTED_REASONING]
    if isinstance(include, list) and _ENCRYPTED_REASONING not in include:
        return [*include, _ENCRYPTED_REASONING]
    return include  # already asked for, or not a list (the server will say what it thinks of it)


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
