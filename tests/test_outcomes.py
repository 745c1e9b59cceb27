"""Every tool call ends in exactly one outcome, sent to the model as a clear error when it fails."""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
import threading
import time
import traceback
import weakref
from typing import Any

import anyio
import pytest
import structlog
from pydantic_core import to_json

from agent import AgentError, ToolContext, ToolError, tool
from agent._cli import _error_document
from agent._result import ToolCallRecord
from agent.durable import ToolOutcome, result_from_json, result_to_json
from tests._support import capturing_logger, function_call, message, response, scripted_agent


class Unserialisable:
    pass


@tool
def divide(a: float, b: float) -> float:
    """Divide a by b."""
    return a / b


@tool
def leaky() -> str:
    """Fail with a message holding a secret."""
    raise RuntimeError("password=hunter2")


@tool
async def slow() -> str:
    """Never finish in time."""
    await anyio.sleep(10)
    return "late"


@tool
def returns_object() -> Unserialisable:
    """Return something that is not JSON."""
    return Unserialisable()


@tool
async def self_cancelling() -> str:
    """Raise a cancellation of its own (e.g. from a library it awaited)."""
    raise anyio.get_cancelled_exc_class()()


TOOLS = [divide, leaky, slow, returns_object]


async def run_one(call: dict[str, Any], **options: Any) -> tuple[ToolCallRecord, dict[str, Any]]:
    """Run one call through the loop; return its record and the error the model received."""
    options.setdefault("tools", TOOLS)
    agent, endpoint = scripted_agent([response(call), response(message("final"))], **options)
    result = await agent.run("go")
    assert result.output == "final"
    sent = [i for i in endpoint.requests[1]["input"] if i.get("type") == "function_call_output"]
    assert [i["call_id"] for i in sent] == [call["call_id"]]
    return result.tool_calls[0], json.loads(sent[0]["output"])


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("call", "kind", "message_part"),
    [
        (function_call("nope"), "unknown_tool", "available tools: divide, leaky, slow, returns_object"),
        (function_call("divide", '{"a": 1, "b":'), "invalid_arguments", "not valid JSON"),
        (
            function_call("divide", {"a": "one", "b": 2}),
            "invalid_arguments",
            "a: Input should be a valid number",
        ),
        (function_call("divide", {"a": 1}), "invalid_arguments", "b: Field required"),
        (function_call("divide", {"a": 1, "b": 0}), "tool_error", "failed with ZeroDivisionError"),
        (function_call("returns_object"), "tool_error", "cannot be sent as JSON"),
    ],
    ids=["unknown", "broken-json", "wrong-type", "missing", "exception", "unserialisable"],
)
async def test_bad_calls_become_error_outputs(call: dict[str, Any], kind: str, message_part: str) -> None:
    """Each bad call yields one error output of the right kind, and the run still finishes."""
    record, sent = await run_one(call)
    assert (record.kind, sent["error"]["type"]) == (kind, kind)
    assert message_part in sent["error"]["message"]
    assert "Traceback" not in sent["error"]["message"]


@pytest.mark.asyncio
async def test_exception_message_is_hidden_from_the_model_by_default() -> None:
    """An unexpected exception's message may hold secrets: the model sees only its type."""
    record, sent = await run_one(function_call("leaky"))
    assert sent["error"]["message"] == "tool 'leaky' failed with RuntimeError"
    assert record.error == "RuntimeError: password=hunter2"


@pytest.mark.asyncio
async def test_exception_message_can_be_exposed() -> None:
    """expose_tool_exceptions=True sends the message too."""
    _, sent = await run_one(function_call("leaky"), expose_tool_exceptions=True)
    assert sent["error"]["message"] == "tool 'leaky' failed with RuntimeError: password=hunter2"


@pytest.mark.asyncio
async def test_async_tool_timeout_is_reported() -> None:
    """A tool over its time limit is cancelled and reported as a timeout."""
    record, sent = await run_one(function_call("slow"), tool_timeout=0.05)
    assert (record.kind, sent["error"]["message"]) == (
        "timeout",
        "tool 'slow' did not finish within 0.05 seconds",
    )


@pytest.mark.asyncio
async def test_per_tool_timeout_wins_over_agent_timeout() -> None:
    """@tool(timeout=...) overrides the agent's tool_timeout."""
    quick = tool(slow.function, name="quick", timeout=0.01)
    record, _ = await run_one(function_call("quick"), tools=[quick], tool_timeout=30)
    assert record.kind == "timeout"


@pytest.mark.asyncio
async def test_sync_tool_timeout_moves_on_and_sets_cancel_flag() -> None:
    """A hanging sync tool times out; the run goes on and the tool sees ctx.cancelled."""
    saw_cancel = threading.Event()

    @tool
    def hang(ctx: ToolContext[None]) -> str:
        """Block until told to stop."""
        deadline = time.monotonic() + 5
        while not ctx.cancelled and time.monotonic() < deadline:
            time.sleep(0.005)
        if ctx.cancelled:
            saw_cancel.set()
        return "stopped"

    record, _ = await run_one(function_call("hang"), tools=[hang], tool_timeout=0.05)
    assert record.kind == "timeout"
    with anyio.fail_after(5):
        await anyio.to_thread.run_sync(saw_cancel.wait)


