"""Reading a streamed response: Server-Sent Events in, run events and finished calls out.

The body is read within ``Limits`` (``max_stream_bytes`` for the stream, ``max_event_bytes`` for
one event, cut into lines here and parsed into fields by httpx-sse); this module gives the
Responses events their meaning.
Every event type is accepted: the ones a run reports (text and argument deltas) become typed
run events, each finished ``function_call`` item is handed to ``on_call`` at once (so the
tool can start while the rest streams), other known or unknown types are passed on as
:class:`StreamEvent`, and the terminal event's response is parsed like a non-streamed one.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio.lowlevel
import httpx
from httpx_sse import ServerSentEvent

# The SSE field parser of httpx-sse, fed with lines cut here (its own line reader holds a
# whole line, however long, before handing it over).
from httpx_sse._decoders import SSEDecoder
from pydantic import ValidationError

from agent._body import ReplyBody
from agent._errors import ProtocolError, ResponseFailedError, ResponseTooLargeError
from agent._events import ArgumentsDelta, Emit, StreamEvent, TextDelta
from agent._limits import DEFAULT_LIMITS, Limits
from agent._result import JSONObject
from agent._wire import (
    FunctionCall,
    JSONRefused,
    ModelResponse,
    failure_is_transient,
    load_json,
    parse_response,
)

__all__ = ["StreamReader"]

_END_GRACE = 0.05
"""Seconds to wait for the end of the body after the terminal event (so the connection can
be used again) before closing it unread."""
_TERMINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})
_QUIET = frozenset(
    {
        # Nothing the typed events and the final response do not already say.
        "keepalive",
        "response.created",
        "response.in_progress",
        "response.content_part.added",
        "response.content_part.done",
        "response.output_text.done",
        "response.function_call_arguments.done",
        "response.output_item.done",
    }
)


@dataclass(slots=True)
class StreamReader:
    """Reads one streamed response for turn ``turn``, within ``limits``."""

    turn: int
    emit: Emit
    on_call: Callable[[FunctionCall], None]
    """Called with each complete function_call item (to start it), then the reader yields once
    so the started tool gets going before the stream is read further."""
    limits: Limits = DEFAULT_LIMITS
    _error: JSONObject | None = None
    _items: int = 0
    _status: int | None = None

    async def read(self, reply: httpx.Response) -> ModelResponse:
        """Consume the stream up to its terminal event and return the finished response.

        The rest of the body is not waited for: a gateway may keep the connection open.
        """
        self._status = reply.status_code
        events = _EventParser(self.limits.max_event_bytes, reply.status_code)
        limit = self.limits.max_stream_bytes
        async with ReplyBody(reply, limit=limit, limit_name="max_stream_bytes") as body:
            async for chunk in body:
                for sse in events.feed(chunk):
                    if (finished := await self._event(sse)) is not None:
                        await body.finish(_END_GRACE)
                        return finished
        if self._error is not None:
            raise _failure(self._error)
        raise ProtocolError("the stream ended before the response completed", transient=True)

    async def _event(self, sse: ServerSentEvent) -> ModelResponse | None:
        """Act on one event; the finished response if it was the terminal one."""
        data = _decode(sse, self.limits.max_json_depth, self._status)
        kind = str(data.get("type") or sse.event)
        if kind in _TERMINAL:
            return self._finish(data)
        await self._handle(kind, data)
        return None

    async def _handle(self, kind: str, data: JSONObject) -> None:
        item_id = str(data.get("item_id", ""))
        if kind == "response.output_text.delta":
            await self.emit(TextDelta(self.turn, item_id, str(data.get("delta", ""))))
        elif kind == "response.function_call_arguments.delta":
            await self.emit(ArgumentsDelta(self.turn, item_id, str(data.get("delta", ""))))
        elif kind == "response.output_item.done":
            self._count_item()
            if _is_call(data.get("item")):
                self.on_call(_call(data["item"]))
                await anyio.lowlevel.checkpoint()
        elif kind == "error":
            # Older streams put the fields at the top level, newer ones under "error".
            error = data.get("error")
            self._error = error if isinstance(error, dict) else data
        elif kind not in _QUIET:
            await self.emit(StreamEvent(self.turn, kind, data))

    def _count_item(self) -> None:
        self._items += 1
        if self._items > (limit := self.limits.max_output_items):
            raise ResponseTooLargeError(
                f"the stream sent more than Limits.max_output_items={limit} output items",
                status=self._status,
            )

    def _finish(self, data: JSONObject) -> ModelResponse:
        body = data.get("response")
        if not isinstance(body, dict):
            raise ProtocolError(f"{data.get('type')} event without a response object", body=data)
        if body.get("status") == "failed" and not body.get("error") and self._error:
            body = {**body, "error": self._error}
        return parse_response(body, max_output_items=self.limits.max_output_items, status=self._status)


def _decode(sse: ServerSentEvent, max_depth: int, status: int | None) -> JSONObject:
    try:
        data = load_json(sse.data, max_depth=max_depth) if sse.data else {}
    except JSONRefused as exc:
        what = f"stream event {sse.event[:60]!r}"
        if exc.too_deep:
            raise ResponseTooLargeError(f"{what} is {exc}", status=status) from None
        raise ProtocolError(
            f"malformed JSON in {what} ({exc}): {sse.data[:120]!r}", status=status, transient=True
        ) from None
    if not isinstance(data, dict):
        raise ProtocolError(f"stream event {sse.event[:60]!r} is not a JSON object", transient=True)
    return data


_LINE_BREAK = re.compile(rb"\r\n|\r|\n")


class _EventParser:
    """Server-Sent Events from byte chunks, holding at most ``limit`` bytes of one event."""

    def __init__(self, limit: int, status: int) -> None:
        self._limit = limit
        self._status = status
        self._fields = SSEDecoder()
        self._tail: list[bytes] = []
        self._tail_size = 0
        self._event_size = 0
        self._skip_lf = False

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        """The events that ``chunk`` completes."""
        if self._skip_lf and chunk.startswith(b"\n"):
            chunk = chunk[1:]
        self._skip_lf = chunk.endswith(b"\r")  # a CRLF may be cut between two chunks
        lines = _LINE_BREAK.split(chunk) if b"\r" in chunk else chunk.split(b"\n")
        if len(lines) == 1:
            self._hold(chunk)
            return []
        if self._tail:
            lines[0] = b"".join([*self._tail, lines[0]])
            self._tail, self._tail_size = [], 0
        self._hold(lines.pop())  # the unfinished last line (b"" after a line break)
        return [sse for line in lines if (sse := self._line(line)) is not None]

    def _hold(self, part: bytes) -> None:
        if part:
            self._tail.append(part)
            self._tail_size += len(part)
            self._check(self._event_size + self._tail_size)

    def _line(self, line: bytes) -> ServerSentEvent | None:
        if not line:
            self._event_size = 0
        else:
            self._event_size += len(line)
            self._check(self._event_size)
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            error = ProtocolError(
                f"a stream event is not UTF-8 (byte {exc.start} of its line)", transient=True
            )
        else:
            return self._fields.decode(text)
        raise error

    def _check(self, size: int) -> None:
        if size > self._limit:
            raise ResponseTooLargeError(
                f"a stream event passed Limits.max_event_bytes={self._limit} bytes", status=self._status
            )


def _is_call(item: Any) -> bool:
    return isinstance(item, dict) and item.get("type") == "function_call"


def _call(item: JSONObject) -> FunctionCall:
    try:
        return FunctionCall.model_validate(item)
    except ValidationError:
        raise ProtocolError("a streamed function_call item lacks call_id or name", body=item) from None


def _failure(error: JSONObject) -> ResponseFailedError:
    code = error.get("code")
    return ResponseFailedError(
        str(error.get("message") or "the stream reported an error"),
        code=str(code) if code is not None else None,
        error_type=str(error.get("type")) if error.get("type") else None,
        body=error,
        transient=failure_is_transient(error),
    )
