"""Streamed runs: events as they happen, eager tool starts, stream failures, run_stream."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest

from agent import (
    ArgumentsDelta,
    BadRequestError,
    ModelResponded,
    ProtocolError,
    ResponseFailedError,
    RunEvent,
    RunFinished,
    RunStarted,
    StreamEvent,
    TextDelta,
    ToolCallFinished,
    ToolCallStarted,
    ToolContext,
    ToolProgress,
    TurnFinished,
    tool,
)
from tests._support import (
    function_call,
    message,
    response,
    scripted_agent,
    sse_reply,
    sse_text,
    stream_events,
)


@tool
async def echo(text: str) -> str:
    """Return the text."""
    return text


async def collect(agent: Any, prompt: str = "go") -> list[RunEvent]:
    async with agent.run_stream(prompt) as events:
        return [event async for event in events]


@pytest.mark.asyncio
async def test_streamed_run_reaches_the_same_result() -> None:
    """run(stream=True) gives the result a non-streamed run gives, and asks for stream: true."""
    call = function_call("echo", {"text": "hi"})
    agent, endpoint = scripted_agent(
        [sse_reply(response(call)), sse_reply(response(message("all done")))], tools=[echo]
    )
    result = await agent.run("go", stream=True)
    assert (result.output, [r.output for r in result.tool_calls], result.turns) == ("all done", ["hi"], 2)
    assert all(body["stream"] is True for body in endpoint.requests)


@pytest.mark.asyncio
async def test_event_order_of_a_streamed_run() -> None:
    """Events come in the order things happen, deltas included."""
    call = function_call("echo", {"text": "hi"})
    agent, _ = scripted_agent(
        [sse_reply(response(call)), sse_reply(response(message("all done")))], tools=[echo]
    )
    kinds = [type(e).__name__ for e in await collect(agent) if type(e).__name__ != "StreamEvent"]
    assert kinds[:4] == ["RunStarted", "ArgumentsDelta", "ArgumentsDelta", "ToolCallStarted"]
    assert sorted(kinds[4:7]) == ["ModelResponded", "ToolCallFinished", "TurnFinished"]
    assert kinds.index("TurnFinished") > kinds.index("ToolCallFinished")
    assert kinds[7:] == ["TextDelta", "TextDelta", "ModelResponded", "TurnFinished", "RunFinished"]


@pytest.mark.asyncio
async def test_deltas_rebuild_text_and_arguments() -> None:
    """Joined deltas equal the final text and the call's arguments."""
    call = function_call("echo", {"text": "a longer text"})
    agent, _ = scripted_agent(
        [sse_reply(response(call)), sse_reply(response(message("the final answer is here")))], tools=[echo]
    )
    events = await collect(agent)
    assert "".join(e.delta for e in events if isinstance(e, ArgumentsDelta)) == call["arguments"]
    assert " ".join(e.delta for e in events if isinstance(e, TextDelta)) == "the final answer is here"
    finished = events[-1]
    assert isinstance(finished, RunFinished)
    assert finished.result.output == "the final answer is here"


def gated_stream(first: dict[str, Any], rest: list[dict[str, Any]], gate: anyio.Event) -> httpx.Response:
    """A stream that sends ``first`` items' events, then waits for ``gate`` before the rest."""
    events = stream_events(response(*[first, *rest]))
    split = next(i for i, e in enumerate(events) if e["type"] == "response.output_item.done") + 1

    async def body() -> AsyncIterator[bytes]:
        yield sse_text(events[:split]).encode()
        with anyio.fail_after(5):
            await gate.wait()
        yield sse_text(events[split:]).encode()

    return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body())


@pytest.mark.asyncio
async def test_eager_tool_starts_while_the_response_is_still_streaming() -> None:
    """The first call's tool runs before the rest of the response is sent (the stream waits for it)."""
    ran = anyio.Event()

    @tool
    async def first() -> str:
        """Unblock the stream."""
        ran.set()
        return "first done"

    replies = [gated_stream(function_call("first"), [function_call("echo", {"text": "x"})], ran)]
    agent, _ = scripted_agent([*replies, sse_reply(response(message("ok")))], tools=[first, echo])
    with anyio.fail_after(10):
        result = await agent.run("go", stream=True)
    assert [r.output for r in result.tool_calls] == ["first done", "x"]