@pytest.mark.asyncio
async def test_tool_raising_its_own_cancellation_is_reported_as_cancelled() -> None:
    """A cancellation that does not come from the run is the call's outcome, not the run's end."""
    record, sent = await run_one(function_call("self_cancelling"), tools=[self_cancelling])
    assert (record.kind, sent["error"]["type"]) == ("cancelled", "cancelled")


@pytest.mark.asyncio
async def test_one_failing_call_does_not_affect_the_others() -> None:
    """In a parallel batch, a failure stays with its call; the rest succeed, in call order."""
    calls = [
        function_call("divide", {"a": 1, "b": 2}),
        function_call("divide", {"a": 1, "b": 0}),
        function_call("missing_tool"),
        function_call("divide", {"a": 9, "b": 3}),
    ]
    agent, endpoint = scripted_agent([response(*calls), response(message("ok"))], tools=TOOLS)
    result = await agent.run("go")
    assert [r.kind for r in result.tool_calls] == ["ok", "tool_error", "unknown_tool", "ok"]
    sent = [i["call_id"] for i in endpoint.requests[1]["input"] if i.get("type") == "function_call_output"]
    assert sent == [c["call_id"] for c in calls]


@pytest.mark.asyncio
async def test_records_carry_duration_and_turn() -> None:
    """Each record says how long the call took and in which turn."""
    record, _ = await run_one(function_call("divide", {"a": 1, "b": 4}))
    assert (record.output, record.turn, record.ok) == ("0.25", 1, True)
    assert 0 <= record.duration < 5


def test_run_sync_keeps_running_sync_tools_after_an_abandoned_thread() -> None:
    """A thread abandoned by a timeout in one run_sync does not block the next run's tools."""
    import anyio.to_thread

    started: list[int] = []
    release = threading.Event()

    @tool(timeout=0.05)
    def hang() -> str:
        """Block until released."""
        started.append(1)
        release.wait(5)
        return "late"

    replies = [response(function_call("hang")), response(message("ok"))] * 2
    agent, _ = scripted_agent(replies, tools=[hang], max_threads=1)
    kinds = [agent.run_sync("go").tool_calls[0].kind for _ in range(2)]
    release.set()
    assert (kinds, len(started)) == (["timeout", "timeout"], 2)
    assert anyio.to_thread is not None


def test_tool_limit_works_under_asyncio_then_trio() -> None:
    """A tool's max_concurrency limiter serves every event loop, not just the first."""

    @tool(max_concurrency=1)
    async def limited() -> str:
        """Limited."""
        await anyio.sleep(0)
        return "ok"

    async def once() -> list[str]:
        agent, _ = scripted_agent(
            [response(function_call("limited")), response(message("ok"))], tools=[limited]
        )
        return [r.output for r in (await agent.run("go")).tool_calls]

    assert anyio.run(once) == ["ok"]
    assert anyio.run(once, backend="trio") == ["ok"]


@pytest.mark.asyncio
async def test_waiting_for_a_worker_thread_does_not_count_against_the_timeout() -> None:
    """With one thread, the second call waits for it; its timeout starts when it runs."""

    @tool(timeout=0.5)
    def nap(n: int) -> int:
        """Sleep a little."""
        time.sleep(0.3)
        return n

    calls = [function_call("nap", {"n": 1}), function_call("nap", {"n": 2})]
    agent, _ = scripted_agent([response(*calls), response(message("ok"))], tools=[nap], max_threads=1)
    result = await agent.run("go")
    assert [r.kind for r in result.tool_calls] == ["ok", "ok"]


SCRIPT_WITH_A_HANGING_TOOL = """
import time
from agent import tool
from tests._support import function_call, message, response, scripted_agent

@tool(timeout=0.1)
def hang() -> str:
    \"\"\"Hang far longer than the test waits.\"\"\"
    time.sleep(60)
    return "late"

agent, _ = scripted_agent([response(function_call("hang")), response(message("moved on"))], tools=[hang])
print(agent.run_sync("go").output)
"""


def test_an_abandoned_sync_tool_does_not_keep_the_program_alive() -> None:
    """A timed-out sync tool runs on a daemon thread: the program exits when it is done."""
    import subprocess
    import sys

    from tests._support import REPO_ROOT

    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT_WITH_A_HANGING_TOOL],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert (done.returncode, done.stdout.strip()) == (0, "moved on")
    assert time.monotonic() - started < 20


class SecretiveError(Exception):
    """A tool's own exception type (so weak references to it are allowed)."""


@tool
def sync_fails() -> str:
    """Fail in a worker thread."""
    raise SecretiveError("password=hunter2")


@tool
async def async_fails() -> str:
    """Fail on the event loop."""
    raise SecretiveError("password=hunter2")


