"""The seam for one tool call under hostile input: one outcome per call, never an exception."""

from __future__ import annotations

import json
import threading
from typing import Any

import anyio
import pytest
from pydantic import BaseModel, field_validator

from agent import HookError, Hooks, Limits, ToolContext, ToolError, tool
from agent._batch import CallBatch, TurnScope
from agent._events import RunEvent, ToolCallFinished, ToolCallStarted, dispatch_to_hooks
from agent._execution import ExecutionSettings, ToolEnvironment
from agent._inprocess import InProcessEngine
from agent._logging import silent_logger
from agent._registry import ToolRegistry
from agent._result import ToolCallRecord
from agent._threads import LoopLocalLimiter
from agent._wire import FunctionCall
from tests._support import function_call, message, response, scripted_agent, sse_reply


class Strict(BaseModel):
    """A model whose validator breaks on some input, the way real validators do."""

    key: str

    @field_validator("key")
    @classmethod
    def lookup(cls, value: str) -> str:
        table = {"a": "A"}
        if value == "type":
            raise TypeError("a validator that was not written for this")
        if value == "assert":
            assert value != "assert", "assertion in a validator"
        if value == "deep":
            return lookup_forever(value)
        return table[value]  # KeyError for anything else


def lookup_forever(value: str) -> str:
    return lookup_forever(value)


@tool
def echo(text: str = "", number: float = 0) -> str:
    """Echo."""
    return text


@tool
def validated(item: Strict) -> str:
    """Take a model with a fragile validator."""
    return item.key


@tool(parameters={"type": "object", "properties": {"n": {"type": "number", "multipleOf": 0.01}}})
def schema_tool(**kwargs: Any) -> str:
    """Explicit schema."""
    return json.dumps(kwargs)


@tool
def nested(value: Any) -> str:
    """Accept anything."""
    return "ok"


class BadStr(Exception):
    def __str__(self) -> str:
        raise RuntimeError("str() of this exception fails")


class BadJSON:
    @property
    def boom(self) -> int:
        raise KeyError("boom")


@tool
def raises_bad_str() -> str:
    """Raise an exception whose str() raises."""
    raise BadStr


@tool
def tool_error_bad_str() -> str:
    """Raise a ToolError holding a lone surrogate."""
    raise ToolError("bad \ud800 text")


@tool
def returns_surrogate() -> str:
    """Return text with a lone surrogate."""
    return "half \ud800 a pair"


@tool
def returns_cycle() -> list[Any]:
    """Return a list that holds itself."""
    cycle: list[Any] = []
    cycle.append(cycle)
    return cycle


TOOLS = [
    echo,
    validated,
    schema_tool,
    nested,
    raises_bad_str,
    tool_error_bad_str,
    returns_surrogate,
    returns_cycle,
]


def make_scope(
    tools: list[Any] = TOOLS,
    *,
    limits: Limits | None = None,
    emit: Any = None,
    max_threads: int = 8,
    timeout: float | None = 5,
    expose: bool = False,
) -> TurnScope:
    """Turn 1 of a run of the in-process engine, with no HTTP client (only tools run)."""
    settings = ExecutionSettings(
        tools=ToolRegistry(tools),
        tool_timeout=timeout,
        thread_limiter=LoopLocalLimiter(max_threads),
        expose_exception_messages=expose,
        limits=limits or Limits(),
    )

    async def no_events(event: RunEvent) -> None:
        pass

    emit = emit or no_events
    log = silent_logger()
    environment = ToolEnvironment(settings, None, emit, log, "run-1")
    engine = InProcessEngine(None, environment, emit, log, settings.limits)  # type: ignore[arg-type]  # no requests
    return TurnScope(engine, 1, anyio.CapacityLimiter(32), settings.tools, settings.limits, emit)


