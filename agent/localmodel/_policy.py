"""Policies: what the local model answers. None of this is AI.

A `Policy` maps a validated request (the whole conversation) to the output items of the reply. The
two shipped ones are deterministic: `ScriptPolicy` replays a transcript turn by turn, `AutoPolicy`
(in `_auto.py`) calls the tools the prompt names and then reports what they returned.
"""

from __future__ import annotations

import copy
import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from ._request import Item, ResponseRequest, item_type

__all__ = ["Policy", "ScriptExhaustedError", "ScriptPolicy", "demo_script"]

_PLACEHOLDER = re.compile(r"\{\{\s*(?:output:\s*(?P<key>[^}\s]+)|(?P<all>outputs))\s*\}\}")


class Policy(Protocol):
    """Decides the reply of the local model server. It is a plain function of the request, not AI.

    `respond` runs on the server's event loop for every valid request, so it must be quick and must
    not block. Whatever it raises becomes an HTTP 500 `server_error` naming the exception, which
    shows a broken script in the client's error instead of hanging it.
    """

    def respond(self, request: ResponseRequest) -> list[Item]:
        """The output items of the reply. `id`, `status` and `call_id` may be left out."""
        ...


class ScriptExhaustedError(LookupError):
    """The conversation went further than the script has turns."""


class ScriptPolicy:
    """Replays a transcript: the same answers, in the same order, for every conversation.

    Which turn plays is the number of tool-output rounds in the conversation so far (0 for a fresh
    conversation, 1 after the client sent back the outputs of the first calls, ...). It is computed
    from the request alone, so stateless clients, `previous_response_id` chains and many concurrent
    conversations on one server all get the same, independent replay.

    In any string of a scripted item, `{{output:CALL_ID}}` becomes the output received for that call
    id (or, failing that, for the latest call of a function with that name), `{{output:CALL_ID.a.0}}`
    the field `a`, item 0, of a JSON output, and `{{outputs}}` all
    received outputs joined by newlines, so a final answer can quote tool results. A placeholder
    with no output to quote becomes `<no output for CALL_ID>`.
    """

    def __init__(self, turns: Sequence[Sequence[Item] | Mapping[str, Any]]) -> None:
        """`turns`: per turn, the output items, or a `{"output": [...]}` object as in script files."""
        self._turns = [_turn_items(turn, index) for index, turn in enumerate(turns)]
        _check_unique_call_ids(self._turns)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> ScriptPolicy:
        """Load a JSON transcript: `{"turns": [{"output": [...items...]}, ...]}`."""
        document = json.loads(Path(path).read_text(encoding="utf-8"))
        if not isinstance(document, dict) or not isinstance(document.get("turns"), list):
            # The file's content is wrong, not the caller's argument types: a ValueError.
            raise ValueError(f"{path}: expected an object with a 'turns' array")  # noqa: TRY004
        return cls(document["turns"])

    @property
    def turns(self) -> list[list[Item]]:
        """A copy of the scripted turns."""
        return copy.deepcopy(self._turns)

    def respond(self, request: ResponseRequest) -> list[Item]:
        """The scripted turn for this conversation, placeholders filled from its tool outputs."""
        turn = request.rounds
        if turn >= len(self._turns):
            raise ScriptExhaustedError(
                f"the script has {len(self._turns)} turn(s) but the conversation is at turn "
                f"{turn + 1} ({turn} round(s) of tool outputs received)"
            )
        filled: list[Item] = _fill(self._turns[turn], _quotes(request))
        return filled


