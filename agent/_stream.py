"""Reading a streamed response: Server-Sent Events in, run events and finished calls out.

The SSE framing is httpx-sse's; this module only gives the Responses events their meaning.
Every event type is accepted: the ones a run reports (text and argument deltas) become typed
run events, each finished ``function_call`` item is handed to ``on_call`` at once (so the
tool can start while the rest streams), other known or unknown types are passed on as
:class:`StreamEvent`, and the terminal event's response is parsed like a non-streamed one.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

import anyio.lowlevel
import httpx
from httpx_sse import EventSource, ServerSentEvent
from pydantic import ValidationError

from agent._errors import ProtocolError, ResponseFailedError
from agent._events import ArgumentsDelta, Emit, StreamEvent, TextDelta
from agent._result import JSONObject
from agent._wire import FunctionCall, ModelResponse, failure_is_transient, parse_response

__all__ = ["StreamReader"]

_MAX_AFTER_END = 16
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
    """Reads one streamed response for turn ``turn``."""

    turn: int
    emit: Emit
    on_call: Callable[[FunctionCall], None]
    """Called with each complete function_call item (to start it), then the reader yields once
    so the started tool gets going before the stream is read further."""
    _error: JSONObject | None = None

    async def read(self, reply: httpx.Response) -> ModelResponse:
        """Consume the stream up to its terminal event and return the finished response."""
        finished: ModelResponse | None = None
        after = 0
        # Read to the end even past the terminal event (the server closes right after it), as
        # the official client does: leaving httpx's byte generators half-read leaks them to GC.
        # A server that keeps sending after it is not waited for beyond a few events.
        try:
            async with aclosing(EventSource(reply).aiter_sse()) as events:
                async for sse in events:
                    if finished is None:
                        finished = await self._event(sse)
                    elif (after := after + 1) > _MAX_AFTER_END:
                        break
        except httpx.TransportError:
            if finished is None:
                raise  # a connection lost after the terminal event loses nothing
        if finished is not None:
            return finished
        if self._error is not None:
            raise _failure(self._error)
        raise ProtocolError("the stream ended before the response completed", transient=True)

    async def _event(self, sse: ServerSentEvent) -> ModelResponse | None:
        """Act on one event; the finished response if it was the terminal one."""
        data = _decode(sse)
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
        elif kind == "response.output_item.done" and _is_call(data.get("item")):
            self.on_call(_call(data["item"]))
            await anyio.lowlevel.checkpoint()
        elif kind == "error":
            # Older streams put the fields at the top level, newer ones under "error".
            error = data.get("error")
            self._error = error if isinstance(error, dict) else data
        elif kind not in _QUIET:
            await self.emit(StreamEvent(self.turn, kind, data))

    def _finish(self, data: JSONObject) -> ModelResponse:
        body = data.get("response")
        if not isinstance(body, dict):
            raise ProtocolError(f"{data.get('type')} event without a response object", body=data)
        if body.get("status") == "failed" and not body.get("error") and self._error:
            body = {**body, "error": self._error}
        return parse_response(body)


def _decode(sse: ServerSentEvent) -> JSONObject:
    try:
        data = json.loads(sse.data) if sse.data else {}
    except ValueError:
        raise ProtocolError(
            f"malformed JSON in stream event {sse.event!r}: {sse.data[:120]!r}", transient=True
        ) from None
    if not isinstance(data, dict):
        raise ProtocolError(f"stream event {sse.event!r} is not a JSON object", transient=True)
    return data


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