async def execute_call(call: FunctionCall, scope: TurnScope) -> ToolCallRecord:
    """One call through a turn's real path (its events, the run-wide limit, the engine)."""
    batches: list[CallBatch] = []
    try:
        async with anyio.create_task_group() as group:
            batches.append(CallBatch(group, scope))
            batches[0].start(call)
    except ExceptionGroup as errors:  # a hook's HookError, raised from the call's task
        raise errors.exceptions[0] from None
    (record,) = await batches[0].settle([call], "the test ended", emit_finished=False)
    return record


def call_of(name: str, arguments: str, call_id: str = "call_1") -> FunctionCall:
    return FunctionCall(type="function_call", call_id=call_id, name=name, arguments=arguments)


async def outcome(name: str, arguments: str, **scope: Any) -> tuple[ToolCallRecord, dict[str, Any]]:
    """Run one call through execute_call; return its record and the error the model reads."""
    record = await execute_call(call_of(name, arguments), make_scope(**scope))
    record.output.encode()  # the output must be sendable: no lone surrogates
    sent = json.loads(record.output) if record.kind != "ok" else {}
    return record, sent


DEEP = "[" * 5000 + "]" * 5000
HOSTILE_ARGUMENTS = {
    "nested-arrays-5000": ("nested", '{"value": ' + DEEP + "}", "nested more than 200 levels"),
    "nested-objects-5000": ("nested", '{"value": ' + '{"a": ' * 5000 + "1" + "}" * 5000 + "}", "nested"),
    "nested-unclosed-100000": ("nested", '{"value": ' + "[" * 100_000, "nested"),
    "nested-past-limit": ("nested", '{"value": ' + "[" * 300 + "]" * 300 + "}", "nested more than 200"),
    "nested-array-top": ("echo", DEEP, "nested"),
    "nan": ("echo", '{"number": NaN}', "NaN is not a JSON number"),
    "infinity": ("echo", '{"number": -Infinity}', "Infinity is not a JSON number"),
    "overflowing-float": ("echo", '{"number": 1e999}', "1e999 is not a finite number"),
    "huge-int": ("echo", '{"number": ' + "9" * 100_000 + "}", "digits"),
    "raw-control-character": ("echo", '{"text": "a\x00b"}', "not valid JSON"),
    "lone-surrogate-key": ("echo", '{"\ud800": 1}', "invalid arguments"),
    "not-an-object": ("echo", "[1, 2]", "must be a JSON object"),
    "validator-type-error": ("validated", '{"item": {"key": "type"}}', "validator raised TypeError"),
    "validator-key-error": ("validated", '{"item": {"key": "zzz"}}', "validator raised KeyError"),
    "validator-assertion": ("validated", '{"item": {"key": "assert"}}', "assertion in a validator"),
    "validator-recursion": ("validated", '{"item": {"key": "deep"}}', "validator raised RecursionError"),
    "schema-huge-multiple": ("schema_tool", '{"n": 1e308}', "invalid arguments"),
    "many-errors": ("schema_tool", json.dumps({"n": "x" * 100_000}), "invalid arguments"),
}


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("name", "arguments", "message_part"), HOSTILE_ARGUMENTS.values(), ids=HOSTILE_ARGUMENTS
)
async def test_hostile_arguments_end_as_invalid_arguments(
    name: str, arguments: str, message_part: str
) -> None:
    """Whatever the model writes, the call ends as invalid_arguments with a message it can act on."""
    record, sent = await outcome(name, arguments)
    assert (record.kind, sent["error"]["type"]) == ("invalid_arguments", "invalid_arguments")
    assert message_part in sent["error"]["message"]
    assert len(sent["error"]["message"]) < 2_000


@pytest.mark.asyncio
async def test_validator_exception_message_is_kept_from_the_model() -> None:
    """An unexpected exception in a validator may hold secrets: only its type reaches the model."""
    record, sent = await outcome("validated", '{"item": {"key": "type"}}')
    assert "not written for this" not in sent["error"]["message"]
    assert "not written for this" in str(record.error)


