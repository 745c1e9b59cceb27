"""The agent loop: turns, feeding results back, concurrency, stopping, error outcomes."""

from __future__ import annotations

import json
import threading
import time
from functools import partial
from typing import Any

import anyio
import httpx
import pytest

from agent import (
    Agent,
    MaxTurnsExceeded,
    ProtocolError,
    ResponseFailedError,
    ToolContext,
    ToolError,
    UnansweredToolCallError,
    UsageError,
    tool,
)
from tests._support import assert_continuable, function_call, message, response, scripted_agent


@tool
async def echo(text: str) -> str:
    """Return the text."""
    return text


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def outputs_of(body: dict[str, Any]) -> list[tuple[str, str]]:
    return [(i["call_id"], i["output"]) for i in body["input"] if i.get("type") == "function_call_output"]


@pytest.mark.asyncio
async def test_answer_without_tools_ends_after_one_turn() -> None:
    """A response with only a message is the final answer."""
    agent, endpoint = scripted_agent([response(message("Hello!"))], tools=[echo])
    result = await agent.run("Hi")
    assert (result.output, result.turns, len(endpoint.requests)) == ("Hello!", 1, 1)


@pytest.mark.asyncio
async def test_first_request_carries_model_tools_and_options() -> None:
    """The request has model, input, tools with explicit strict, tool_choice and passthroughs."""
    agent, endpoint = scripted_agent(
        [response(message("ok"))],
        tools=[echo],
        instructions="Be brief.",
        metadata={"model_id": "32"},
        extra_body={"temperature": 0.2},
    )
    await agent.run("Hi")
    body = endpoint.requests[0]
    assert body["model"] == "gpt-4.1"
    assert body["input"] == [{"role": "user", "content": "Hi"}]
    assert body["tool_choice"] == "auto"
    assert body["parallel_tool_calls"] is True
    assert body["instructions"] == "Be brief."
    assert body["metadata"] == {"model_id": "32"}
    assert body["temperature"] == 0.2
    assert [(t["name"], t["strict"]) for t in body["tools"]] == [("echo", True)]


@pytest.mark.asyncio
async def test_tool_results_go_back_in_call_order_with_full_history() -> None:
    """Stateless mode resends input + every output item + one output per call, in call order."""
    calls = [function_call("add", {"a": 1, "b": 2}), function_call("echo", {"text": "x"})]
    agent, endpoint = scripted_agent([response(*calls), response(message("done"))], tools=[echo, add])
    result = await agent.run("go")
    follow_up = endpoint.requests[1]
    assert follow_up["input"][:3] == [{"role": "user", "content": "go"}, *calls]
    assert outputs_of(follow_up) == [(calls[0]["call_id"], "3"), (calls[1]["call_id"], "x")]
    assert [r.name for r in result.tool_calls] == ["add", "echo"]
    assert result.items == [*follow_up["input"], *endpoint_last_output(result)]


def endpoint_last_output(result: Any) -> list[dict[str, Any]]:
    output: list[dict[str, Any]] = result.last_response["output"]
    return output


@pytest.mark.asyncio
async def test_reasoning_items_are_replayed_verbatim() -> None:
    """Reasoning items (and unknown item types) go back exactly as received."""
    reasoning = {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "gAAA"}
    unknown = {"type": "future_item", "id": "x_1", "payload": {"a": [1, 2]}}
    call = function_call("echo", {"text": "hi"})
    agent, endpoint = scripted_agent(
        [response(reasoning, unknown, call), response(message("bye"))], tools=[echo]
    )
    endpoint.check_schema = False  # the unknown item type is, by design, not in the official schema
    await agent.run("go")
    assert endpoint.requests[1]["input"][1:4] == [reasoning, unknown, call]


@pytest.mark.asyncio
async def test_previous_response_id_mode_sends_only_new_outputs() -> None:
    """With use_previous_response_id the follow-up holds just the outputs and the response id."""
    call = function_call("echo", {"text": "hi"})
    first = response(call)
    agent, endpoint = scripted_agent(
        [first, response(message("bye"))], tools=[echo], use_previous_response_id=True
    )
    result = await agent.run("go")
    follow_up = endpoint.requests[1]
    assert follow_up["previous_response_id"] == first["id"]
    assert follow_up["input"] == [
        {"type": "function_call_output", "call_id": call["call_id"], "output": "hi"}
    ]
    assert "previous_response_id" not in endpoint.requests[0]
    assert len(result.items) == 4


