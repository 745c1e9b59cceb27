"""The core engine's acceptance: the API page's scenario with the four builtin tools."""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest

from agent import Agent, Hooks, ToolCallStarted, tool
from builtin_tools import registry
from tests._support import function_call, message, response, scripted_agent

PAGE_PROMPT = (
    "Please help me do the following things simultaneously:\n1. Get the current system time\n"
    "2. Check system information (operating system, memory, etc.)\n3. Calculate the result of "
    "123.5 + 456.7\n4. Generate 3 random numbers between 1 and 100\n\nThis is a parallel tool "
    "invocation test, please execute these tasks simultaneously."
)

PAGE_CALLS = [
    function_call("current_time", {}),
    function_call("system_info", {}),
    function_call("math_calculator", {"a": 123.5, "b": 456.7, "operation": "add"}),
    function_call("random_generator", {"min": 1, "max": 100, "count": 3}),
]


def all_started_gate(expected: int) -> Hooks:
    """A tool-start hook that holds each call until all ``expected`` calls have started.

    Hooks run inside each call's task, so a runtime that ran the calls one after another
    would wait here forever (and the test's fail_after would fire).
    """
    started = 0
    everyone = anyio.Event()

    async def on_tool_start(event: ToolCallStarted) -> None:
        nonlocal started
        started += 1
        if started == expected:
            everyone.set()
        await everyone.wait()

    return Hooks(on_tool_start=on_tool_start)


@pytest.mark.asyncio
async def test_page_scenario_four_parallel_calls_one_follow_up() -> None:
    """All four builtin tools run at once and their results go back in one follow-up request."""
    agent, endpoint = scripted_agent(
        [response(*PAGE_CALLS), response(message("Here are your four results."))],
        tools=registry,
        metadata={"model_id": "32"},
    )
    with anyio.fail_after(10):
        result = await agent.run(PAGE_PROMPT, hooks=all_started_gate(4))
    assert result.output == "Here are your four results."
    assert len(endpoint.requests) == 2
    outputs = [i for i in endpoint.requests[1]["input"] if i.get("type") == "function_call_output"]
    assert [o["call_id"] for o in outputs] == [c["call_id"] for c in PAGE_CALLS]
    assert [r.kind for r in result.tool_calls] == ["ok"] * 4
    assert json.loads(outputs[2]["output"])["result"] == 580.2
    assert len(json.loads(outputs[3]["output"])["numbers"]) == 3


BAD_CALLS = [
    (function_call("no_such_tool", {}), "unknown_tool"),
    (function_call("math_calculator", '{"a": 1, "b": '), "invalid_arguments"),
    (function_call("random_generator", {"count": 1000}), "invalid_arguments"),
    (function_call("math_calculator", {"a": 10, "b": 1000000000, "operation": "power"}), "tool_error"),
    (function_call("math_calculator", {"a": 1, "b": 0, "operation": "divide"}), "tool_error"),
    (function_call("math_calculator", {"a": "ten", "b": 1, "operation": "add"}), "invalid_arguments"),
]


@pytest.mark.asyncio
async def test_bad_calls_yield_errors_and_the_run_finishes() -> None:
    """Unknown tool, broken JSON, count 1000, 10**1e9, 1/0, a string for a number: all answered."""
    calls = [call for call, _ in BAD_CALLS]
    agent, endpoint = scripted_agent(
        [response(*calls), response(message("Sorry about that."))], tools=registry
    )
    with anyio.fail_after(10):
        result = await agent.run("break things")
    assert result.output == "Sorry about that."
    assert [r.kind for r in result.tool_calls] == [kind for _, kind in BAD_CALLS]
    errors = [
        json.loads(i["output"])["error"]["message"]
        for i in endpoint.requests[1]["input"]
        if i.get("type") == "function_call_output"
    ]
    assert len(errors) == 6
    assert "count: Input should be less than or equal to 10" in errors[2]
    assert "division by zero" in errors[4].lower()


@pytest.mark.asyncio
async def test_users_own_tool_next_to_builtins() -> None:
    """A user's async tool with Literal args works beside the builtin registry."""

    @tool
    async def get_weather(city: str, unit: Any = "c") -> dict[str, Any]:
        """Current weather for a city."""
        return {"city": city, "temp": 21, "unit": unit}

    agent, _ = scripted_agent(
        [response(function_call("get_weather", {"city": "Paris"})), response(message("21C"))],
        tools=[*registry, get_weather],
    )
    assert isinstance(agent, Agent)
    result = await agent.run("Weather in Paris?")
    assert json.loads(result.tool_calls[0].output) == {"city": "Paris", "temp": 21, "unit": "c"}