@pytest.mark.asyncio
async def test_arguments_over_the_byte_limit_are_refused_before_parsing() -> None:
    """max_argument_bytes counts UTF-8 bytes; a bigger arguments string is not parsed."""
    arguments = json.dumps({"text": "é" * 60}, ensure_ascii=False)  # 72 characters, 132 bytes
    record, sent = await outcome("echo", arguments, limits=Limits(max_argument_bytes=100))
    assert record.kind == "invalid_arguments"
    assert "arguments are 132 bytes, more than the limit of 100" in sent["error"]["message"]


@pytest.mark.asyncio
async def test_arguments_at_the_byte_limit_are_accepted() -> None:
    """The limit is inclusive."""
    arguments = json.dumps({"text": "x" * 88})
    assert len(arguments.encode()) == 100
    record, _ = await outcome("echo", arguments, limits=Limits(max_argument_bytes=100))
    assert (record.kind, record.output) == ("ok", "x" * 88)


@pytest.mark.asyncio
@pytest.mark.parametrize(("depth", "kind"), [(3, "ok"), (4, "invalid_arguments")])
async def test_argument_depth_limit(depth: int, kind: str) -> None:
    """max_json_depth counts the arguments object itself: {"value": [[]]} is 3 deep."""
    arguments = '{"value": ' + "[" * (depth - 1) + "]" * (depth - 1) + "}"
    record, _ = await outcome("nested", arguments, limits=Limits(max_json_depth=3))
    assert record.kind == kind


@pytest.mark.asyncio
async def test_depth_limit_message_names_the_limit() -> None:
    """The model learns the limit it went over."""
    _, sent = await outcome("nested", '{"value": [[[[]]]]}', limits=Limits(max_json_depth=3))
    assert "nested more than 3 levels deep" in sent["error"]["message"]


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "name",
    ["", "\ud800", "tool\x00", "é" * 10_000, "echo\n"],
    ids=["empty", "surrogate", "nul", "long", "newline"],
)
async def test_odd_tool_names_end_as_unknown_tool(name: str) -> None:
    """A name no tool has, however odd, is an unknown_tool outcome with a sendable message."""
    record, sent = await outcome(name, "{}")
    assert (record.kind, sent["error"]["type"]) == ("unknown_tool", "unknown_tool")
    assert len(sent["error"]["message"]) < 2_000


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("name", "kind", "message_part"),
    [
        ("raises_bad_str", "tool_error", "failed with BadStr"),
        ("tool_error_bad_str", "tool_error", "bad \ufffd text"),
        ("returns_cycle", "tool_error", "cannot be sent as JSON"),
    ],
)
async def test_tool_faults_end_as_tool_error(name: str, kind: str, message_part: str) -> None:
    """A tool's own faults (even in str() or in serialising its value) are its tool_error."""
    record, sent = await outcome(name, "{}")
    assert (record.kind, sent["error"]["type"]) == (kind, kind)
    assert message_part in sent["error"]["message"]


@pytest.mark.asyncio
async def test_exposed_exception_whose_str_raises_still_gives_an_outcome() -> None:
    """expose_tool_exceptions with a broken __str__: the type is sent, nothing raises."""
    record = await execute_call(call_of("raises_bad_str", "{}"), make_scope(expose=True))
    assert record.kind == "tool_error"
    assert "BadStr" in json.loads(record.output)["error"]["message"]


@pytest.mark.asyncio
async def test_returned_lone_surrogates_are_replaced() -> None:
    """Text that cannot be encoded as UTF-8 is sent with U+FFFD in place of each lone surrogate."""
    record, _ = await outcome("returns_surrogate", "{}")
    assert (record.kind, record.output) == ("ok", "half \ufffd a pair")


async def failing_hook(event: Any) -> None:
    raise RuntimeError("hook failed")


@pytest.mark.asyncio
@pytest.mark.parametrize("hook", ["on_tool_start", "on_tool_end"])
async def test_hook_error_is_the_only_exception_execute_call_lets_out(hook: str) -> None:
    """A hook raising at a call's start or end ends the run, as HookError (the documented contract)."""
    hooks = Hooks(**{hook: failing_hook})

    async def emit(event: RunEvent) -> None:
        await dispatch_to_hooks(hooks, event)

    with pytest.raises(HookError):
        await execute_call(call_of("echo", "{}"), make_scope(emit=emit))


