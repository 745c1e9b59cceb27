"""`AutoPolicy`: exercises every offered tool without a script. Not AI.

It answers the way a cooperative model would in a tool test: call each tool once with plausible
arguments built from its JSON schema, then say what the tools returned. That is enough to run a
user's tools end to end (argument parsing, execution, feeding results back) with zero setup.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._request import Item, ResponseRequest, item_type

__all__ = ["AutoPolicy", "example_arguments"]

_MISSING = object()
_MAX_DEPTH = 8


class AutoPolicy:
    """Calls every offered function tool once, then reports their outputs. Deterministic, not AI.

    After each user message: the first reply calls every function tool not yet called since that
    message, all at once (or one per reply when `parallel_tool_calls` is false), with arguments
    built from the tool's schema by `example_arguments`. Once every tool has been called, the reply
    is a message with one `name: output` line per call. Without tools (or with
    `tool_choice="none"`) it echoes the last user message. A `function` or `allowed_tools` tool
    choice limits the calls to the tools it names.
    """

    def respond(self, request: ResponseRequest) -> list[Item]:
        """The next step of the exchange started by the newest user message."""
        exchange = _since_last_user_message(request.input)
        pending = _pending_tools(request, exchange)
        if pending:
            chosen = pending if request.parallel_tool_calls else pending[:1]
            return [_call(tool) for tool in chosen]
        report = _report(request, exchange)
        text = report if report else (request.last_user_text() or "")
        return [{"type": "message", "content": text}]


def example_arguments(schema: Mapping[str, Any] | None) -> dict[str, Any]:
    """Arguments that satisfy a tool's parameters schema, chosen predictably.

    For each property: its `default`, `const`, first `enum` value or first of `examples` when the
    schema gives one; otherwise, for required properties only, a value of its type: `minimum` (or 1)
    for numbers, `"example"` for strings, `true`, `[]` (or `minItems` examples), objects built the
    same way. Local `$ref`s (`#/$defs/...`) and `anyOf`/`oneOf` (first non-null branch) are followed.
    """
    if not schema:
        return {}
    value = _object_value(schema, schema, 0)
    return value if isinstance(value, dict) else {}


def _since_last_user_message(conversation: tuple[Item, ...]) -> list[Item]:
    for index in range(len(conversation) - 1, -1, -1):
        item = conversation[index]
        if item_type(item) == "message" and item.get("role") == "user":
            return list(conversation[index + 1 :])
    return list(conversation)


def _pending_tools(request: ResponseRequest, exchange: list[Item]) -> list[Item]:
    choice = request.tool_choice
    if choice == "none":
        return []
    called = {item.get("name") for item in exchange if item_type(item) == "function_call"}
    tools = [tool for tool in request.tools if tool.get("name") not in called]
    if isinstance(choice, dict):
        allowed = _allowed_names(choice)
        tools = [tool for tool in tools if tool.get("name") in allowed]
    return tools


def _allowed_names(choice: Item) -> set[str]:
    """The function names a `function` or `allowed_tools` tool choice lets the model call."""
    if choice.get("type") == "allowed_tools":
        entries = [entry for entry in choice.get("tools") or [] if isinstance(entry, dict)]
        return {entry["name"] for entry in entries if entry.get("type") == "function" and "name" in entry}
    return {choice["name"]} if isinstance(choice.get("name"), str) else set()


def _call(tool: Item) -> Item:
    return {
        "type": "function_call",
        "name": tool["name"],
        "arguments": example_arguments(tool.get("parameters")),
    }


def _report(request: ResponseRequest, exchange: list[Item]) -> str:
    outputs = request.tool_outputs
    lines = [
        f"{call.get('name')}: {outputs[call_id]}"
        for call in exchange
        if item_type(call) == "function_call" and (call_id := str(call.get("call_id"))) in outputs
    ]
    return "\n".join(lines)


def _value(schema: Mapping[str, Any], root: Mapping[str, Any], depth: int) -> Any:
    known = _known(schema, root)
    if known is not _MISSING:
        return known
    if depth > _MAX_DEPTH:
        return None
    schema = _resolve(schema, root)
    branch = _first_branch(schema)
    if branch is not None:
        return _value(branch, root, depth + 1)
    kind = _type(schema)
    if kind == "object":
        return _object_value(schema, root, depth)
    if kind == "array":
        return _array_value(schema, root, depth)
    return _scalar(schema, kind)


def _object_value(schema: Mapping[str, Any], root: Mapping[str, Any], depth: int) -> dict[str, Any]:
    properties = schema.get("properties") or {}
    required = set(schema.get("required") or [])
    value = {}
    for name, raw in properties.items():
        prop = raw if isinstance(raw, Mapping) else {}
        if name in required or _known(prop, root) is not _MISSING:
            value[name] = _value(prop, root, depth + 1)
    return value


def _array_value(schema: Mapping[str, Any], root: Mapping[str, Any], depth: int) -> list[Any]:
    item_schema = schema.get("items")
    count = int(schema.get("minItems", 0))
    if not count or not isinstance(item_schema, Mapping):
        return []
    return [_value(item_schema, root, depth + 1) for _ in range(count)]


def _scalar(schema: Mapping[str, Any], kind: str) -> Any:
    if kind in ("integer", "number"):
        low = schema.get("minimum")
        if low is None and "exclusiveMinimum" in schema:
            low = schema["exclusiveMinimum"] + 1
        low = 1 if low is None else low
        return int(low) if kind == "integer" else low
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return "example"


def _known(schema: Mapping[str, Any], root: Mapping[str, Any]) -> Any:
    """A value the schema names: default, const, first enum value, first example.

    Looked up beside a `$ref` first (pydantic writes a field's default there), then in its target.
    """
    for candidate in (schema, _resolve(schema, root)):
        value = _named_value(candidate)
        if value is not _MISSING:
            return value
    return _MISSING


def _named_value(schema: Mapping[str, Any]) -> Any:
    for key in ("default", "const"):
        if key in schema:
            return schema[key]
    for key in ("enum", "examples"):
        values = schema.get(key)
        if isinstance(values, list) and values:
            return values[0]
    return _MISSING


def _first_branch(schema: Mapping[str, Any]) -> Mapping[str, Any] | None:
    for key in ("anyOf", "oneOf", "allOf"):
        branches = schema.get(key)
        if isinstance(branches, list):
            usable = [b for b in branches if isinstance(b, Mapping) and b.get("type") != "null"]
            if usable:
                return usable[0]
    return None


def _type(schema: Mapping[str, Any]) -> str:
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None and "properties" in schema:
        return "object"
    return kind if isinstance(kind, str) else "string"


def _resolve(schema: Mapping[str, Any], root: Mapping[str, Any]) -> Mapping[str, Any]:
    """Follow a local `$ref` such as `#/$defs/Point` (pydantic's nested models)."""
    ref = schema.get("$ref")
    for _ in range(_MAX_DEPTH):
        if not isinstance(ref, str) or not ref.startswith("#/"):
            return schema
        target: Any = root
        for part in ref[2:].split("/"):
            target = target.get(part) if isinstance(target, Mapping) else None
        if not isinstance(target, Mapping):
            return schema
        schema = target
        ref = schema.get("$ref")
    return schema