@pytest.mark.asyncio
@pytest.mark.parametrize("failing", [sync_fails, async_fails], ids=["sync", "async"])
async def test_the_tools_exception_is_on_its_record(failing: Any) -> None:
    """result.tool_calls[i].exception is what the tool raised, its traceback reaching the tool."""
    record, _ = await run_one(function_call(failing.name), tools=[failing])
    assert isinstance(record.exception, SecretiveError)
    frames = [frame.name for frame in traceback.extract_tb(record.exception.__traceback__)]
    assert frames[-1] == failing.name


@pytest.mark.asyncio
async def test_a_successful_record_has_no_exception() -> None:
    """A call that returned has ``exception`` None."""
    record, _ = await run_one(function_call("divide", {"a": 1, "b": 4}))
    assert record.exception is None


@pytest.mark.asyncio
async def test_a_tool_error_is_on_its_record_too() -> None:
    """A ToolError the tool raised is kept on the record beside the message the model read."""

    @tool
    def refuses() -> str:
        """Refuse."""
        raise ToolError("no")

    record, sent = await run_one(function_call("refuses"), tools=[refuses])
    assert (isinstance(record.exception, ToolError), sent["error"]["message"]) == (True, "no")


@pytest.mark.asyncio
async def test_the_exception_stays_out_of_equality_and_repr() -> None:
    """Two records alike but for their exception are equal, and the repr does not show it."""
    record, _ = await run_one(function_call("sync_fails"), tools=[sync_fails])
    assert dataclasses.replace(record, exception=None) == record
    assert "exception" not in repr(record)


@pytest.mark.asyncio
async def test_the_model_still_sees_only_the_exception_type() -> None:
    """Keeping the exception changes nothing the model reads."""
    _, sent = await run_one(function_call("sync_fails"), tools=[sync_fails])
    assert sent["error"]["message"] == "tool 'sync_fails' failed with SecretiveError"


@pytest.mark.asyncio
async def test_the_traceback_is_logged_at_debug_level() -> None:
    """A debug logger gets a ``tool.exception`` event with the formatted traceback."""
    logger, capture = capturing_logger()
    record, _ = await run_one(function_call("sync_fails"), tools=[sync_fails], logger=logger)
    [event] = [e for e in capture.entries if e["event"] == "tool.exception"]
    assert (event["log_level"], event["call_id"], event["tool"]) == ("debug", record.call_id, "sync_fails")
    assert event["traceback"].startswith("Traceback (most recent call last):")
    assert event["traceback"].endswith("SecretiveError: password=hunter2")
    assert 'in sync_fails\n    raise SecretiveError("password=hunter2")' in event["traceback"]


@pytest.mark.asyncio
async def test_no_traceback_is_logged_at_info_level() -> None:
    """At info level the log is as before: ``tool.end`` only, no traceback anywhere."""
    capture = structlog.testing.LogCapture()
    logger = structlog.wrap_logger(
        None, processors=[capture], wrapper_class=structlog.make_filtering_bound_logger(logging.INFO)
    )
    await run_one(function_call("sync_fails"), tools=[sync_fails], logger=logger)
    tool_events = [e for e in capture.entries if e["event"].startswith("tool.")]
    assert [e["event"] for e in tool_events] == ["tool.end"]
    assert "Traceback" not in repr(tool_events)


def test_an_outcomes_json_leaves_the_exception_out() -> None:
    """ToolOutcome.to_json has no exception; the outcome rebuilt from it has None."""
    outcome = ToolOutcome("{}", "tool_error", "ValueError: x", 0.5, ValueError("x"))
    data = json.loads(json.dumps(outcome.to_json()))
    assert (sorted(data), ToolOutcome.from_json(data).exception) == (
        ["duration", "error", "kind", "output"],
        None,
    )


@pytest.mark.asyncio
async def test_a_results_json_leaves_the_exception_out() -> None:
    """result_to_json stores no exception; the record rebuilt from it has None."""
    agent, _ = scripted_agent(
        [response(function_call("sync_fails")), response(message("final"))], tools=[sync_fails]
    )
    result = await agent.run("go")
    data = json.loads(json.dumps(result_to_json(result)))
    assert "exception" not in data["tool_calls"][0]
    assert result_from_json(data).tool_calls[0].exception is None


@pytest.mark.asyncio
@pytest.mark.parametrize("failing", [sync_fails, async_fails], ids=["sync", "async"])
async def test_the_kept_exception_makes_no_reference_cycle(failing: Any) -> None:
    """A tool's exception is freed with its record, without the garbage collector."""
    gc.collect()
    gc.disable()
    try:
        record, _ = await run_one(function_call(failing.name), tools=[failing])
        freed = weakref.ref(record.exception)
        del record
        assert freed() is None
    finally:
        gc.enable()


@pytest.mark.asyncio
async def test_the_cli_json_document_leaves_the_exception_out() -> None:
    """``agent run --json``'s error document serialises a partial result that holds exceptions."""
    agent, _ = scripted_agent([response(function_call("sync_fails"))] * 2, tools=[sync_fails], max_turns=1)
    with pytest.raises(AgentError) as info:
        await agent.run("go")
    document = json.loads(to_json(_error_document(info.value)))
    assert document["partial_result"]["tool_calls"][0]["kind"] == "tool_error"
    assert "exception" not in document["partial_result"]["tool_calls"][0]