@pytest.mark.asyncio
async def test_non_eager_tool_waits_for_the_completed_response() -> None:
    """A tool with eager=False starts only after response.completed."""

    @tool(eager=False)
    async def send_email(to: str) -> str:
        """Send an email (a side effect)."""
        return f"sent to {to}"

    call = function_call("send_email", {"to": "ada"})
    agent, _ = scripted_agent(
        [sse_reply(response(call)), sse_reply(response(message("ok")))], tools=[send_email]
    )
    kinds = [type(e).__name__ for e in await collect(agent)]
    assert kinds.index("ToolCallStarted") > kinds.index("ModelResponded")


@pytest.mark.asyncio
async def test_each_call_reports_when_it_finishes_not_per_batch() -> None:
    """A fast call's ToolCallFinished arrives while a slow call of the same turn still runs."""
    release = anyio.Event()

    @tool
    async def slow() -> str:
        """Wait to be released."""
        await release.wait()
        return "slow"

    calls = [function_call("slow"), function_call("echo", {"text": "fast"})]
    agent, _ = scripted_agent(
        [sse_reply(response(*calls)), sse_reply(response(message("ok")))], tools=[slow, echo]
    )
    finished: list[str] = []
    with anyio.fail_after(10):
        async with agent.run_stream("go") as events:
            async for event in events:
                if isinstance(event, ToolCallFinished):
                    finished.append(event.record.output)
                    release.set()
    assert finished == ["fast", "slow"]


@pytest.mark.asyncio
async def test_slow_consumer_loses_no_event() -> None:
    """More events than the buffer holds, consumed slowly: every one arrives, in order."""
    text = " ".join(f"w{i}" for i in range(600))
    agent, _ = scripted_agent([sse_reply(response(message(text)))])
    seen: list[str] = []
    async with agent.run_stream("go") as events:
        async for event in events:
            if isinstance(event, TextDelta):
                seen.append(event.delta)
                if len(seen) % 50 == 0:
                    await anyio.sleep(0.001)
    assert " ".join(seen) == text
    assert events.result is not None
    assert events.result.output == text


@pytest.mark.asyncio
async def test_leaving_the_stream_early_cancels_the_run_and_its_tools() -> None:
    """Breaking out of the iteration cancels the running tool."""
    cancelled = anyio.Event()

    @tool
    async def forever() -> str:
        """Never finish."""
        try:
            await anyio.sleep_forever()
        finally:
            cancelled.set()
        return "unreachable"

    agent, _ = scripted_agent([sse_reply(response(function_call("forever")))], tools=[forever])
    with anyio.fail_after(5):
        async with agent.run_stream("go") as events:
            async for event in events:
                if isinstance(event, ToolCallStarted):
                    break
    assert cancelled.is_set()


@pytest.mark.asyncio
async def test_tool_progress_appears_in_the_event_stream() -> None:
    """Async tools report with ``await ctx.report``, sync tools with ``ctx.report_from_thread``."""

    @tool
    async def crawl(ctx: ToolContext[None]) -> str:
        """Report progress twice."""
        await ctx.report({"pages": 1})
        await ctx.report({"pages": 2})
        return "crawled"

    @tool
    def index(ctx: ToolContext[None]) -> str:
        """Report progress from a worker thread."""
        ctx.report_from_thread("half way")
        return "indexed"

    calls = [function_call("crawl"), function_call("index")]
    agent, _ = scripted_agent(
        [sse_reply(response(*calls)), sse_reply(response(message("ok")))], tools=[crawl, index]
    )
    events = await collect(agent)
    progress = [(e.name, e.data) for e in events if isinstance(e, ToolProgress)]
    assert sorted(progress, key=str) == sorted(
        [("crawl", {"pages": 1}), ("crawl", {"pages": 2}), ("index", "half way")], key=str
    )
    crawl_done = next(
        i for i, e in enumerate(events) if isinstance(e, ToolCallFinished) and e.record.name == "crawl"
    )
    assert (
        max(i for i, e in enumerate(events) if isinstance(e, ToolProgress) and e.name == "crawl") < crawl_done
    )