@pytest.mark.asyncio
async def test_usage_is_summed_over_turns() -> None:
    """RunResult.usage adds every response's usage, and counts the requests."""
    agent, _ = scripted_agent(
        [response(function_call("echo", {"text": "a"})), response(message("b"))], tools=[echo]
    )
    usage = (await agent.run("go")).usage
    assert (usage.requests, usage.input_tokens, usage.output_tokens, usage.total_tokens) == (2, 20, 10, 30)
    assert (usage.cached_tokens, usage.reasoning_tokens) == (4, 2)


@pytest.mark.asyncio
async def test_response_ids_and_turns_are_recorded() -> None:
    """Each response's id is kept in order."""
    first, second = response(function_call("echo", {"text": "a"})), response(message("b"))
    agent, _ = scripted_agent([first, second], tools=[echo])
    result = await agent.run("go")
    assert (result.response_ids, result.turns) == ((first["id"], second["id"]), 2)


@pytest.mark.asyncio
async def test_conversation_continues_from_result_items() -> None:
    """``result.items + [next message]`` is a valid input for the next run."""
    agent, endpoint = scripted_agent([response(message("one")), response(message("two"))])
    first = await agent.run("first")
    second = await agent.run([*first.items, {"role": "user", "content": "second"}])
    assert second.output == "two"
    assert endpoint.requests[1]["input"][-1] == {"role": "user", "content": "second"}
    assert endpoint.requests[1]["input"][1]["type"] == "message"


@pytest.mark.asyncio
async def test_failed_response_raises_typed_error_with_partial_result() -> None:
    """status "failed" raises ResponseFailedError with the server's code and message."""
    failed = response(status="failed", error={"code": "server_error", "message": "The model crashed"})
    agent, _ = scripted_agent([failed], max_retries=0)
    with pytest.raises(ResponseFailedError) as info:
        await agent.run("go")
    assert (info.value.code, info.value.message) == ("server_error", "The model crashed")
    assert info.value.partial_result is not None
    assert info.value.partial_result.turns == 1


@pytest.mark.asyncio
async def test_incomplete_response_ends_run_with_reason() -> None:
    """status "incomplete" ends the run normally, with the reason exposed."""
    cut = response(
        message("Once upon a"), status="incomplete", incomplete_details={"reason": "max_output_tokens"}
    )
    agent, _ = scripted_agent([cut])
    result = await agent.run("story")
    assert (result.status, result.incomplete_reason, result.output) == (
        "incomplete",
        "max_output_tokens",
        "Once upon a",
    )


@pytest.mark.asyncio
async def test_max_turns_raises_with_partial_result() -> None:
    """A model that never stops calling tools hits MaxTurnsExceeded, which carries the work done."""
    replies = [response(function_call("echo", {"text": str(i)})) for i in range(3)]
    agent, endpoint = scripted_agent(replies, tools=[echo], max_turns=3)
    with pytest.raises(MaxTurnsExceeded) as info:
        await agent.run("loop")
    partial = info.value.partial_result
    assert partial is not None
    assert ([r.output for r in partial.tool_calls], len(endpoint.requests)) == (["0", "1", "2"], 3)


@pytest.mark.asyncio
async def test_unanswered_call_in_user_input_is_refused_before_sending() -> None:
    """A function_call without output in the input raises before any request is made."""
    agent, endpoint = scripted_agent([])
    dangling = function_call("echo", {"text": "x"})
    with pytest.raises(UnansweredToolCallError, match=dangling["call_id"]):
        await agent.run([{"role": "user", "content": "hi"}, dangling])
    assert endpoint.requests == []


@pytest.mark.asyncio
async def test_four_parallel_async_tools_run_at_the_same_time() -> None:
    """All calls of one response start before any finishes (they would deadlock if sequential)."""
    started = 0
    all_started = anyio.Event()

    @tool
    async def wait_for_all(n: int) -> int:
        """Wait until all four calls have started."""
        nonlocal started
        started += 1
        if started == 4:
            all_started.set()
        await all_started.wait()
        return n

    calls = [function_call("wait_for_all", {"n": i}) for i in range(4)]
    agent, endpoint = scripted_agent([response(*calls), response(message("ok"))], tools=[wait_for_all])
    with anyio.fail_after(5):
        await agent.run("go")
    assert [o for _, o in outputs_of(endpoint.requests[1])] == ["0", "1", "2", "3"]


