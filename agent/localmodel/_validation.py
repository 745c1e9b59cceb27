"""Request validation: the checks a strict real server makes, with the answers it gives.

The point of a local stand-in is that a client which passes here will not be surprised by the real
API, so the messages, `param` paths and `code`s copy OpenAI's own where they are known (the recorded
400s in the conformance corpus) and follow the same wording where they are not.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from ._errors import invalid_request, invalid_type, missing_parameter
from ._request import Item, ResponseRequest, item_type
from ._text_format import check_text
from ._tool_schema import schema_problem

__all__ = ["ConversationLookup", "parse_request"]

ConversationLookup = Callable[[str], Sequence[Item] | None]
"""Finds the stored conversation (inputs then outputs) of a response id, or None."""

_ROLES = ("user", "assistant", "system", "developer")
_TOOL_CHOICES = ("none", "auto", "required")
_ALLOWED_TOOLS_MODES = ("auto", "required")
_MAX_METADATA = (16, 64, 512)  # properties, key length, value length
_NAME = re.compile(r"^[a-zA-Z0-9_-]+$")
_OPTIONAL: dict[str, tuple[tuple[type, ...], str]] = {
    "instructions": ((str,), "a string"),
    "previous_response_id": ((str,), "a string"),
    "user": ((str,), "a string"),
    "stream": ((bool,), "a boolean"),
    "store": ((bool,), "a boolean"),
    "parallel_tool_calls": ((bool,), "a boolean"),
    "metadata": ((dict,), "an object"),
    "text": ((dict,), "an object"),
    "reasoning": ((dict,), "an object"),
    "temperature": ((int, float), "a number"),
    "top_p": ((int, float), "a number"),
    "max_output_tokens": ((int,), "an integer"),
    "top_logprobs": ((int,), "an integer"),
}
_RANGES: dict[str, tuple[float, float | None, str]] = {
    "temperature": (0, 2, "decimal"),
    "top_p": (0, 1, "decimal"),
    "max_output_tokens": (16, None, "integer"),
    "top_logprobs": (0, 20, "integer"),
}


def parse_request(body: object, lookup: ConversationLookup) -> ResponseRequest:
    """Validate a decoded JSON body and rebuild the whole conversation it continues.

    Raises `Rejection` (HTTP 400) on the first problem found, as the real API does.
    """
    if not isinstance(body, dict):
        raise invalid_type("body", "an object", body)
    model = _model(body)
    new_input = _input(body)
    tools = tuple(_tool(raw, index) for index, raw in enumerate(_list(body, "tools")))
    for name in _OPTIONAL:
        _check_optional(body, name)
    if isinstance(body.get("text"), dict):
        check_text(body["text"])
    tool_choice = _tool_choice(body.get("tool_choice"), tools)
    conversation = (*_previous(body.get("previous_response_id"), lookup), *new_input)
    _check_call_pairs(conversation)
    return ResponseRequest(
        model=model,
        input=conversation,
        tools=tools,
        tool_choice=tool_choice,
        parallel_tool_calls=body.get("parallel_tool_calls") is not False,
        instructions=body.get("instructions"),
        metadata=dict(body.get("metadata") or {}),
        previous_response_id=body.get("previous_response_id"),
        stream=body.get("stream") is True,
        body=body,
    )


def _model(body: dict[str, Any]) -> str:
    model = _required(body, "model", "model")
    if not isinstance(model, str):
        raise invalid_type("model", "a string", model)
    if not model.strip():
        raise invalid_request(
            "Invalid 'model': empty string. Expected a string with minimum length 1, "
            "but got an empty string instead.",
            param="model",
            code="empty_string",
        )
    return model


def _input(body: dict[str, Any]) -> list[Item]:
    value = _required(body, "input", "input")
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": value}]
    if not isinstance(value, list):
        raise invalid_type("input", "one of a string or array of input items", value)
    return [_input_item(raw, index) for index, raw in enumerate(value)]


def _input_item(raw: object, index: int) -> Item:
    param = f"input[{index}]"
    if not isinstance(raw, dict):
        raise invalid_type(param, "an input item object", raw)
    item = dict(raw)
    kind = item_type(item)
    if kind == "message":
        item["type"] = "message"
        _check_message(item, param)
    elif kind == "function_call":
        for key in ("call_id", "name", "arguments"):
            _required_string(item, key, f"{param}.{key}")
    elif kind == "function_call_output":
        _required_string(item, "call_id", f"{param}.call_id")
        if not isinstance(_required(item, "output", f"{param}.output"), str | list):
            raise invalid_type(f"{param}.output", "a string or an array", item["output"])
    elif not kind:
        raise missing_parameter(f"{param}.type")
    return item


def _check_message(item: Item, param: str) -> None:
    role = _required(item, "role", f"{param}.role")
    if role not in _ROLES:
        raise invalid_request(
            f"Invalid value: '{role}'. Supported values are: 'assistant', 'system', 'developer', and 'user'.",
            param=f"{param}.role",
            code="invalid_value",
        )
    if not isinstance(_required(item, "content", f"{param}.content"), str | list):
        raise invalid_type(f"{param}.content", "a string or an array", item["content"])


def _tool(raw: object, index: int) -> Item:
    param = f"tools[{index}]"
    if not isinstance(raw, dict):
        raise invalid_type(param, "an object", raw)
    kind = _required(raw, "type", f"{param}.type")
    if kind != "function":
        raise invalid_request(
            f"Invalid value: '{kind}'. The local model server supports only 'function' tools.",
            param=f"{param}.type",
            code="invalid_value",
        )
    name = _required_string(raw, "name", f"{param}.name")
    _check_tool_name(name, f"{param}.name")
    for key, kinds, expected in (("description", str, "a string"), ("strict", bool, "a boolean")):
        if raw.get(key) is not None and not isinstance(raw[key], kinds):
            raise invalid_type(f"{param}.{key}", expected, raw[key])
    # Required, but may be null (a tool without arguments), as in openai's `FunctionToolParam`.
    if "parameters" not in raw:
        raise missing_parameter(f"{param}.parameters")
    _check_parameters(name, raw["parameters"], param, strict=raw.get("strict") is True)
    return dict(raw)


def _check_tool_name(name: str, param: str) -> None:
    _check_length(name, 64, param)
    if not _NAME.match(name):
        raise invalid_request(
            f"Invalid '{param}': string does not match pattern. Expected a string that matches "
            "the pattern '^[a-zA-Z0-9_-]+$'.",
            param=param,
            code="invalid_value",
        )


def _check_parameters(name: str, schema: object, param: str, *, strict: bool) -> None:
    if schema is None:
        return
    if not isinstance(schema, dict):
        raise invalid_type(f"{param}.parameters", "an object", schema)
    problem = schema_problem(schema, strict=strict)
    if problem is not None:
        raise invalid_request(
            f"Invalid schema for function '{name}': {problem}",
            param=f"{param}.parameters",
            code="invalid_function_parameters",
        )


def _check_optional(body: dict[str, Any], name: str) -> None:
    value = body.get(name)
    if value is None:
        return
    kinds, expected = _OPTIONAL[name]
    # A JSON boolean is no number, though a Python bool is an int.
    if isinstance(value, bool) != (bool in kinds) or not isinstance(value, kinds):
        raise invalid_type(name, expected, value)
    if isinstance(value, int | float) and name in _RANGES:
        _check_range(name, value)
    if isinstance(value, dict) and name == "metadata":
        _check_metadata(value)


def _check_range(name: str, value: float) -> None:
    low, high, kind = _RANGES[name]
    if value < low:
        bound, word, limit = "below minimum", ">=", low
    elif high is not None and value > high:
        bound, word, limit = "above maximum", "<=", high
    else:
        return
    # `:g` would overflow on a huge JSON integer (10**400), turning a 400 into a 500.
    shown = f"{value:g}" if isinstance(value, float) else str(value)
    raise invalid_request(
        f"Invalid '{name}': {kind} {bound} value. Expected a value {word} {limit:g}, "
        f"but got {shown} instead.",
        param=name,
        code=f"{kind}_{bound.replace(' ', '_').replace('imum', '')}_value",
    )


def _check_metadata(metadata: dict[str, Any]) -> None:
    properties, key_length, value_length = _MAX_METADATA
    if len(metadata) > properties:
        raise invalid_request(
            f"Invalid 'metadata': too many properties. Expected an object with at most {properties} "
            f"properties, but got an object with {len(metadata)} properties instead.",
            param="metadata",
            code="object_above_max_properties",
        )
    for key, value in metadata.items():
        if len(key) > key_length:
            raise invalid_request(
                f"Invalid 'metadata': key too long. Expected keys with maximum length {key_length}, "
                f"but got a key with length {len(key)} instead.",
                param="metadata",
                code="string_above_max_length",
            )
        if not isinstance(value, str):
            raise invalid_type(f"metadata.{key}", "a string", value)
        _check_length(value, value_length, f"metadata.{key}")


def _check_length(text: str, limit: int, param: str) -> None:
    if len(text) > limit:
        raise invalid_request(
            f"Invalid '{param}': string too long. Expected a string with maximum length {limit}, "
            f"but got a string with length {len(text)} instead.",
            param=param,
            code="string_above_max_length",
        )


def _tool_choice(value: object, tools: Sequence[Item]) -> str | Item:
    if value is None:
        return "auto"
    if value == "required" and not tools:
        raise invalid_request(
            "Tool choice 'required' must be specified with 'tools' parameter.", param="tool_choice"
        )
    if isinstance(value, str):
        if value not in _TOOL_CHOICES:
            raise invalid_request(
                f"Invalid value: '{value}'. Supported values are: 'none', 'auto', and 'required'.",
                param="tool_choice",
                code="invalid_value",
            )
        return value
    if isinstance(value, dict) and value.get("type") == "allowed_tools":
        return _allowed_tools(value)
    if not isinstance(value, dict) or value.get("type") != "function":
        raise invalid_type("tool_choice", "a string or a function tool choice", value)
    if value.get("name") not in {tool["name"] for tool in tools}:
        raise invalid_request("Tool choice 'function' not found in 'tools' parameter.", param="tool_choice")
    return dict(value)


def _allowed_tools(choice: Item) -> Item:
    """`{"type": "allowed_tools", "mode": "auto" | "required", "tools": [{"type": ..., ...}]}`."""
    mode = _required(choice, "mode", "tool_choice.mode")
    if mode not in _ALLOWED_TOOLS_MODES:
        raise invalid_request(
            f"Invalid value: '{mode}'. Supported values are: 'auto' and 'required'.",
            param="tool_choice.mode",
            code="invalid_value",
        )
    tools = _required(choice, "tools", "tool_choice.tools")
    if not isinstance(tools, list):
        raise invalid_type("tool_choice.tools", "an array", tools)
    for index, tool in enumerate(tools):
        if not isinstance(tool, dict):
            raise invalid_type(f"tool_choice.tools[{index}]", "an object", tool)
        _required(tool, "type", f"tool_choice.tools[{index}].type")
    return dict(choice)


def _previous(response_id: str | None, lookup: ConversationLookup) -> Sequence[Item]:
    if response_id is None:
        return ()
    history = lookup(response_id)
    if history is None:
        raise invalid_request(
            f"Previous response with id '{response_id}' not found.",
            param="previous_response_id",
            code="previous_response_not_found",
        )
    return history


def _check_call_pairs(conversation: Sequence[Item]) -> None:
    """Every function call answered exactly once, every output answering a call made before it."""
    calls: list[str] = []
    answered: set[str] = set()
    for item in conversation:
        kind, call_id = item_type(item), str(item.get("call_id"))
        if kind == "function_call":
            if call_id in calls:
                raise invalid_request(f"Duplicate function call id '{call_id}' in 'input'.", "input")
            calls.append(call_id)
        elif kind == "function_call_output":
            if call_id in answered:
                raise invalid_request(
                    f"Duplicate function call output for call_id '{call_id}' in 'input'.", "input"
                )
            if call_id not in calls:
                raise invalid_request(
                    f"No tool call found for function call output with call_id {call_id}.", "input"
                )
            answered.add(call_id)
    for call_id in calls:
        if call_id not in answered:
            raise invalid_request(f"No tool output found for function call {call_id}.", "input")


def _list(body: dict[str, Any], name: str) -> list[Any]:
    value = body.get(name)
    if value is None:
        return []
    if not isinstance(value, list):
        raise invalid_type(name, "an array", value)
    return value


def _required(mapping: dict[str, Any], key: str, param: str) -> Any:
    if mapping.get(key) is None:
        raise missing_parameter(param)
    return mapping[key]


def _required_string(mapping: dict[str, Any], key: str, param: str) -> str:
    value = _required(mapping, key, param)
    if not isinstance(value, str):
        raise invalid_type(param, "a string", value)
    return value