def truncated(body: dict[str, Any], keep: int) -> httpx.Response:
    """A stream cut after its first ``keep`` events (no terminal event)."""
    events = stream_events(body)[:keep]
    return httpx.Response(200, headers={"content-type": "text/event-stream"}, text=sse_text(events))


@pytest.mark.asyncio
async def test_truncated_stream_before_any_tool_is_retried() -> None:
    """A stream cut before any call started is a transient error: the request is sent again."""
    body = response(message("complete answer"))
    agent, endpoint = scripted_agent([truncated(body, 2), sse_reply(body)])
    result = await agent.run("go", stream=True)
    assert (result.output, len(endpoint.requests)) == ("complete answer", 2)


@pytest.mark.asyncio
async def test_truncated_stream_after_a_tool_started_is_not_retried() -> None:
    """Once a tool started, the failure ends the run: no call ever runs twice."""
    runs = 0

    @tool
    async def counted() -> str:
        """Count the runs."""
        nonlocal runs
        runs += 1
        return "ran"

    body = response(function_call("counted"), message("more to come"))
    cut = next(i for i, e in enumerate(stream_events(body)) if e["type"] == "response.output_item.done") + 1
    agent, endpoint = scripted_agent([truncated(body, cut), sse_reply(body)], tools=[counted])
    with pytest.raises(ProtocolError, match="ended before the response completed") as info:
        await agent.run("go", stream=True)
    assert (runs, len(endpoint.requests)) == (1, 1)
    assert info.value.partial_result is not None


@pytest.mark.asyncio
async def test_malformed_event_json_is_a_retried_protocol_error() -> None:
    """A data line that is not JSON raises ProtocolError and, nothing having run, is retried."""
    bad = httpx.Response(
        200, headers={"content-type": "text/event-stream"}, text='event: x\ndata: {"type": \n\n'
    )
    agent, endpoint = scripted_agent([bad, bad, bad], max_retries=2)
    with pytest.raises(ProtocolError, match="malformed JSON"):
        await agent.run("go", stream=True)
    assert len(endpoint.requests) == 3


@pytest.mark.asyncio
async def test_unknown_and_keepalive_events_are_accepted() -> None:
    """Unknown event types pass through as StreamEvent; keepalives are skipped quietly."""
    events = stream_events(response(message("hi")))
    events.insert(1, {"type": "keepalive", "sequence_number": 99})
    events.insert(2, {"type": "response.future_thing", "sequence_number": 100, "x": 1})
    agent, _ = scripted_agent([sse_reply(events)])
    seen = await collect(agent)
    passed = [(e.type, e.data.get("x")) for e in seen if isinstance(e, StreamEvent)]
    assert passed == [("response.future_thing", 1), ("response.output_item.added", None)]


@pytest.mark.asyncio
async def test_json_reply_to_a_stream_request_is_read_whole() -> None:
    """A server that ignores stream: true and answers JSON still works."""
    agent, _ = scripted_agent([response(message("plain json"))])
    assert (await agent.run("go", stream=True)).output == "plain json"


@pytest.mark.asyncio
async def test_stream_error_event_then_failed_raises_typed_error() -> None:
    """An ``error`` event followed by response.failed raises ResponseFailedError with the code."""
    failed = response(status="failed", error=None)
    events = [
        {"type": "response.created", "sequence_number": 0, "response": {**failed, "status": "in_progress"}},
        {"type": "error", "sequence_number": 1, "code": "insufficient_quota", "message": "quota exceeded"},
        {"type": "response.failed", "sequence_number": 2, "response": failed},
    ]
    agent, _ = scripted_agent([sse_reply(events)])
    with pytest.raises(ResponseFailedError) as info:
        await agent.run("go", stream=True)
    assert (info.value.code, info.value.message) == ("insufficient_quota", "quota exceeded")


