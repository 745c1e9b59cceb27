"""Turning a policy's items into a complete `Response` body, as the real API shapes it.

Policies write the least they can (`{"type": "function_call", "name": ..., "arguments": {...}}`,
`{"type": "message", "content": "text"}`); everything the API adds, ids, statuses, the echoed
request settings and usage, is filled in here so that every answer validates against the official
`openai.types.responses.Response` model.
"""

from __future__ import annotations

import json
import random
import secrets
import string
import time
from collections.abc import Sequence
from typing import Any

from ._request import Item, ResponseRequest, item_type

__all__ = ["IdFactory", "PolicyOutputError", "build_response", "finish_output", "split_pauses"]

_ALPHABET = string.ascii_letters + string.digits
_HEX = "0123456789abcdef"
# 18 random bytes are 24 URL-safe base64 characters; mapping its "-" and "_" onto letters keeps
# `call_` ids letters and digits only, as the API's are, at ~142 bits of randomness.
_ALPHANUMERIC_ONLY = str.maketrans("-_", "xy")


class PolicyOutputError(ValueError):
    """A policy returned an item the server cannot turn into a valid output item."""


class IdFactory:
    """Unique ids in OpenAI's formats (`resp_…`, `fc_…`, `msg_…`, `call_…`).

    Random by default; with a `seed`, one server hands out the same sequence every run, which makes
    recorded transcripts of demos reproducible.
    """

    def __init__(self, seed: int | None = None) -> None:
        # Ids only need to be unique and, when seeded, repeatable: no secrecy is involved.
        self._random = random.Random(seed) if seed is not None else None  # noqa: S311

    def new(self, prefix: str, length: int = 48) -> str:
        """A fresh id: `prefix` followed by hex digits, or 24 letters and digits for `call_`."""
        if self._random is not None:
            return prefix + _seeded_suffix(self._random, prefix, length)
        if prefix == "call_":
            return prefix + secrets.token_urlsafe(18).translate(_ALPHANUMERIC_ONLY)
        # One call for the whole id: drawing each character with secrets.choice cost ~80 µs an
        # id, about half the server's time per request. An odd length gets one digit trimmed.
        return prefix + secrets.token_hex((length + 1) // 2)[:length]


def _seeded_suffix(rng: random.Random, prefix: str, length: int) -> str:
    """One draw per character, so a seed keeps giving the ids it gave before (recorded demos)."""
    if prefix == "call_":
        return "".join(rng.choice(_ALPHABET) for _ in range(24))
    return "".join(rng.choice(_HEX) for _ in range(length))


def split_pauses(items: Sequence[Item]) -> tuple[list[Item], list[float | None]]:
    """The items without their `stream_delay` keys, and those pauses (None where not given).

    A policy may set `"stream_delay": seconds` on an item: the pause before it when streamed,
    instead of the server's `stream_delay` (`0` sends parallel calls back to back, as a model does).
    """
    plain: list[Item] = []
    pauses: list[float | None] = []
    for index, item in enumerate(items):
        pause = item.get("stream_delay") if isinstance(item, dict) else None
        if pause is not None and (isinstance(pause, bool) or not isinstance(pause, int | float) or pause < 0):
            raise PolicyOutputError(f"output[{index}].stream_delay must be a number >= 0, got {pause!r}")
        plain.append(
            {k: v for k, v in item.items() if k != "stream_delay"} if isinstance(item, dict) else item
        )
        pauses.append(None if pause is None else float(pause))
    return plain, pauses


def finish_output(items: Sequence[Item], ids: IdFactory) -> list[Item]:
    """Complete a policy's items: ids, call ids, statuses, content parts. The input is not changed."""
    finishers = {"function_call": _function_call, "message": _message, "reasoning": _reasoning}
    output = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise PolicyOutputError(f"output[{index}] is {type(item).__name__}, not a dict")
        finisher = finishers.get(item_type(item))
        if finisher is None:
            raise PolicyOutputError(
                f"output[{index}] has type {item.get('type')!r}; "
                "expected 'message', 'function_call' or 'reasoning'"
            )
        output.append(finisher(dict(item), ids))
    return output


def _function_call(item: Item, ids: IdFactory) -> Item:
    name = item.get("name")
    if not isinstance(name, str) or not name:
        raise PolicyOutputError(f"a function_call needs a 'name' string, got {name!r}")
    arguments = item.get("arguments", "{}")
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments, separators=(",", ":"))
    return {
        "id": item.get("id") or ids.new("fc_"),
        "type": "function_call",
        "status": "completed",
        "arguments": arguments,
        "call_id": item.get("call_id") or ids.new("call_"),
        "name": name,
    }


