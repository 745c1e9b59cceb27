"""Hostile input, one row each: what a model or an endpoint can send to hurt a run.

Every row must end in bounded time (``anyio.fail_after``) and bounded memory (tracemalloc peak)
with a clear typed error (an ``AgentError`` subclass) or a documented outcome kind for the call.
"""

from __future__ import annotations

import json
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx
import pytest

from agent import (
    Agent,
    AgentError,
    Limits,
    OutcomeKind,
    ProtocolError,
    ResponseTooLargeError,
    RetryPolicy,
    RunResult,
    RunTimeoutError,
    tool,
)
from tests._support import function_call, message, response, sse_text, stream_events

MiB = 1024 * 1024
KEY = "sk-hostile-key-0123456789"
SMALL = Limits(
    max_response_bytes=MiB, max_event_bytes=MiB, max_stream_bytes=4 * MiB, max_argument_bytes=MiB // 4
)
TIME_BOUND = 5.0
MEMORY_BOUND = 48 * MiB


@tool
def probe(x: int, tags: list[str] | None = None) -> dict[str, Any]:
    """Echo what it got.

    Args:
        x: A number.
        tags: Labels.
    """
    return {"x": x, "tags": tags or []}


Reply = httpx.Response | Callable[[httpx.Request], httpx.Response]


@dataclass
class Endpoint:
    """A MockTransport endpoint answering scripted replies; records every request it saw."""

    replies: list[Reply]
    seen: list[httpx.Request] = field(default_factory=list)

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        reply = self.replies.pop(0) if self.replies else httpx.Response(200, json=response(message("end")))
        return reply(request) if callable(reply) else reply


def _json(body: Any) -> httpx.Response:
    # ASCII-escaped, as a server must send text UTF-8 cannot carry (a raw lone surrogate).
    return httpx.Response(
        200, content=json.dumps(body).encode(), headers={"content-type": "application/json"}
    )


def _call_then_answer(arguments: str, name: str = "probe") -> list[Reply]:
    return [_json(response(function_call(name, arguments, call_id="call_h"))), _json(response(message("ok")))]


def _raw(content: bytes, content_type: str = "application/json", **headers: str) -> list[Reply]:
    return [httpx.Response(200, content=content, headers={"content-type": content_type, **headers})]


def _endless_stream() -> list[Reply]:
    delta = {"type": "response.output_text.delta", "item_id": "msg_1", "delta": "x" * 65536}

    async def forever() -> AsyncIterator[bytes]:
        first = stream_events(response(message("never finished")))[0]
        yield sse_text([first]).encode()
        while True:  # valid events, each one unremarkable: only the stream's size gives it away
            yield sse_text([delta]).encode()
            await anyio.lowlevel.checkpoint()

    return [httpx.Response(200, content=forever(), headers={"content-type": "text/event-stream"})]


def _endless_body() -> list[Reply]:
    async def practically_endless() -> AsyncIterator[bytes]:
        yield b'{"id": "r", "output": [], "pad": "'
        for _ in range(1024):  # 64 MiB: endless as far as a 1 MiB limit can tell
            yield b"x" * 65536
            await anyio.lowlevel.checkpoint()

    return [httpx.Response(200, content=practically_endless(), headers={"content-type": "application/json"})]


def _endless_comments() -> list[Reply]:
    async def forever() -> AsyncIterator[bytes]:
        while True:
            yield b": keep-alive\n\n"
            await anyio.sleep(0.01)

    return [httpx.Response(200, content=forever(), headers={"content-type": "text/event-stream"})]


