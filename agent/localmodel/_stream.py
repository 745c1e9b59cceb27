"""Server-Sent Events for `"stream": true`, in the real API's event sequence.

`response.created`, `response.in_progress`, then for each output item `response.output_item.added`,
its deltas (function call arguments, or per content part `content_part.added`,
`output_text.delta`..., `output_text.done`, `content_part.done`) and `response.output_item.done`,
and finally `response.completed` (`response.incomplete` for an incomplete response; an `error`
event then `response.failed` for a failed one). Each event's `type` equals its `event:` name and
`sequence_number` counts from 0, as in the recorded streams.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import AsyncIterator, Iterator, Sequence

import anyio

from ._request import Item, item_type

__all__ = ["MALFORMED_STREAM", "sse_events"]

MALFORMED_STREAM = 'event: response.created\ndata: {"type": "response.created", "sequ\n\n'
"""What a `malformed` fault streams: an event whose data is cut off mid-JSON."""

_WORD = re.compile(r"\S+\s*|\s+")
_TERMINAL = {
    "completed": "response.completed",
    "incomplete": "response.incomplete",
    "failed": "response.failed",
}
_MAX_TEXT_CHUNKS = 16
_ARGUMENT_CHUNKS = 4


async def sse_events(
    response: Item,
    *,
    item_delay: float,
    truncate: bool,
    stall: float = 0.0,
    item_delays: Sequence[float | None] = (),
) -> AsyncIterator[str]:
    """The encoded events of a finished `response`, pausing `item_delay` seconds between items
    (and a quarter of it between text deltas, so that an answer visibly streams). `item_delays[i]`,
    when given and not None, is the pause before item `i` instead.

    With `truncate`, the stream ends after the first output item and never completes, as when a
    connection is cut mid-answer. With `stall`, it pauses that many seconds after the first item.
    """
    sequence = 0

    def encode(event: Item) -> str:
        nonlocal sequence
        data = {"type": event["type"], "sequence_number": sequence, **event}
        sequence += 1
        return f"event: {event['type']}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"

    pending = {
        **response,
        "status": "in_progress",
        "error": None,
        "incomplete_details": None,
        "output": [],
        "usage": None,
    }
    yield encode({"type": "response.created", "response": pending})
    yield encode({"type": "response.in_progress", "response": pending})
    for index, item in enumerate(response["output"]):
        own = item_delays[index] if index < len(item_delays) else None
        pause = (item_delay if index else 0.0) if own is None else own
        if pause:
            await anyio.sleep(pause)
        for event in item_events(item, index):
            if item_delay and event["type"] == "response.output_text.delta":
                await anyio.sleep(item_delay / 4)
            yield encode(event)
        if stall and index == 0:
            await anyio.sleep(stall)
        if truncate:
            return
    error = response.get("error")
    if error:
        # As recorded from the API: the fields nested under "error", the type repeating the code.
        yield encode({"type": "error", "error": {"type": error["code"], **error, "param": None}})
    yield encode({"type": _TERMINAL[response["status"]], "response": response})


def item_events(item: Item, output_index: int) -> Iterator[Item]:
    """The events that stream one finished output item."""
    where = {"item_id": item["id"], "output_index": output_index}
    kind = item_type(item)
    started: Item = {**item, "status": "in_progress"}
    if kind == "function_call":
        started["arguments"] = ""
    elif kind == "message":
        started["content"] = []
    yield {"type": "response.output_item.added", "output_index": output_index, "item": started}
    if kind == "function_call":
        yield from _argument_events(item["arguments"], where)
    elif kind == "message":
        for content_index, part in enumerate(item["content"]):
            yield from _text_part_events(part, {**where, "content_index": content_index})
    yield {"type": "response.output_item.done", "output_index": output_index, "item": item}


def _argument_events(arguments: str, where: Item) -> Iterator[Item]:
    for chunk in _even_chunks(arguments, _ARGUMENT_CHUNKS):
        yield {"type": "response.function_call_arguments.delta", **where, "delta": chunk}
    yield {"type": "response.function_call_arguments.done", **where, "arguments": arguments}


def _text_part_events(part: Item, where: Item) -> Iterator[Item]:
    text: str = part["text"]
    yield {"type": "response.content_part.added", **where, "part": {**part, "text": ""}}
    for chunk in _word_chunks(text):
        yield {"type": "response.output_text.delta", **where, "delta": chunk, "logprobs": []}
    yield {"type": "response.output_text.done", **where, "text": text, "logprobs": []}
    yield {"type": "response.content_part.done", **where, "part": part}


def _even_chunks(text: str, count: int) -> list[str]:
    size = max(1, math.ceil(len(text) / count))
    return [text[start : start + size] for start in range(0, len(text), size)]


def _word_chunks(text: str) -> list[str]:
    """Word-sized deltas, as a model's tokens roughly are, at most a fixed number of them."""
    words = _WORD.findall(text)
    per_chunk = max(1, math.ceil(len(words) / _MAX_TEXT_CHUNKS))
    return ["".join(words[start : start + per_chunk]) for start in range(0, len(words), per_chunk)]