@pytest.mark.asyncio
async def test_sync_tools_run_in_parallel_threads_and_loop_stays_responsive() -> None:
    """Sync tools run in worker threads at once, and the event loop keeps ticking meanwhile."""
    barrier = threading.Barrier(4, timeout=5)

    @tool
    def blocking(n: int) -> int:
        """Block until all four threads arrive."""
        barrier.wait()
        time.sleep(0.05)
        return n

    ticks = 0

    async def heartbeat() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await anyio.sleep(0.005)

    calls = [function_call("blocking", {"n": i}) for i in range(4)]
    agent, _ = scripted_agent([response(*calls), response(message("ok"))], tools=[blocking])
    async with anyio.create_task_group() as group:
        group.start_soon(heartbeat)
        result = await agent.run("go")
        group.cancel_scope.cancel()
    assert [r.kind for r in result.tool_calls] == ["ok"] * 4
    assert ticks >= 3


@pytest.mark.asyncio
async def test_per_tool_limit_caps_concurrent_calls() -> None:
    """A tool with max_concurrency=2 never runs more than two calls at once."""
    running, peak = 0, 0

    @tool(max_concurrency=2)
    async def db_query(n: int) -> int:
        """Pretend to query a database."""
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await anyio.sleep(0.01)
        running -= 1
        return n

    calls = [function_call("db_query", {"n": i}) for i in range(8)]
    agent, _ = scripted_agent([response(*calls), response(message("ok"))], tools=[db_query])
    await agent.run("go")
    assert peak == 2


@pytest.mark.asyncio
async def test_run_wide_limit_caps_concurrent_calls() -> None:
    """max_concurrency bounds the calls of one run running at once."""
    running, peak = 0, 0

    @tool
    async def work(n: int) -> int:
        """Do some work."""
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await anyio.sleep(0.01)
        running -= 1
        return n

    calls = [function_call("work", {"n": i}) for i in range(10)]
    agent, _ = scripted_agent([response(*calls), response(message("ok"))], tools=[work], max_concurrency=3)
    await agent.run("go")
    assert peak == 3


@pytest.mark.asyncio
async def test_cancelling_run_cancels_running_tools() -> None:
    """Cancelling run() cancels the tool calls in flight."""
    entered, cancelled = anyio.Event(), anyio.Event()

    @tool
    async def forever() -> str:
        """Never finish."""
        entered.set()
        try:
            await anyio.sleep_forever()
        finally:
            cancelled.set()
        return "unreachable"

    agent, _ = scripted_agent([response(function_call("forever"))], tools=[forever])
    async with anyio.create_task_group() as group:
        group.start_soon(agent.run, "go")
        await entered.wait()
        group.cancel_scope.cancel()
    assert cancelled.is_set()


@pytest.mark.asyncio
async def test_tool_context_is_injected_and_not_in_schema() -> None:
    """A ToolContext parameter gets the call id, tool name and deps; the model never sees it."""
    seen: list[tuple[str, str, Any]] = []

    @tool
    async def whoami(ctx: ToolContext[dict[str, str]], greeting: str) -> str:
        """Greet the current user."""
        seen.append((ctx.call_id, ctx.tool_name, ctx.deps))
        return f"{greeting}, {ctx.deps['user']}"

    call = function_call("whoami", {"greeting": "Hi"})
    agent, _ = scripted_agent([response(call), response(message("ok"))], tools=[whoami])
    result = await agent.run("go", deps={"user": "ada"})
    assert seen == [(call["call_id"], "whoami", {"user": "ada"})]
    assert result.tool_calls[0].output == "Hi, ada"
    assert list(whoami.parameters["properties"]) == ["greeting"]


@pytest.mark.asyncio
async def test_non_string_results_are_sent_as_json() -> None:
    """A dict (or model, list, number) result reaches the model as JSON text."""

    @tool
    def facts() -> dict[str, Any]:
        """Some facts."""
        return {"n": 1, "ok": True, "items": ["a"]}

    agent, _ = scripted_agent([response(function_call("facts")), response(message("ok"))], tools=[facts])
    result = await agent.run("go")
    assert json.loads(result.tool_calls[0].output) == {"n": 1, "ok": True, "items": ["a"]}


