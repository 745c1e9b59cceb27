"""`AutoPolicy`: calls the tools a prompt names, with the arguments it holds. Not AI.

It answers the way a cooperative model would in a tool test: call the tools the newest user message
names (every offered tool when it names none) with arguments found in the prompt or else built from
the tool's schema, then say what the tools returned. That is enough to run a user's tools end to end
(argument parsing, execution, feeding results back) with zero setup. An arithmetic expression goes
to a calculator tool piece by piece, innermost operations first, each result fed into the next call.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ._arithmetic import OPERATION_WORDS, Node, find_expression, number_text, ready_nodes, substitute
from ._prompt import found_arguments, keep_valid, named_tools, words
from ._request import Item, ResponseRequest, item_type
from ._schema_values import instance, kind_of, resolve
from ._text_format import structured_answer

__all__ = ["AutoPolicy", "example_arguments"]

_EXPRESSION_WORDS = frozenset({"expression", "expr", "formula", "equation", "calculation", "problem"})
_NUMERIC = ("number", "integer")


class AutoPolicy:
    """Calls the tools the prompt names, then reports their outputs. Deterministic, not AI.

    After each user message: the first reply calls the function tools that message names (by
    name, a word of the name, or a topic word such as "calculator", "time", "random", "system"; an
    arithmetic expression names a math tool), or every offered tool when it names none, all at once
    (one per reply when `parallel_tool_calls` is false). Arguments found in the message (numbers,
    bounds such as "between 1 and 100", an IANA time zone, quoted strings, enum values) are used
    where they fit the tool's schema, `example_arguments` fill the rest. A calculator taking two
    numbers and an operation gets an expression such as `(3+4)*2` one operation per call,
    innermost first, the next call using the results returned; a tool with an `expression` string
    parameter gets it whole. Once done, the reply is a message with one `name: output` line per
    call (first `expression = result`, saying it is a stand-in's report), or, under a `json_schema`
    `text.format`, a JSON object valid against that schema. Without tools (or with
    `tool_choice="none"`) it echoes the last user message. A `function` or `allowed_tools` tool
    choice limits the calls to the tools it names.
    """

    def respond(self, request: ResponseRequest) -> list[Item]:
        """The next step of the exchange started by the newest user message."""
        exchange = _since_last_user_message(request.input)
        prompt = request.last_user_text() or ""
        expression = find_expression(prompt)
        calls = _next_calls(request, exchange, prompt, expression)
        if calls:
            return calls if request.parallel_tool_calls else calls[:1]
        text = _report(request, exchange, expression) or prompt
        structured = structured_answer(request, text, exchange)
        return [{"type": "message", "content": text if structured is None else structured}]


def example_arguments(schema: Mapping[str, Any] | None) -> dict[str, Any]:
    """Arguments that satisfy a tool's parameters schema, chosen predictably.

    For each property: its `default`, `const`, first `enum` value or first of `examples` when the
    schema gives one; otherwise, for required properties only, a value of its type: the least
    number within its bounds (1 when unbounded), `"example"` (or a sample of its `format`, padded
    to `minLength`) for strings, `true`, `[]` (or `minItems` examples), objects built the same way.
    Local `$ref`s (`#/$defs/...`) and `anyOf`/`oneOf` (first non-null branch) are followed.
    """
    return instance(schema)


def _since_last_user_message(conversation: tuple[Item, ...]) -> list[Item]:
    for index in range(len(conversation) - 1, -1, -1):
        item = conversation[index]
        if item_type(item) == "message" and item.get("role") == "user":
            return list(conversation[index + 1 :])
    return list(conversation)


def _next_calls(
    request: ResponseRequest, exchange: list[Item], prompt: str, expression: tuple[Node, str] | None
) -> list[Item]:
    offered = _offered(request)
    chosen = named_tools(prompt, offered, arithmetic=expression is not None) or offered
    called = {item.get("name") for item in exchange if item_type(item) == "function_call"}
    calls: list[Item] = []
    for tool in chosen:
        stepper = _Calculator.of(tool) if expression else None
        if stepper is not None and expression is not None:
            calls += stepper.calls(expression[0], exchange, request.tool_outputs)
        elif tool.get("name") not in called:
            skip = expression[1] if expression else ""
            calls.append(_call(tool, _arguments(tool, prompt, skip, expression)))
    return calls


def _offered(request: ResponseRequest) -> list[Item]:
    choice = request.tool_choice
    if choice == "none":
        return []
    if isinstance(choice, dict):
        allowed = _allowed_names(choice)
        return [tool for tool in request.tools if tool.get("name") in allowed]
    return list(request.tools)


def _allowed_names(choice: Item) -> set[str]:
    """The function names a `function` or `allowed_tools` tool choice lets the model call."""
    if choice.get("type") == "allowed_tools":
        entries = [entry for entry in choice.get("tools") or [] if isinstance(entry, dict)]
        return {entry["name"] for entry in entries if entry.get("type") == "function" and "name" in entry}
    return {choice["name"]} if isinstance(choice.get("name"), str) else set()


def _arguments(tool: Item, prompt: str, skip: str, expression: tuple[Node, str] | None) -> dict[str, Any]:
    schema = tool.get("parameters") or {}
    base = example_arguments(schema)
    candidates = list(found_arguments(tool, prompt, skip=skip))
    properties = schema.get("properties") or {}
    if expression is not None:
        candidates = [(name, expression[1]) for name in properties if set(words(name)) & _EXPRESSION_WORDS]
        candidates += list(found_arguments(tool, prompt, skip=skip))
    return keep_valid(schema, base, candidates) if schema else base


def _call(tool: Item, arguments: dict[str, Any]) -> Item:
    return {"type": "function_call", "name": tool["name"], "arguments": arguments}


class _Calculator:
    """A tool taking two numbers and an operation: an expression goes to it one operation a call."""

    def __init__(self, tool: Item, operands: tuple[str, str], operation: str, names: dict[str, str]) -> None:
        self.tool = tool
        self.operands = operands
        self.operation = operation
        self.names = names  # operator -> the tool's enum value
        self.symbols = {value: symbol for symbol, value in names.items()}

    @classmethod
    def of(cls, tool: Item) -> _Calculator | None:
        schema = tool.get("parameters") or {}
        properties = schema.get("properties")
        if not isinstance(properties, Mapping):
            return None
        numeric = [
            n for n, p in properties.items() if isinstance(p, Mapping) and kind_of(p, schema) in _NUMERIC
        ]
        for name, prop in properties.items():
            names = _operator_names(prop, schema) if isinstance(prop, Mapping) else {}
            if len(numeric) >= 2 and names:
                return cls(tool, (numeric[0], numeric[1]), name, names)
        return None

    def calls(self, tree: Node, exchange: list[Item], outputs: Mapping[str, str]) -> list[Item]:
        """The calls that compute what is left of `tree`, given the calls made so far."""
        remaining = self.remaining(tree, exchange, outputs)
        if remaining is None:
            return []
        steps = ready_nodes(remaining)
        if any(operator not in self.names for operator, _, _ in steps):
            return []
        return [_call(self.tool, self.arguments(step)) for step in steps]

    def remaining(self, tree: Node, exchange: list[Item], outputs: Mapping[str, str]) -> Node | None:
        """`tree` with each answered call's result put in; None when a call gave no number."""
        for item in exchange:
            if item_type(item) != "function_call" or item.get("name") != self.tool["name"]:
                continue
            step = self._step(item)
            result = _result_number(outputs.get(str(item.get("call_id")), ""))
            if step is None or result is None:
                return None
            tree, _ = substitute(tree, step, result)
        return tree

    def arguments(self, step: tuple[str, int | float, int | float]) -> dict[str, Any]:
        operator, left, right = step
        base = example_arguments(self.tool.get("parameters"))
        return {**base, self.operands[0]: left, self.operands[1]: right, self.operation: self.names[operator]}

    def _step(self, call: Item) -> tuple[str, float, float] | None:
        try:
            arguments = json.loads(call.get("arguments") or "{}")
        except ValueError:
            return None
        if not isinstance(arguments, dict):
            return None
        symbol = self.symbols.get(str(arguments.get(self.operation)))
        left, right = arguments.get(self.operands[0]), arguments.get(self.operands[1])
        if symbol is None or not isinstance(left, int | float) or not isinstance(right, int | float):
            return None
        return symbol, left, right


def _operator_names(prop: Mapping[str, Any], root: Mapping[str, Any]) -> dict[str, str]:
    """Operator -> enum value, for an enum whose values name arithmetic operations."""
    values = resolve(prop, root).get("enum")
    names: dict[str, str] = {}
    for value in values if isinstance(values, list) else []:
        for symbol, spellings in OPERATION_WORDS.items():
            if isinstance(value, str) and (value == symbol or value.lower() in spellings):
                names.setdefault(symbol, value)
    return names


def _result_number(output: str) -> int | float | None:
    """The number a calculator returned: the output itself, or its `result`/`value`/`answer` field."""
    try:
        value = json.loads(output)
    except ValueError:
        return None
    if isinstance(value, dict):
        value = next((value[key] for key in ("result", "value", "answer") if key in value), None)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return value


def _report(request: ResponseRequest, exchange: list[Item], expression: tuple[Node, str] | None) -> str:
    outputs = request.tool_outputs
    lines = [
        f"{call.get('name')}: {outputs[call_id]}"
        for call in exchange
        if item_type(call) == "function_call" and (call_id := str(call.get("call_id"))) in outputs
    ]
    if not lines:
        return ""
    summary = _computed(request, exchange, expression)
    return "\n".join([summary, *lines] if summary else lines)


def _computed(request: ResponseRequest, exchange: list[Item], expression: tuple[Node, str] | None) -> str:
    """`2^10 = 1024` when a calculator computed the whole expression, else empty."""
    if expression is None:
        return ""
    for tool in request.tools:
        stepper = _Calculator.of(tool)
        if stepper is not None:
            left = stepper.remaining(expression[0], exchange, request.tool_outputs)
            if left is not None and not isinstance(left, tuple):
                return (
                    f"{expression[1]} = {number_text(left)}, as {tool['name']} computed it "
                    "(the local model's report: a deterministic stand-in, not AI)."
                )
    return ""