@pytest.mark.asyncio
async def test_hooks_fire_in_streamed_runs() -> None:
    """Hooks receive the same events in a streamed run."""
    from agent import Hooks

    seen: list[str] = []
    hooks = Hooks(
        on_run_start=lambda e: seen.append("start"),
        on_model_response=lambda e: seen.append("response"),
        on_tool_start=lambda e: seen.append("tool start"),
        on_tool_end=lambda e: seen.append("tool end"),
        on_run_end=lambda e: seen.append("end"),
    )
    call = function_call("echo", {"text": "x"})
    agent, _ = scripted_agent([sse_reply(response(call)), sse_reply(response(message("ok")))], tools=[echo])
    await agent.run("go", stream=True, hooks=hooks)
    assert (seen[0], seen[-1], seen.count("response")) == ("start", "end", 2)
    assert seen.index("tool start") < seen.index("tool end") < len(seen) - 2


@pytest.mark.asyncio
async def test_run_stream_raises_the_run_error_at_the_end() -> None:
    """A failed run's events arrive, then its error is raised from the iteration."""
    agent, _ = scripted_agent([httpx.Response(400, json={"error": {"message": "bad", "code": "x"}})])
    seen: list[RunEvent] = []

    async def consume() -> None:
        async with agent.run_stream("go") as events:
            async for event in events:
                seen.append(event)

    with pytest.raises(BadRequestError, match="bad"):
        await consume()
    assert [type(e) for e in seen] == [RunStarted]


@pytest.mark.asyncio
async def test_turn_finished_carries_usage() -> None:
    """TurnFinished reports each turn's usage and its number of calls."""
    call = function_call("echo", {"text": "x"})
    agent, _ = scripted_agent([sse_reply(response(call)), sse_reply(response(message("ok")))], tools=[echo])
    turns = [e for e in await collect(agent) if isinstance(e, TurnFinished)]
    assert [(t.turn, t.tool_calls, t.usage.total_tokens) for t in turns] == [(1, 1, 15), (2, 0, 15)]
    assert ModelResponded.__name__ == "ModelResponded"


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_streamed_run_under_trio(anyio_backend: str) -> None:
    """Streaming and run_stream work under trio too."""
    call = function_call("echo", {"text": "trio"})
    agent, _ = scripted_agent([sse_reply(response(call)), sse_reply(response(message("ok")))], tools=[echo])
    events = await collect(agent)
    assert json.loads(json.dumps([type(e).__name__ for e in events]))[-1] == "RunFinished"


@pytest.mark.asyncio
async def test_eager_start_against_the_local_server_on_a_socket() -> None:
    """With the local server pausing between streamed calls, the first tool finishes before
    response.completed arrives (the real socket path, SSE framing by the server)."""
    from agent import Agent
    from agent.localmodel import LocalModelServer, ScriptPolicy

    calls = [
        {"type": "function_call", "call_id": f"call_{n}", "name": "echo", "arguments": '{"text": "x"}'}
        for n in (1, 2)
    ]
    policy = ScriptPolicy([calls, [{"type": "message", "content": "done"}]])
    order: list[str] = []
    with LocalModelServer(policy, stream_delay=0.2) as server:
        async with (
            Agent("local", base_url=server.base_url, api_key="local", tools=[echo]) as agent,
            agent.run_stream("go") as events,
        ):
            async for event in events:
                if isinstance(event, ToolCallFinished):
                    order.append(f"finished {event.record.call_id}")
                elif isinstance(event, ModelResponded):
                    order.append(f"completed {event.turn}")
    assert order.index("finished call_1") < order.index("completed 1")
    assert len(order) == 4
    assert events.result is not None
    assert events.result.output == "done"