@pytest.mark.asyncio
async def test_hook_error_raised_by_a_tool_is_its_tool_error() -> None:
    """A HookError from inside a tool (say a nested agent's run) is that call's failure, not this run's."""

    @tool
    async def nested_run() -> str:
        """Run another agent whose hook fails."""
        raise HookError("the nested agent's hook raised")

    record, _ = await outcome("nested_run", "{}", tools=[nested_run])
    assert record.kind == "tool_error"


@pytest.mark.asyncio
async def test_hostile_arguments_through_the_loop_do_not_end_the_run() -> None:
    """In a parallel batch, hostile arguments stay with their call; the run goes on."""
    calls = [
        function_call("nested", '{"value": ' + "[" * 5000 + "]" * 5000 + "}"),
        function_call("validated", '{"item": {"key": "type"}}'),
        function_call("echo", '{"text": "fine"}'),
    ]
    agent, _ = scripted_agent([response(*calls), response(message("done"))], tools=TOOLS)
    result = await agent.run("go")
    assert [r.kind for r in result.tool_calls] == ["invalid_arguments", "invalid_arguments", "ok"]
    assert result.output == "done"


# --- a worker thread or a slot that never frees --------------------------------------------------


@pytest.mark.asyncio
async def test_sync_call_times_out_when_no_worker_thread_frees() -> None:
    """With every worker thread held by a hung tool, a sync call ends as timeout within its limit."""
    release = threading.Event()

    @tool(timeout=0.05)
    def hang() -> str:
        """Hang until released."""
        release.wait(10)
        return "late"

    @tool(timeout=0.2)
    def quick() -> str:
        """Would be quick, if it ever got a thread."""
        return "done"

    scope = make_scope([hang, quick], max_threads=1)
    try:
        first = await execute_call(call_of("hang", "{}", "c1"), scope)
        with anyio.fail_after(2):
            second = await execute_call(call_of("quick", "{}", "c2"), scope)
    finally:
        release.set()
    assert (first.kind, second.kind) == ("timeout", "timeout")
    assert "no worker thread was free" in json.loads(second.output)["error"]["message"]


@pytest.mark.asyncio
async def test_tool_slot_held_by_a_hung_call_frees_at_its_timeout() -> None:
    """max_concurrency=1 with a hung holder: the holder times out, then the next call runs."""
    release = threading.Event()

    @tool(timeout=0.05, max_concurrency=1)
    def once(wait: bool) -> str:
        """Hang if asked."""
        if wait:
            release.wait(10)
        return "ran"

    scope = make_scope([once], max_threads=4)
    try:
        with anyio.fail_after(2):
            async with anyio.create_task_group() as group:
                results: dict[str, ToolCallRecord] = {}

                async def run(call_id: str, arguments: str) -> None:
                    results[call_id] = await execute_call(call_of("once", arguments, call_id), scope)

                group.start_soon(run, "c1", '{"wait": true}')
                await anyio.wait_all_tasks_blocked()
                group.start_soon(run, "c2", '{"wait": false}')
    finally:
        release.set()
    assert (results["c1"].kind, results["c2"].kind, results["c2"].output) == ("timeout", "ok", "ran")


@pytest.mark.asyncio
async def test_report_from_thread_after_the_call_ended_is_dropped() -> None:
    """A thread that reports after its call's outcome is out gets no error and does not hang."""
    kept: list[ToolContext[None]] = []
    events: list[RunEvent] = []

    @tool
    def keep(ctx: ToolContext[None]) -> str:
        """Hand the context to a thread that outlives the call."""
        kept.append(ctx)
        return "ok"

    async def emit(event: RunEvent) -> None:
        events.append(event)

    await execute_call(call_of("keep", "{}"), make_scope([keep], emit=emit))
    with anyio.fail_after(2):
        await anyio.to_thread.run_sync(kept[0].report_from_thread, {"late": True})
    assert [type(e) for e in events] == [ToolCallStarted, ToolCallFinished]