@pytest.mark.asyncio
async def test_closed_agent_refuses_runs() -> None:
    """After aclose() (or the end of ``async with``) run() raises UsageError."""
    agent, _ = scripted_agent([])
    async with agent:
        pass
    with pytest.raises(UsageError):
        await agent.run("go")


def test_run_sync_runs_the_loop_in_a_script() -> None:
    """run_sync() drives a whole run without an event loop of the caller's."""
    agent, _ = scripted_agent(
        [response(function_call("add", {"a": 2, "b": 3})), response(message("5"))], tools=[add]
    )
    result = agent.run_sync("2+3?")
    assert (result.output, result.tool_calls[0].output) == ("5", "5")


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_loop_runs_under_trio(anyio_backend: str) -> None:
    """The whole loop, with async and sync tools at once, runs under trio."""
    calls = [function_call("echo", {"text": "t"}), function_call("add", {"a": 1, "b": 1})]
    agent, _ = scripted_agent([response(*calls), response(message("trio ok"))], tools=[echo, add])
    async with agent:
        result = await agent.run("go")
    assert (result.output, [r.output for r in result.tool_calls]) == ("trio ok", ["t", "2"])


def test_agent_repr_and_errors_hide_api_key() -> None:
    """The API key never shows in the agent's repr."""
    agent = Agent("gpt-4.1", api_key="sk-very-secret")
    assert "sk-very-secret" not in repr(agent)
    assert "sk-very-secret" not in repr(vars(agent))


@pytest.mark.asyncio
async def test_tool_error_message_reaches_the_model() -> None:
    """A ToolError's message is the model-facing error text."""

    @tool
    def lookup(city: str) -> str:
        """Look a city up."""
        raise ToolError(f"no city named {city!r}; did you mean 'Paris'?")

    agent, _ = scripted_agent(
        [response(function_call("lookup", {"city": "Pariss"})), response(message("ok"))], tools=[lookup]
    )
    record = (await agent.run("go")).tool_calls[0]
    assert record.kind == "tool_error"
    assert json.loads(record.output) == {
        "error": {"type": "tool_error", "message": "no city named 'Pariss'; did you mean 'Paris'?"}
    }


@pytest.mark.asyncio
async def test_incomplete_response_with_calls_answers_every_call() -> None:
    """Calls of an incomplete response are not run, but each gets an output: items continue."""
    cut = response(
        function_call("echo", {"text": "x"}),
        status="incomplete",
        incomplete_details={"reason": "max_output_tokens"},
    )
    agent, _ = scripted_agent([cut, response(message("continued"))], tools=[echo])
    result = await agent.run("go")
    assert (result.status, [r.kind for r in result.tool_calls]) == ("incomplete", ["cancelled"])
    follow = await agent.run([*result.items, {"role": "user", "content": "go on"}])
    assert follow.output == "continued"


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "hook_name", ["on_run_start", "on_model_response", "on_tool_start", "on_tool_end", "on_run_end"]
)
async def test_a_failing_hook_ends_the_run_with_hook_error(hook_name: str) -> None:
    """Whichever hook raises, the run ends with HookError (cause attached), not a raw group."""
    from agent import HookError, Hooks

    def boom(event: object) -> None:
        raise ValueError("hook failed")

    agent, _ = scripted_agent(
        [response(function_call("echo", {"text": "x"})), response(message("ok"))], tools=[echo]
    )
    with pytest.raises(HookError) as info:
        await agent.run("go", hooks=Hooks(**{hook_name: boom}))
    assert isinstance(info.value.__cause__, ValueError)
    assert info.value.partial_result is not None


@pytest.mark.asyncio
async def test_max_concurrent_runs_admits_runs_gradually() -> None:
    """With max_concurrent_runs=2, ten runs started together never have more than two in flight."""
    from agent import Hooks

    in_flight, peak = 0, 0

    def started(event: object) -> None:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)

    def finished(event: object) -> None:
        nonlocal in_flight
        in_flight -= 1

    @tool
    async def pause() -> str:
        """Yield to the other runs."""
        await anyio.sleep(0.01)
        return "ok"

    replies = [r for _ in range(10) for r in (response(function_call("pause")), response(message("done")))]
    agent, _ = scripted_agent(replies, tools=[pause], max_concurrent_runs=2)
    hooks = Hooks(on_run_start=started, on_run_end=finished)
    async with anyio.create_task_group() as group:
        for _ in range(10):
            group.start_soon(partial(agent.run, "go", hooks=hooks))
    assert (peak, in_flight) == (2, 0)