@pytest.mark.asyncio
async def test_failed_stream_keeps_finished_calls_in_the_partial_result() -> None:
    """After a mid-stream failure, partial_result lists the finished call and the cancelled one."""
    release = anyio.Event()

    @tool
    async def quick() -> str:
        """Finish at once."""
        release.set()
        return "quick done"

    @tool
    async def stuck() -> str:
        """Never finish."""
        await anyio.sleep_forever()
        return "never"

    body = response(function_call("quick"), function_call("stuck"), message("more"))
    events = stream_events(body)
    cut = [i for i, e in enumerate(events) if e["type"] == "response.output_item.done"][1] + 1

    async def content() -> AsyncIterator[bytes]:
        yield sse_text(events[:cut]).encode()
        with anyio.fail_after(5):
            await release.wait()
        await anyio.sleep(0.01)

    cut_stream = httpx.Response(200, headers={"content-type": "text/event-stream"}, content=content())
    agent, _ = scripted_agent([cut_stream], tools=[quick, stuck])
    with pytest.raises(ProtocolError) as info:
        await agent.run("go", stream=True)
    partial = info.value.partial_result
    assert partial is not None
    assert [(r.name, r.kind) for r in partial.tool_calls] == [("quick", "ok"), ("stuck", "cancelled")]


@pytest.mark.asyncio
async def test_connection_lost_after_the_terminal_event_loses_nothing() -> None:
    """A read error after response.completed is ignored: the finished response stands."""
    events = stream_events(response(message("finished answer")))

    async def content() -> AsyncIterator[bytes]:
        yield sse_text(events).encode()
        raise httpx.ReadError("connection reset")

    reply = httpx.Response(200, headers={"content-type": "text/event-stream"}, content=content())
    agent, endpoint = scripted_agent([reply])
    result = await agent.run("go", stream=True)
    assert (result.output, len(endpoint.requests)) == ("finished answer", 1)


@pytest.mark.asyncio
async def test_a_retried_stream_announces_the_restart() -> None:
    """When a broken stream is requested again, StreamRestarted precedes the repeated deltas."""
    body = response(message("complete answer"))
    agent, _ = scripted_agent([truncated(body, 4), sse_reply(body)])
    kinds = [type(e).__name__ for e in await collect(agent)]
    restart = kinds.index("StreamRestarted")
    assert "TextDelta" in kinds[:restart]
    assert kinds[restart + 1 :].count("TextDelta") == 2


@pytest.mark.asyncio
async def test_a_stream_that_never_ends_after_completion_is_not_waited_for() -> None:
    """Keepalives forever after response.completed do not hold the run."""
    events = stream_events(response(message("done")))

    async def content() -> AsyncIterator[bytes]:
        yield sse_text(events).encode()
        while True:
            yield b'event: keepalive\ndata: {"type": "keepalive"}\n\n'
            await anyio.sleep(0.001)

    reply = httpx.Response(200, headers={"content-type": "text/event-stream"}, content=content())
    agent, _ = scripted_agent([reply])
    with anyio.fail_after(5):
        assert (await agent.run("go", stream=True)).output == "done"


@pytest.mark.asyncio
async def test_run_stream_keeps_the_hook_errors_cause() -> None:
    """A hook's exception stays the __cause__ of the HookError that run_stream raises."""
    from agent import HookError, Hooks

    def boom(event: object) -> None:
        raise KeyError("boom")

    agent, _ = scripted_agent([sse_reply(response(message("ok")))])

    async def consume() -> None:
        async with agent.run_stream("go", hooks=Hooks(on_model_response=boom)) as events:
            async for _ in events:
                pass

    with pytest.raises(HookError) as info:
        await consume()
    assert isinstance(info.value.__cause__, KeyError)


@pytest.mark.asyncio
@pytest.mark.parametrize("size", [1, 7, 4096])
@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"], ids=["LF", "CRLF", "CR"])
async def test_any_line_break_and_any_chunking_read_the_same(newline: str, size: int) -> None:
    """LF, CRLF or CR line breaks, cut anywhere (a CRLF between two chunks too), give the same run."""
    call = function_call("echo", {"text": "é ü 工具"})
    data = sse_text(stream_events(response(call, message("fin")))).replace("\n", newline).encode()

    async def content() -> AsyncIterator[bytes]:
        for start in range(0, len(data), size):
            yield data[start : start + size]

    replies = [
        httpx.Response(200, headers={"content-type": "text/event-stream"}, content=content()),
        sse_reply(response(message("done"))),
    ]
    agent, _ = scripted_agent(replies, tools=[echo])
    result = await agent.run("go", stream=True)
    assert (result.output, result.tool_calls[0].output) == ("done", "é ü 工具")
