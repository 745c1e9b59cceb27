"""Bounded runs: run_timeout, and closing the agent while runs are in flight."""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import anyio.abc
import httpx
import pytest

from agent import (
    Agent,
    AgentClosedError,
    RunTimeoutError,
    UsageError,
    tool,
)
from agent.localmodel import AutoPolicy, Fault, LocalModelServer
from tests._support import (
    FAST_RETRY,
    assert_continuable,
    error_reply,
    function_call,
    message,
    response,
    scripted_agent,
)


@tool
async def hang() -> str:
    """Never finish."""
    await anyio.sleep_forever()
    return "never"


@pytest.mark.asyncio
async def test_run_timeout_cancels_a_hanging_tool_with_a_continuable_partial_result() -> None:
    """Past run_timeout the run raises RunTimeoutError; the hanging call is answered "cancelled"."""
    agent, _ = scripted_agent(
        [response(function_call("hang"))], tools=[hang], run_timeout=0.2, tool_timeout=None
    )
    with anyio.fail_after(5), pytest.raises(RunTimeoutError) as info:
        await agent.run("go")
    partial = info.value.partial_result
    assert partial is not None
    assert [r.kind for r in partial.tool_calls] == ["cancelled"]
    assert_continuable(partial.items)


@pytest.mark.asyncio
async def test_run_timeout_per_call_overrides_the_agents() -> None:
    """agent.run(..., run_timeout=) bounds that run although the agent has no run_timeout."""
    agent, _ = scripted_agent([response(function_call("hang"))], tools=[hang], tool_timeout=None)
    started = time.monotonic()
    with anyio.fail_after(5), pytest.raises(RunTimeoutError):
        await agent.run("go", run_timeout=0.1)
    assert time.monotonic() - started < 2


@pytest.mark.asyncio
async def test_run_timeout_covers_the_backoff_sleep() -> None:
    """A Retry-After longer than the run_timeout does not hold the run past it."""
    slow = error_reply(429, "slow down", "rate_limit_exceeded", **{"retry-after": "30"})
    agent, endpoint = scripted_agent([slow], run_timeout=0.2)
    with anyio.fail_after(5), pytest.raises(RunTimeoutError):
        await agent.run("go")
    assert len(endpoint.requests) == 1


@pytest.mark.asyncio
async def test_run_stream_raises_run_timeout_error_at_the_end_of_the_events() -> None:
    """run_stream(run_timeout=) ends the event stream with RunTimeoutError."""
    agent, _ = scripted_agent([response(function_call("hang"))], tools=[hang], tool_timeout=None)

    async def consume() -> None:
        async with agent.run_stream("go", run_timeout=0.1) as events:
            async for _ in events:
                pass

    with anyio.fail_after(5), pytest.raises(RunTimeoutError):
        await consume()


@asynccontextmanager
async def trickling_server() -> AsyncIterator[str]:
    """A server that answers with an event stream that sends ``: keepalive`` lines forever."""

    async def serve(client: anyio.abc.SocketStream) -> None:
        async with client:
            await client.receive()
            head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
            await client.send(head)
            while True:
                line = b": keepalive\n\n"
                await client.send(b"%x\r\n%s\r\n" % (len(line), line))
                await anyio.sleep(0.01)

    sock = socket.create_server(("127.0.0.1", 0))
    sock.setblocking(False)
    listener = await anyio.abc.SocketListener.from_socket(sock)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as group:
        group.start_soon(listener.serve, serve)
        yield f"http://127.0.0.1:{port}/v1"
        group.cancel_scope.cancel()


@pytest.mark.asyncio
async def test_endless_keepalive_stream_does_not_hold_a_run_past_run_timeout() -> None:
    """An SSE stream of comments forever (the read timeout never fires) ends at run_timeout."""
    async with trickling_server() as base_url:
        agent = Agent("m", base_url=base_url, api_key="k", retry=FAST_RETRY, run_timeout=0.3)
        async with agent:
            started = time.monotonic()
            with anyio.fail_after(5), pytest.raises(RunTimeoutError):
                await agent.run("go", stream=True)
    assert time.monotonic() - started < 2


@pytest.mark.asyncio
async def test_wait_for_admission_is_outside_the_run_timeout() -> None:
    """A run queued behind max_concurrent_runs longer than its run_timeout still runs."""
    release = anyio.Event()

    @tool
    async def hold() -> str:
        """Hold the only admission slot until released."""
        await release.wait()
        return "held"

    replies = [response(function_call("hold")), response(message("first")), response(message("second"))]
    agent, _ = scripted_agent(replies, tools=[hold], max_concurrent_runs=1)
    outputs: list[str] = []

    async def run(prompt: str, run_timeout: float | None) -> None:
        outputs.append((await agent.run(prompt, run_timeout=run_timeout)).output)

    async with anyio.create_task_group() as group:
        group.start_soon(run, "first", None)
        await anyio.sleep(0.05)
        group.start_soon(run, "second", 0.5)
        await anyio.sleep(1.0)  # the second run queues for twice its run_timeout
        release.set()
    assert outputs == ["first", "second"]