@pytest.mark.parametrize(
    "options",
    [
        {"max_turns": 0},
        {"max_concurrency": 0},
        {"max_threads": 0},
        {"max_concurrent_runs": 0},
        {"max_retries": -1},
    ],
)
def test_impossible_limits_are_refused(options: dict[str, int]) -> None:
    """Limits that could never let a run finish are a UsageError at construction."""
    with pytest.raises(UsageError):
        Agent("m", **options)  # type: ignore[arg-type]


def streamed_failure(body: dict[str, Any], code: str) -> Any:
    """``body`` streamed as the API does, but ending in an ``error`` event and response.failed."""
    from tests._support import sse_reply, stream_events

    failed = {**body, "status": "failed", "error": {"code": code, "message": f"failed: {code}"}}
    events = stream_events(body)[:-1]
    events.append({"type": "error", "sequence_number": 98, "code": code, "message": f"failed: {code}"})
    events.append({"type": "response.failed", "sequence_number": 99, "response": failed})
    return sse_reply(events)


@pytest.mark.asyncio
async def test_failed_streamed_response_leaves_a_continuable_partial_result() -> None:
    """Defect 7: a streamed response that fails after its eager call ran can be continued."""
    call = function_call("echo", {"text": "ran"})
    failing = streamed_failure(response(call, message("more")), "invalid_prompt")
    agent, endpoint = scripted_agent([failing, response(message("continued"))], tools=[echo])
    with pytest.raises(ResponseFailedError) as info:
        await agent.run("go", stream=True)
    partial = info.value.partial_result
    assert partial is not None
    assert [(r.call_id, r.kind, r.output) for r in partial.tool_calls] == [(call["call_id"], "ok", "ran")]
    assert_continuable(partial.items)
    follow = await agent.run([*partial.items, {"role": "user", "content": "again"}])
    assert (follow.output, outputs_of(endpoint.requests[1])) == ("continued", [(call["call_id"], "ran")])


@pytest.mark.asyncio
async def test_failed_response_answers_its_calls_cancelled() -> None:
    """Defect 7: a failed (non-streamed) response's calls are answered "cancelled" in partial_result."""
    calls = [function_call("echo", {"text": "a"}), function_call("add", {"a": 1, "b": 2})]
    failed = response(*calls, status="failed", error={"code": "invalid_prompt", "message": "no"})
    agent, _ = scripted_agent([failed], tools=[echo, add])
    with pytest.raises(ResponseFailedError) as info:
        await agent.run("go")
    partial = info.value.partial_result
    assert partial is not None
    assert [r.kind for r in partial.tool_calls] == ["cancelled", "cancelled"]
    assert_continuable(partial.items)


@pytest.mark.asyncio
async def test_stream_cut_after_a_call_started_answers_the_call_that_ran() -> None:
    """Defect 7: a stream cut with no terminal event keeps the call that ran, with its output."""
    from tests._support import sse_text, stream_events

    body = response(function_call("echo", {"text": "ran"}), message("more"))
    events = stream_events(body)
    cut = next(i for i, e in enumerate(events) if e["type"] == "response.output_item.done") + 1
    reply = httpx.Response(200, headers={"content-type": "text/event-stream"}, text=sse_text(events[:cut]))
    agent, _ = scripted_agent([reply], tools=[echo])
    with pytest.raises(ProtocolError) as info:
        await agent.run("go", stream=True)
    partial = info.value.partial_result
    assert partial is not None
    assert [(r.kind, r.output) for r in partial.tool_calls] == [("ok", "ran")]
    assert_continuable(partial.items)
    assert [i.get("type") for i in partial.items][1:] == ["function_call", "function_call_output"]