def test_report_from_thread_after_the_loop_closed_is_dropped() -> None:
    """A report after the run's event loop has closed returns at once, raising nothing."""
    kept: list[ToolContext[None]] = []

    @tool
    def keep(ctx: ToolContext[None]) -> str:
        """Keep the context."""
        kept.append(ctx)
        return "ok"

    agent, _ = scripted_agent([response(function_call("keep")), response(message("ok"))], tools=[keep])
    agent.run_sync("go")
    done = threading.Event()

    def report_late() -> None:
        kept[0].report_from_thread("late")
        done.set()

    threading.Thread(target=report_late, daemon=True).start()
    assert done.wait(2)


# --- more calls in one response than max_calls_per_response --------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
async def test_calls_past_the_cap_are_rejected_in_call_order(stream: bool) -> None:
    """The first max_calls_per_response calls run; each later one gets one rejected output."""
    calls = [function_call("echo", {"text": str(n)}) for n in range(5)]
    replies: list[Any] = [response(*calls), response(message("done"))]
    if stream:
        replies = [sse_reply(response(*calls)), sse_reply(response(message("done")))]
    agent, endpoint = scripted_agent(
        replies, tools=TOOLS, limits=Limits(max_calls_per_response=2), stream=stream
    )
    result = await agent.run("go")
    assert [r.kind for r in result.tool_calls] == ["ok", "ok", "rejected", "rejected", "rejected"]
    sent = [i for i in endpoint.requests[1]["input"] if i.get("type") == "function_call_output"]
    assert [i["call_id"] for i in sent] == [c["call_id"] for c in calls]
    error = json.loads(sent[4]["output"])["error"]
    assert error == {
        "type": "rejected",
        "message": "not run: the response asked for 5 tool calls, more than max_calls_per_response (2)",
    }


@pytest.mark.asyncio
async def test_rejected_calls_do_not_run() -> None:
    """A rejected call's tool is never called."""
    ran: list[int] = []

    @tool
    def count(n: int) -> int:
        """Count a call."""
        ran.append(n)
        return n

    calls = [function_call("count", {"n": n}) for n in range(4)]
    agent, _ = scripted_agent(
        [response(*calls), response(message("done"))], tools=[count], limits=Limits(max_calls_per_response=3)
    )
    await agent.run("go")
    assert sorted(ran) == [0, 1, 2]


@pytest.mark.asyncio
async def test_record_is_kept_when_the_end_hook_raises() -> None:
    """A call that ran keeps its record in the batch even when on_tool_end raises."""
    hooks = Hooks(on_tool_end=failing_hook)

    async def emit(event: RunEvent) -> None:
        await dispatch_to_hooks(hooks, event)

    scope = make_scope(emit=emit)
    batches: list[CallBatch] = []

    async def run_batch() -> None:
        async with anyio.create_task_group() as group:
            batches.append(CallBatch(group, scope))
            batches[0].start(call_of("echo", '{"text": "hi"}'))

    with pytest.raises(ExceptionGroup):
        await run_batch()
    batch = await batches[0].settle(None, "the run ended")
    assert [(r.kind, r.output) for r in batch] == [("ok", "hi")]


@tool(parameters={"type": "object", "properties": {"xs": {"type": "array", "items": {"type": "string"}}}})
def strings(**kwargs: Any) -> str:
    """Take a list of strings."""
    return "ok"


@pytest.mark.asyncio
async def test_an_error_per_array_item_is_not_collected_in_full() -> None:
    """100,000 wrong items: the first errors are reported and the rest are not computed."""
    with anyio.fail_after(5):  # collecting every jsonschema error took about 9 s here
        record, sent = await outcome("strings", json.dumps({"xs": [1] * 100_000}), tools=[strings])
    assert record.kind == "invalid_arguments"
    assert sent["error"]["message"].endswith("xs.9: 1 is not of type 'string'; and more")


