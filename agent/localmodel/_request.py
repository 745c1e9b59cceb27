"""The request a policy answers: the whole conversation, already validated.

A policy never sees raw HTTP. It gets a `ResponseRequest` whose `input` is the *whole* conversation,
whether the client resent the history (stateless) or pointed at it with `previous_response_id`, so a
policy behaves the same in both modes and never needs server state of its own.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias

__all__ = ["Item", "ResponseRequest", "item_text", "item_type"]

Item: TypeAlias = dict[str, Any]
"""One JSON object from or for the wire: an input or output item, a tool, a body.

Plain dicts rather than models, because users write policy output as literals and the recorded API
carries many item kinds this server passes through untouched; the server checks by hand exactly the
fields it relies on.
"""


@dataclass(frozen=True, slots=True, kw_only=True)
class ResponseRequest:
    """A validated `POST /v1/responses` request, as a `Policy` sees it.

    Only `model` and `input` are required, so a policy can be unit-tested without a server:
    `AutoPolicy().respond(ResponseRequest(model="m", input=({"role": "user", "content": "hi"},)))`.
    """

    model: str
    """The model name the client asked for (echoed in the response; never checked)."""
    input: tuple[Item, ...]
    """The whole conversation, oldest first: the stored `previous_response_id` chain, then this input."""
    tools: tuple[Item, ...] = ()
    """The offered function tools, as sent."""
    tool_choice: str | Item = "auto"
    """`"auto"`, `"none"`, `"required"`, `{"type": "function", "name": ...}` or
    `{"type": "allowed_tools", "mode": ..., "tools": [{"type": "function", "name": ...}, ...]}`."""
    parallel_tool_calls: bool = True
    """Whether the client accepts several function calls in one response."""
    instructions: str | None = None
    """The system prompt of this request (not inherited from previous responses, as in the API)."""
    metadata: Mapping[str, str] = field(default_factory=dict)
    """The request's metadata."""
    previous_response_id: str | None = None
    """The response this request continues, if any."""
    stream: bool = False
    """Whether the client asked for Server-Sent Events."""
    body: Item = field(default_factory=dict)
    """The raw JSON body, for fields this class does not lift out."""

    @property
    def function_calls(self) -> list[Item]:
        """Every `function_call` item of the conversation, oldest first."""
        return [item for item in self.input if item_type(item) == "function_call"]

    @property
    def tool_outputs(self) -> dict[str, str]:
        """The output received for each call id, as text, in conversation order."""
        return {
            str(item.get("call_id")): item_text(item)
            for item in self.input
            if item_type(item) == "function_call_output"
        }

    @property
    def rounds(self) -> int:
        """How many rounds of tool outputs the conversation holds.

        A round is a run of consecutive `function_call_output` items; anything else ends it. This is
        the number of tool-calling turns the model has had answered, counted from the conversation
        alone so that concurrent conversations on one server never share a counter. (A client that
        interleaves each output right after its call is counted one round per output.)
        """
        rounds, previous = 0, ""
        for item in self.input:
            kind = item_type(item)
            if kind == "function_call_output" and previous != kind:
                rounds += 1
            previous = kind
        return rounds

    def last_user_text(self) -> str | None:
        """The text of the newest user message, or None when there is none."""
        for item in reversed(self.input):
            if item_type(item) == "message" and item.get("role") == "user":
                return item_text(item)
        return None


def item_type(item: Mapping[str, Any]) -> str:
    """The item's `type`; a bare `{"role", "content"}` is the API's shorthand for a message."""
    kind = item.get("type")
    if isinstance(kind, str):
        return kind
    return "message" if "role" in item else ""


def item_text(item: Mapping[str, Any]) -> str:
    """The text a message or a tool output carries: plain strings, or the text parts of a list."""
    value = item.get("output") if item_type(item) == "function_call_output" else item.get("content")
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        texts = [part.get("text") for part in value if isinstance(part, dict)]
        return "".join(text for text in texts if isinstance(text, str))
    return "" if value is None else json.dumps(value)