def demo_script(*, call_delay: float | None = 0.0) -> ScriptPolicy:
    """The parallel tool scenario of the ChainHub Responses API examples, for `agent demo`.

    Turn 1 calls `current_time`, `system_info`, `math_calculator` (123.5 + 456.7) and
    `random_generator` (3 numbers in 1..100) in parallel; turn 2 is a message quoting all four
    outputs. It is a fixed script, not AI.

    `call_delay` is the streaming pause before each call after the first: 0 (the default) sends
    the four calls back to back, so that the tools start together even on a server pacing its
    stream for a person to watch; None leaves the pause to the server's `stream_delay`.
    """
    calls = [
        ("current_time", {}),
        ("system_info", {}),
        ("math_calculator", {"a": 123.5, "b": 456.7, "operation": "add"}),
        ("random_generator", {"min": 1, "max": 100, "count": 3}),
    ]
    first: list[Item] = [
        {"type": "function_call", "call_id": f"call_{name}", "name": name, "arguments": arguments}
        for name, arguments in calls
    ]
    if call_delay is not None:
        first = [first[0], *({**item, "stream_delay": call_delay} for item in first[1:])]
    answer = (
        "I ran the four tasks in parallel. Here are the results:\n"
        "1. Current system time: {{output:call_current_time.local_time}}"
        " ({{output:call_current_time.timezone}}; UTC {{output:call_current_time.utc_time}})\n"
        "2. System information: {{output:call_system_info.os}} {{output:call_system_info.os_release}}"
        " on {{output:call_system_info.architecture}}, {{output:call_system_info.cpu_count}} CPUs,"
        " {{output:call_system_info.memory_used_percent}}% of memory in use,"
        " {{output:call_system_info.python_implementation}} {{output:call_system_info.python_version}}\n"
        "3. 123.5 + 456.7 = {{output:call_math_calculator.result}}\n"
        "4. Three random numbers between 1 and 100: {{output:call_random_generator.numbers}}"
    )
    return ScriptPolicy([first, [{"type": "message", "content": answer}]])


def _turn_items(turn: Sequence[Item] | Mapping[str, Any], index: int) -> list[Item]:
    items = turn.get("output") if isinstance(turn, Mapping) else turn
    if not isinstance(items, Sequence) or isinstance(items, str):
        raise TypeError(f"turns[{index}]: expected a list of output items or {{'output': [...]}}")
    for position, item in enumerate(items):
        if not isinstance(item, Mapping):
            raise TypeError(f"turns[{index}].output[{position}]: expected an object")
    return [copy.deepcopy(dict(item)) for item in items]


def _check_unique_call_ids(turns: list[list[Item]]) -> None:
    """A repeated call id would make the client's follow-up a request the server must refuse."""
    seen: set[str] = set()
    for items in turns:
        for item in items:
            call_id = item.get("call_id") if item_type(item) == "function_call" else None
            if call_id in seen:
                raise ValueError(f"call id {call_id!r} is scripted twice")
            if isinstance(call_id, str):
                seen.add(call_id)


def _quotes(request: ResponseRequest) -> tuple[dict[str, str], str]:
    """What placeholders can quote: outputs by call id, else by function name; and all of them."""
    outputs = request.tool_outputs
    by_name = {
        str(call.get("name")): outputs[str(call.get("call_id"))]
        for call in request.function_calls
        if str(call.get("call_id")) in outputs
    }
    return {**by_name, **outputs}, "\n".join(outputs.values())


def _fill(value: Any, quotes: tuple[dict[str, str], str]) -> Any:
    if isinstance(value, str):
        return _PLACEHOLDER.sub(lambda match: _replacement(match, quotes), value)
    if isinstance(value, list):
        return [_fill(element, quotes) for element in value]
    if isinstance(value, dict):
        return {key: _fill(element, quotes) for key, element in value.items()}
    return value


def _replacement(match: re.Match[str], quotes: tuple[dict[str, str], str]) -> str:
    by_key, everything = quotes
    if match.group("all"):
        return everything
    key = match.group("key")
    if key in by_key:
        return by_key[key]
    head, _, path = key.partition(".")
    if head in by_key and path:
        found = _field(by_key[head], path.split("."))
        if found is not None:
            return found
    return f"<no output for {key}>"


def _field(output: str, path: list[str]) -> str | None:
    """``path`` (keys and list indices) inside a JSON output, as text; None if it is not there."""
    try:
        value: Any = json.loads(output)
    except ValueError:
        return None
    for step in path:
        if isinstance(value, dict) and step in value:
            value = value[step]
        elif isinstance(value, list) and step.isdigit() and int(step) < len(value):
            value = value[int(step)]
        else:
            return None
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