@pytest.mark.asyncio
async def test_a_json_schema_validator_that_raises_gives_invalid_arguments() -> None:
    """jsonschema raising while validating (multipleOf 0.01 of a 400-digit int: OverflowError)."""
    record, sent = await outcome("schema_tool", '{"n": 1' + "0" * 400 + "}")
    assert record.kind == "invalid_arguments"
    assert "the validator raised OverflowError" in sent["error"]["message"]


@tool
def many(xs: list[str]) -> str:
    """Take a list of strings."""
    return "ok"


@pytest.mark.asyncio
async def test_large_arguments_are_validated_off_the_event_loop() -> None:
    """Validating a large argument string (here 100,000 pydantic errors) leaves the loop running."""
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await anyio.sleep(0.001)
            ticks += 1

    async with anyio.create_task_group() as group:
        group.start_soon(tick)
        await anyio.sleep(0.01)
        before = ticks
        record, _ = await outcome("many", json.dumps({"xs": [1] * 100_000}), tools=[many])
        during = ticks - before
        group.cancel_scope.cancel()
    assert record.kind == "invalid_arguments"
    assert during >= 3


@pytest.mark.asyncio
async def test_a_fault_of_the_runtime_itself_still_gives_one_outcome(monkeypatch: pytest.MonkeyPatch) -> None:
    """Even a bug of the runtime's own inside the call's dispatch ends as that call's tool_error."""

    async def broken_dispatch(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("a bug in the runtime")

    monkeypatch.setattr("agent._execution._in_thread_slot", broken_dispatch)
    record, sent = await outcome("echo", "{}")
    assert (record.kind, sent["error"]["message"]) == (
        "tool_error",
        "the runtime failed while running tool 'echo' (RuntimeError)",
    )


def test_thread_wait_timeout_under_trio() -> None:
    """The wait for a worker thread is bounded under trio too."""
    release = threading.Event()

    @tool(timeout=0.05)
    def hang() -> str:
        """Hang until released."""
        release.wait(10)
        return "late"

    async def two_calls() -> list[str]:
        scope = make_scope([hang], max_threads=1)
        with anyio.fail_after(2):
            first = await execute_call(call_of("hang", "{}", "c1"), scope)
            second = await execute_call(call_of("hang", "{}", "c2"), scope)
        return [first.kind, second.kind]

    try:
        assert anyio.run(two_calls, backend="trio") == ["timeout", "timeout"]
    finally:
        release.set()


@pytest.mark.asyncio
async def test_hundreds_of_calls_in_one_response_meet_the_default_cap() -> None:
    """300 calls in one response: the default cap (128) runs, the other 172 are rejected."""

    @tool
    async def ping(n: int) -> int:
        """Answer."""
        return n

    calls = [function_call("ping", {"n": n}) for n in range(300)]
    agent, endpoint = scripted_agent([response(*calls), response(message("done"))], tools=[ping])
    result = await agent.run("go")
    kinds = [r.kind for r in result.tool_calls]
    assert (kinds[:128], kinds[128:]) == (["ok"] * 128, ["rejected"] * 172)
    sent = [i for i in endpoint.requests[1]["input"] if i.get("type") == "function_call_output"]
    assert len(sent) == 300


@pytest.mark.asyncio
@pytest.mark.parametrize("hook", ["on_tool_start", "on_tool_end"])
async def test_a_failing_tool_hook_ends_the_run_with_hook_error(hook: str) -> None:
    """Through the loop, a tool hook's exception ends the run as HookError, not an ExceptionGroup."""
    calls = [function_call("echo", {"text": "a"}), function_call("echo", {"text": "b"})]
    agent, _ = scripted_agent([response(*calls), response(message("done"))], tools=TOOLS)
    with pytest.raises(HookError, match="hook failed"):
        await agent.run("go", hooks=Hooks(**{hook: failing_hook}))