@pytest.mark.parametrize("value", [0, -1.0, float("nan")])
def test_impossible_run_timeout_is_refused(value: float) -> None:
    """A run_timeout that is not a positive number of seconds is a UsageError."""
    with pytest.raises(UsageError):
        Agent("m", run_timeout=value)


@pytest.mark.asyncio
async def test_closed_agent_refuses_new_runs_with_agent_closed_error() -> None:
    """After aclose() a run fails at once with AgentClosedError."""
    agent, endpoint = scripted_agent([])
    await agent.aclose()
    with pytest.raises(AgentClosedError):
        await agent.run("go")
    assert endpoint.requests == []


@pytest.mark.asyncio
async def test_closing_during_a_tool_fails_the_next_request_with_agent_closed_error() -> None:
    """A run whose tool is running when the agent closes fails at its next request, typed."""
    entered, release = anyio.Event(), anyio.Event()

    @tool
    async def wait() -> str:
        """Wait to be released."""
        entered.set()
        await release.wait()
        return "waited"

    async with LocalModelServer(AutoPolicy()) as server:
        agent = Agent("m", base_url=server.base_url, api_key="k", tools=[wait], retry=FAST_RETRY)
        failures: list[BaseException] = []

        async def run() -> None:
            try:
                await agent.run("go")
            except Exception as exc:
                failures.append(exc)

        async with anyio.create_task_group() as group:
            group.start_soon(run)
            with anyio.fail_after(5):
                await entered.wait()
            await agent.aclose()
            release.set()
    assert [type(f) for f in failures] == [AgentClosedError]
    partial = failures[0].partial_result if isinstance(failures[0], AgentClosedError) else None
    assert partial is not None
    assert [r.output for r in partial.tool_calls] == ["waited"]
    assert_continuable(partial.items)


@pytest.mark.asyncio
@pytest.mark.parametrize("stream", [False, True])
async def test_closing_during_a_request_fails_the_run_at_its_next_request(stream: bool) -> None:
    """A request in flight when the agent closes is finished; the run's next one is refused, typed."""

    @tool
    async def quick() -> str:
        """Answer at once."""
        return "quick"

    # The pool is the caller's here: what a pool does with a connection in use when it is
    # closed is the pool's concern (tests/test_pool.py); this is the agent's.
    async with (
        LocalModelServer(AutoPolicy(), faults=[Fault(delay=0.3)]) as server,
        httpx.AsyncClient() as client,
    ):
        agent = Agent("m", base_url=server.base_url, api_key="k", tools=[quick], http_client=client)
        failures: list[BaseException] = []

        async def run() -> None:
            try:
                await agent.run("go", stream=stream)
            except Exception as exc:
                failures.append(exc)

        async with anyio.create_task_group() as group:
            group.start_soon(run)
            await anyio.sleep(0.1)
            await agent.aclose()
        requests = len(server.requests)
    assert ([type(f) for f in failures], requests) == ([AgentClosedError], 1)


@pytest.mark.asyncio
async def test_a_closed_pool_mid_request_is_agent_closed_error_not_retried() -> None:
    """A pool that refuses work because it was closed (ClosedResourceError) ends the run typed."""
    agent, endpoint = scripted_agent([anyio.ClosedResourceError(), response(message("no"))])
    with pytest.raises(AgentClosedError):
        await agent.run("go")
    assert len(endpoint.requests) == 1


@pytest.mark.asyncio
async def test_a_closed_http_client_is_agent_closed_error() -> None:
    """httpx's RuntimeError for a closed client becomes AgentClosedError."""
    client = httpx.AsyncClient()
    await client.aclose()
    agent = Agent("m", base_url="http://127.0.0.1:9/v1", api_key="k", http_client=client)
    with pytest.raises(AgentClosedError):
        await agent.run("go")


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_run_timeout_under_trio(anyio_backend: str) -> None:
    """run_timeout cancels a hanging tool and raises RunTimeoutError under trio too."""
    agent, _ = scripted_agent([response(function_call("hang"))], tools=[hang], tool_timeout=None)
    with anyio.fail_after(5), pytest.raises(RunTimeoutError) as info:
        await agent.run("go", run_timeout=0.1)
    assert info.value.partial_result is not None
    assert_continuable(info.value.partial_result.items)


@pytest.mark.asyncio
async def test_runs_waiting_for_admission_fail_with_agent_closed_error() -> None:
    """A run queued behind max_concurrent_runs when the agent closes fails as it is admitted."""
    entered, release = anyio.Event(), anyio.Event()

    @tool
    async def hold() -> str:
        """Hold the only admission slot until released."""
        entered.set()
        await release.wait()
        return "held"

    agent, endpoint = scripted_agent([response(function_call("hold"))], tools=[hold], max_concurrent_runs=1)
    failures: list[type[BaseException]] = []

    async def run() -> None:
        try:
            await agent.run("go")
        except AgentClosedError as exc:
            failures.append(type(exc))

    async with anyio.create_task_group() as group:
        group.start_soon(run)
        await entered.wait()
        group.start_soon(run)
        await anyio.sleep(0.05)
        await agent.aclose()
        release.set()
    assert (failures, len(endpoint.requests)) == ([AgentClosedError, AgentClosedError], 1)