class _Wire(httpx.AsyncByteStream):
    """Bytes as a socket delivers them: httpx.Response(content=...) would inflate them itself."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for start in range(0, len(self._data), 65536):
            yield self._data[start : start + 65536]


def _bomb() -> list[Reply]:
    # 64 MiB of zeros inflate from 64 KiB: past Limits.max_response_bytes (1 MiB here) 64 times.
    # Compressed a MiB at a time: the test itself must not hold the 64 MiB it inflates to.
    packer = zlib.compressobj(1, zlib.DEFLATED, 31)  # 31: a gzip container
    zeros = bytes(MiB)
    bomb = b"".join(packer.compress(zeros) for _ in range(64)) + packer.flush()
    headers = {"content-type": "application/json", "content-encoding": "gzip"}
    return [lambda request: httpx.Response(200, stream=_Wire(bomb), headers=headers)]


def _redirect(request: httpx.Request) -> httpx.Response:
    return httpx.Response(307, headers={"location": "https://elsewhere.example/v1/responses"})


def _many_calls(count: int) -> list[Reply]:
    calls = [function_call("probe", {"x": n}, call_id=f"call_{n}") for n in range(count)]
    return [_json(response(*calls)), _json(response(message("ok")))]


def _deep(depth: int) -> str:
    return '{"x":1,"tags":' + "[" * depth + "]" * depth + "}"


@dataclass(frozen=True)
class Row:
    """One hostile input and what must come of it."""

    replies: Callable[[], list[Reply]]
    error: type[AgentError] | None = None
    """The typed error the run must end with (None: the run completes)."""
    kinds: tuple[OutcomeKind, ...] = ()
    """The outcome kinds the calls may end with (any order)."""
    every_kind: bool = False
    """Each of ``kinds`` must occur (not only: nothing else may)."""
    or_error: type[AgentError] | None = None
    """A typed error that is an acceptable end too, instead of the kinds (a design choice)."""
    options: dict[str, Any] = field(default_factory=dict)


ROWS: dict[str, Any] = {
    "huge arguments": Row(
        lambda: _call_then_answer(json.dumps({"x": 1, "tags": ["a" * (MiB // 2)]})),
        kinds=("invalid_arguments",),
    ),
    "deeply nested arguments": Row(lambda: _call_then_answer(_deep(10_000)), kinds=("invalid_arguments",)),
    "NaN argument": Row(lambda: _call_then_answer('{"x": NaN}'), kinds=("invalid_arguments",)),
    "Infinity argument": Row(lambda: _call_then_answer('{"x": Infinity}'), kinds=("invalid_arguments",)),
    "control characters": Row(
        lambda: _call_then_answer(json.dumps({"x": 1, "tags": ["\x00\x1b[2J\x07\u202e"]})), kinds=("ok",)
    ),
    "raw control character in a string": Row(
        lambda: _call_then_answer('{"x": 1, "tags": ["a\x00b"]}'), kinds=("invalid_arguments",)
    ),
    "escaped lone surrogate in arguments": Row(
        lambda: _call_then_answer('{"x": 1, "tags": ["\\ud800"]}'),
        kinds=("ok", "invalid_arguments", "tool_error"),
        or_error=ProtocolError,
    ),
    "raw lone surrogate in arguments": Row(
        lambda: _call_then_answer('{"x": 1, "tags": ["\ud800"]}'),
        kinds=("ok", "invalid_arguments", "tool_error"),
        or_error=ProtocolError,
    ),
    "lone surrogate in a tool name": Row(
        lambda: _call_then_answer("{}", name="pro\ud800be"), kinds=("unknown_tool",), or_error=ProtocolError
    ),
    "500 calls in one response": Row(lambda: _many_calls(500), kinds=("ok", "rejected"), every_kind=True),
    "unicode tool name": Row(lambda: _call_then_answer("{}", name="météo"), kinds=("unknown_tool",)),
    "empty tool name": Row(lambda: _call_then_answer("{}", name=""), kinds=("unknown_tool",)),
    "path-like tool name": Row(
        lambda: _call_then_answer("{}", name="../../etc/passwd"), kinds=("unknown_tool",)
    ),
    "4 KiB tool name": Row(lambda: _call_then_answer("{}", name="p" * 4096), kinds=("unknown_tool",)),
    "enormous body": Row(
        lambda: _raw(b'{"id": "r", "output": [], "pad": "' + b"x" * (8 * MiB) + b'"}'),
        error=ResponseTooLargeError,
    ),
    "endless body": Row(_endless_body, error=ResponseTooLargeError),
    "endless stream": Row(_endless_stream, error=ResponseTooLargeError, options={"stream": True}),
    "endless keep-alive comments": Row(
        _endless_comments, error=RunTimeoutError, options={"stream": True, "run_timeout": 1.0}
    ),
    "gzip bomb": Row(_bomb, error=ResponseTooLargeError),
    "deeply nested body": Row(
        lambda: _raw(b'{"id": "r", "output": [], "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
        error=ProtocolError,
    ),
    "invalid UTF-8 body": Row(lambda: _raw(b'{"id": "r\xff\xfe", "output": []}'), error=ProtocolError),
    "invalid UTF-8 stream": Row(
        lambda: _raw(b'event: response.created\ndata: {"type": "\xff\xfe"}\n\n', "text/event-stream"),
        error=ProtocolError,
        options={"stream": True},
    ),
    "redirect to another host": Row(lambda: [_redirect], error=AgentError),
}


def _params() -> list[Any]:
    return [pytest.param(name, row, id=name) for name, row in ROWS.items()]


async def _run(row: Row) -> tuple[RunResult | AgentError, Endpoint]:
    endpoint = Endpoint(row.replies())
    client = httpx.AsyncClient(transport=httpx.MockTransport(endpoint.handle))
    agent = Agent(
        "gpt-4.1",
        base_url="https://api.example.test/v1",
        api_key=KEY,
        tools=[probe],
        http_client=client,
        retry=RetryPolicy(max_retries=0),
        limits=SMALL,
        **row.options,
    )
    try:
        async with agent:
            return await agent.run("go"), endpoint
    except AgentError as exc:
        return exc, endpoint
    finally:
        await client.aclose()


@pytest.mark.asyncio
@pytest.mark.timeout(30)
@pytest.mark.parametrize(("name", "row"), _params())
async def test_hostile_input_ends_bounded_and_typed(name: str, row: Row) -> None:
    """The row ends within the time and memory bounds, with its typed error or outcome kinds."""
    tracemalloc.start()
    try:
        with anyio.fail_after(TIME_BOUND):
            outcome, _ = await _run(row)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < MEMORY_BOUND
    if row.or_error is not None and isinstance(outcome, row.or_error):
        return
    assert isinstance(outcome, row.error or RunResult), repr(outcome)
    result = outcome if isinstance(outcome, RunResult) else outcome.partial_result
    kinds = {record.kind for record in result.tool_calls} if result else set()
    allowed = set(row.kinds)
    assert kinds == allowed if row.every_kind else (kinds <= allowed and bool(kinds) == bool(allowed))


@pytest.mark.asyncio
async def test_redirect_to_another_host_never_carries_the_key() -> None:
    """A redirect to another host is not followed with the Authorization header (nor at all)."""
    _, endpoint = await _run(ROWS["redirect to another host"])
    leaked = [r for r in endpoint.seen if r.url.host != "api.example.test" and "authorization" in r.headers]
    assert leaked == []