@pytest.mark.asyncio
async def test_hook_error_in_a_call_leaves_every_call_answered() -> None:
    """A HookError raised at a call's start ends the run, every call answered in partial_result."""
    from agent import HookError, Hooks

    def refuse(event: Any) -> None:
        if event.name == "add":
            raise ValueError("no adding")

    calls = [function_call("echo", {"text": "a"}), function_call("add", {"a": 1, "b": 2})]
    agent, _ = scripted_agent([response(*calls)], tools=[echo, add])
    with pytest.raises(HookError) as info:
        await agent.run("go", hooks=Hooks(on_tool_start=refuse))
    partial = info.value.partial_result
    assert partial is not None
    assert [r.call_id for r in partial.tool_calls] == [c["call_id"] for c in calls]
    assert_continuable(partial.items)


@pytest.mark.asyncio
async def test_duplicate_call_ids_are_answered_once() -> None:
    """Defect 10: a call id repeated in one response runs once and is replayed and answered once."""
    call = function_call("echo", {"text": "once"})
    agent, endpoint = scripted_agent([response(call, dict(call)), response(message("ok"))], tools=[echo])
    result = await agent.run("go")
    follow = endpoint.requests[1]["input"]
    assert [i.get("type", "message") for i in follow] == ["message", "function_call", "function_call_output"]
    assert [r.output for r in result.tool_calls] == ["once"]


@pytest.mark.asyncio
async def test_disagreeing_duplicate_call_ids_end_the_turn_with_protocol_error() -> None:
    """Defect 10: one call id with two different argument strings is a ProtocolError; nothing runs."""
    first = function_call("echo", {"text": "a"})
    second = {**first, "arguments": json.dumps({"text": "b"})}
    agent, _ = scripted_agent([response(first, second)], tools=[echo])
    with pytest.raises(ProtocolError, match=first["call_id"]) as info:
        await agent.run("go")
    partial = info.value.partial_result
    assert partial is not None
    assert [r.kind for r in partial.tool_calls] == ["cancelled"]
    assert_continuable(partial.items)


@pytest.mark.asyncio
@pytest.mark.parametrize("stream", [False, True])
async def test_failed_response_with_server_error_is_retried(stream: bool) -> None:
    """Defect 9: a response.failed with code server_error is transient, streamed or not."""
    from tests._support import sse_reply

    failed = response(status="failed", error={"code": "server_error", "message": "boom"})
    first = streamed_failure(failed, "server_error") if stream else failed
    good = response(message("fine"))
    agent, endpoint = scripted_agent([first, sse_reply(good) if stream else good])
    result = await agent.run("go", stream=stream)
    assert (result.output, len(endpoint.requests)) == ("fine", 2)


@pytest.mark.asyncio
async def test_failed_response_past_the_retries_stays_in_the_partial_result() -> None:
    """Defect 9: when the retries run out the last failed response is kept in partial_result."""
    failed = [response(status="failed", error={"code": "server_error", "message": "x"}) for _ in range(3)]
    agent, endpoint = scripted_agent(failed, max_retries=2)
    with pytest.raises(ResponseFailedError) as info:
        await agent.run("go")
    partial = info.value.partial_result
    assert partial is not None
    assert (len(endpoint.requests), partial.response_ids) == (3, (failed[2]["id"],))


@pytest.mark.asyncio
async def test_failed_streamed_response_is_not_retried_once_a_call_started() -> None:
    """Defect 9: a transient failure after an eager call started is not sent again (no call runs twice)."""
    failing = streamed_failure(response(function_call("echo", {"text": "ran"})), "server_error")
    agent, endpoint = scripted_agent([failing, response(message("never"))], tools=[echo])
    with pytest.raises(ResponseFailedError) as info:
        await agent.run("go", stream=True)
    assert (len(endpoint.requests), info.value.transient) == (1, True)


@pytest.mark.asyncio
async def test_hook_error_in_a_streamed_call_leaves_every_call_answered() -> None:
    """A HookError from an eager call's start, mid-stream, still leaves partial_result continuable."""
    from agent import HookError, Hooks
    from tests._support import sse_reply

    def refuse(event: Any) -> None:
        raise ValueError("no tools today")

    body = response(function_call("echo", {"text": "a"}), function_call("add", {"a": 1, "b": 2}))
    agent, _ = scripted_agent([sse_reply(body)], tools=[echo, add])
    with pytest.raises(HookError) as info:
        await agent.run("go", stream=True, hooks=Hooks(on_tool_start=refuse))
    partial = info.value.partial_result
    assert partial is not None
    assert len(partial.tool_calls) >= 1
    assert_continuable(partial.items)
