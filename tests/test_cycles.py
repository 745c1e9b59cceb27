"""What a run holds: nothing in reference cycles, and as little as it can while it waits.

With thousands of runs in flight, every object caught in a reference cycle lives until a full
collection walks the whole heap (``bench/bench_load.py`` measures what that costs). These tests
run the API page's scenario over a real 127.0.0.1 socket with the collector disabled, then ask
it what became unreachable: nothing may have.
"""

from __future__ import annotations

import asyncio
import gc
import json
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

import agent._execution
from agent import Agent, ToolContext, ToolRegistry, tool
from agent._result import JSONObject
from agent._wire import parse_response
from tests._support import function_call, message, response, scripted_agent, sse_text, stream_events

ANSWER = "All four done."


@tool
async def current_time(timezone: str | None = None) -> JSONObject:
    """The time (a constant)."""
    return {"timezone": timezone or "local", "local_time": "2025-06-01T14:30:00+02:00"}


@tool
async def system_info() -> JSONObject:
    """Facts about the computer (constants)."""
    return {"os": "Linux", "cpu_count": 2}


@tool
async def math_calculator(a: float, b: float) -> float:
    """Add two numbers."""
    return a + b


@tool
def random_generator(count: int = 1) -> list[int]:
    """Not random at all (a sync tool, so a worker thread takes part too)."""
    return [4] * count


TOOLS = ToolRegistry([current_time, system_info, math_calculator, random_generator])
CALLS = [
    function_call("current_time", {"timezone": "UTC"}),
    function_call("system_info", {}),
    function_call("math_calculator", {"a": 2, "b": 3}),
    function_call("random_generator", {"count": 2}),
]


def _reply(body: JSONObject, *, stream: bool) -> bytes:
    if stream:
        payload = sse_text(stream_events(body)).encode()
        kind = "text/event-stream"
    else:
        payload = json.dumps(body).encode()
        kind = "application/json"
    head = f"HTTP/1.1 200 OK\r\ncontent-type: {kind}\r\ncontent-length: {len(payload)}\r\n\r\n"
    return head.encode() + payload


class _Endpoint(asyncio.Protocol):
    """Keep-alive HTTP/1.1: the four calls, then the answer to a request that carries their outputs."""

    def __init__(self) -> None:
        self._buffer = b""
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        head, found, rest = self._buffer.partition(b"\r\n\r\n")
        if not found:
            return
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.lower().split(b"\r\n")
            if line.startswith(b"content-length:")
        )
        if len(rest) < length:
            return
        body, self._buffer = json.loads(rest[:length]), rest[length:]
        final = any(item.get("type") == "function_call_output" for item in body["input"])
        reply = response(message(ANSWER)) if final else response(*CALLS)
        assert self._transport is not None
        self._transport.write(_reply(reply, stream=bool(body.get("stream"))))

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None


@asynccontextmanager
async def _agent() -> AsyncIterator[Agent]:
    server = await asyncio.get_running_loop().create_server(_Endpoint, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with (
        server,
        Agent("gpt-4.1", base_url=f"http://127.0.0.1:{port}/v1", api_key="k", tools=TOOLS) as agent,
    ):
        yield agent


async def _unreachable_after(work: Callable[[], Awaitable[Any]]) -> Counter[str]:
    """The types of the objects that ``work`` left in reference cycles (run with the GC off)."""
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        await work()
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
    finally:
        gc.set_debug(0)
        if was_enabled:
            gc.enable()
    found = Counter(type(o).__qualname__ for o in gc.garbage)
    gc.garbage.clear()
    return found


@pytest.mark.asyncio
@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
async def test_a_run_leaves_no_reference_cycles(stream: bool) -> None:
    """After a warm-up run, a whole run (two requests, four tool calls) creates no reference cycle."""
    async with _agent() as agent:
        first = await agent.run("Do the four tasks.", stream=stream)  # connects, fills caches
        assert first.output == ANSWER
        left = await _unreachable_after(lambda: agent.run("Do the four tasks.", stream=stream))
    assert Counter() == left


def test_a_parsed_response_holds_the_bodys_own_output_items() -> None:
    """Parsing keeps the body's output items, not a validated copy a waiting run would hold twice."""
    body = response(*CALLS)
    parsed = parse_response(body)
    assert all(held is sent for held, sent in zip(parsed.output, body["output"], strict=True))


@pytest.mark.asyncio
async def test_a_tool_call_builds_a_tool_context_only_for_tools_that_take_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each call builds its ToolContext (and its threading.Event) only if the tool asks for it."""
    built: list[str] = []

    def counting(*args: Any, **kwargs: Any) -> ToolContext[Any]:
        built.append(args[1])
        return ToolContext(*args, **kwargs)

    @tool
    async def with_context(ctx: ToolContext[None]) -> str:
        """Says which call it serves."""
        return ctx.call_id

    monkeypatch.setattr(agent._execution, "ToolContext", counting)
    calls = [function_call("system_info", {}), function_call("with_context", {})]
    scripted, _ = scripted_agent(
        [response(*calls), response(message(ANSWER))], tools=[system_info, with_context]
    )
    async with scripted:
        await scripted.run("go")
    assert built == ["with_context"]