def _message(item: Item, ids: IdFactory) -> Item:
    content = item.get("content", "")
    parts = [content] if isinstance(content, str) else content
    if not isinstance(parts, list):
        raise PolicyOutputError(f"a message's content must be a string or a list, got {parts!r}")
    return {
        "id": item.get("id") or ids.new("msg_"),
        "type": "message",
        "status": "completed",
        "content": [_text_part(part) for part in parts],
        "role": "assistant",
    }


def _text_part(part: object) -> Item:
    if isinstance(part, str):
        part = {"text": part}
    if not isinstance(part, dict) or not isinstance(part.get("text"), str):
        raise PolicyOutputError(f"a message content part needs a 'text' string, got {part!r}")
    return {"type": "output_text", "annotations": [], "logprobs": [], **part}


def _reasoning(item: Item, ids: IdFactory) -> Item:
    return {"summary": [], **item, "id": item.get("id") or ids.new("rs_"), "type": "reasoning"}


def build_response(
    request: ResponseRequest,
    output: list[Item],
    *,
    response_id: str,
    error: Item | None = None,
    incomplete_reason: str | None = None,
) -> Item:
    """The full `Response` body, request settings echoed as the real API does.

    With `error` it has status `failed` (and no usage); with `incomplete_reason`, status
    `incomplete` and its last output item too, as the API marks an answer cut off.
    """
    body = request.body
    status = "failed" if error else "incomplete" if incomplete_reason else "completed"
    if incomplete_reason and output:
        output = [*output[:-1], {**output[-1], "status": "incomplete"}]
    return {
        "id": response_id,
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "background": False,
        "error": error,
        "incomplete_details": {"reason": incomplete_reason} if incomplete_reason else None,
        "instructions": request.instructions,
        "max_output_tokens": body.get("max_output_tokens"),
        "max_tool_calls": body.get("max_tool_calls"),
        "model": request.model,
        "output": output,
        "parallel_tool_calls": request.parallel_tool_calls,
        "previous_response_id": request.previous_response_id,
        "prompt_cache_key": body.get("prompt_cache_key"),
        "reasoning": {"effort": None, "summary": None, **(body.get("reasoning") or {})},
        "safety_identifier": body.get("safety_identifier"),
        "service_tier": "default",
        "store": body.get("store") is not False,
        "temperature": body.get("temperature", 1.0),
        "text": body.get("text") or {"format": {"type": "text"}, "verbosity": "medium"},
        "tool_choice": request.tool_choice,
        "tools": [{"strict": True, "description": None, **tool} for tool in request.tools],
        "top_logprobs": body.get("top_logprobs", 0),
        "top_p": body.get("top_p", 1.0),
        "truncation": body.get("truncation", "disabled"),
        "usage": None if error else usage(request, output),
        "user": body.get("user"),
        "metadata": dict(request.metadata),
    }


def usage(request: ResponseRequest, output: list[Item]) -> Item:
    """A cheap, deterministic token estimate (about four characters a token), shaped like the API's."""
    prompt = [request.instructions, list(request.input), list(request.tools)]
    input_tokens = _estimate(prompt)
    output_tokens = _estimate(output)
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": input_tokens + output_tokens,
    }


def _estimate(value: Any) -> int:
    return max(1, len(json.dumps(value, ensure_ascii=False)) // 4)
