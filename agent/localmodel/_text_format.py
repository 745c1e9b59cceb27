"""`text.format`: the checks the real API makes on it, and the structured answer that honours it.

A request may ask for `{"type": "text"}` (the default), `{"type": "json_object"}` or
`{"type": "json_schema", "name": ..., "schema": {...}, "strict": ..., "description": ...}`. The local
model refuses a malformed one with the API's 400, and answers a `json_schema` one with a JSON object
valid against the schema (a `json_object` one with `{"answer": text}`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from typing import Any

from ._errors import invalid_request, invalid_type, missing_parameter
from ._request import Item, ResponseRequest, item_text, item_type
from ._schema_values import instance
from ._tool_schema import schema_problem

__all__ = ["check_text", "structured_answer"]

_FORMATS = ("text", "json_object", "json_schema")
_NAME = re.compile(r"^[a-zA-Z0-9_-]+$")
_TEXT_KEYS = ("answer", "text", "summary", "response", "message", "content", "explanation", "reasoning")
_NUMBER_KEYS = ("result", "answer", "value", "total")


def check_text(text: Mapping[str, Any]) -> None:
    """Refuse a malformed `text` object (its `format`, its `verbosity`) as the API does."""
    verbosity = text.get("verbosity")
    if verbosity is not None and verbosity not in ("low", "medium", "high"):
        raise invalid_request(
            f"Invalid value: '{verbosity}'. Supported values are: 'low', 'medium', and 'high'.",
            param="text.verbosity",
            code="invalid_value",
        )
    form = text.get("format")
    if form is None:
        return
    if not isinstance(form, dict):
        raise invalid_type("text.format", "an object", form)
    kind = form.get("type")
    if kind is None:
        raise missing_parameter("text.format.type")
    if kind not in _FORMATS:
        raise invalid_request(
            f"Invalid value: '{kind}'. Supported values are: 'text', 'json_object', and 'json_schema'.",
            param="text.format.type",
            code="invalid_value",
        )
    if kind == "json_schema":
        _check_json_schema(form)


def structured_answer(request: ResponseRequest, text: str, exchange: list[Item]) -> str | None:
    """The final answer as JSON when `text.format` asks for it, else None (answer in plain text).

    Properties take, by name, values from the tool results, the tool calls' arguments, then the
    plain answer `text` (for text-like names such as `answer` or `summary`); the rest comes from the
    schema (see `example_arguments`). Every property is filled, optional ones included.
    """
    form = _format(request)
    if form is None or form.get("type") == "text":
        return None
    if form.get("type") == "json_object":
        return json.dumps({"answer": text}, ensure_ascii=False)
    hints = _hints(request, text, exchange)
    return json.dumps(instance(form["schema"], hints=hints, all_properties=True), ensure_ascii=False)


def _format(request: ResponseRequest) -> Item | None:
    text = request.body.get("text")
    form = text.get("format") if isinstance(text, dict) else None
    return form if isinstance(form, dict) else None


def _hints(request: ResponseRequest, text: str, exchange: list[Item]) -> dict[str, list[Any]]:
    hints: dict[str, list[Any]] = {}
    for name, value in _found_values(request, exchange):
        hints.setdefault(name, []).append(value)
    for key in _TEXT_KEYS:
        hints.setdefault(key, []).append(text)
    return hints


def _found_values(request: ResponseRequest, exchange: list[Item]) -> Iterator[tuple[str, Any]]:
    """(name, value) from each tool output of the exchange (JSON fields, at any depth), then the
    calls' arguments; a plain-text output under the tool's name."""
    for item in exchange:
        if item_type(item) == "function_call_output":
            output = item_text(item)
            try:
                value = json.loads(output)
            except ValueError:
                value = output
            yield from _fields(value, _name_of(request, str(item.get("call_id"))))
    for item in exchange:
        if item_type(item) == "function_call":
            try:
                arguments = json.loads(item.get("arguments") or "{}")
            except ValueError:
                continue
            yield from _fields(arguments, "")


def _fields(value: Any, name: str) -> Iterator[tuple[str, Any]]:
    if name:
        yield name, value
    if isinstance(value, dict):
        for key, child in value.items():
            yield from _fields(child, str(key))
    if isinstance(value, (int, float)) and not isinstance(value, bool) and name in ("result", "value"):
        for key in _NUMBER_KEYS:
            yield key, value


def _name_of(request: ResponseRequest, call_id: str) -> str:
    return next((str(c.get("name")) for c in request.function_calls if c.get("call_id") == call_id), "")


def _check_json_schema(form: Item) -> None:
    name = form.get("name")
    if name is None:
        raise missing_parameter("text.format.name")
    if not isinstance(name, str):
        raise invalid_type("text.format.name", "a string", name)
    if len(name) > 64:
        raise invalid_request(
            "Invalid 'text.format.name': string too long. Expected a string with maximum length 64, "
            f"but got a string with length {len(name)} instead.",
            param="text.format.name",
            code="string_above_max_length",
        )
    if not _NAME.match(name):
        raise invalid_request(
            "Invalid 'text.format.name': string does not match pattern. Expected a string that "
            "matches the pattern '^[a-zA-Z0-9_-]+$'.",
            param="text.format.name",
            code="invalid_value",
        )
    for key, kind, expected in (("strict", bool, "a boolean"), ("description", str, "a string")):
        if form.get(key) is not None and not isinstance(form[key], kind):
            raise invalid_type(f"text.format.{key}", expected, form[key])
    schema = form.get("schema")
    if schema is None:
        raise missing_parameter("text.format.schema")
    if not isinstance(schema, dict):
        raise invalid_type("text.format.schema", "an object", schema)
    problem = schema_problem(schema, strict=form.get("strict") is True)
    if problem is not None:
        raise invalid_request(
            f"Invalid schema for response_format '{name}': {problem}",
            param="text.format.schema",
            code="invalid_json_schema",
        )
