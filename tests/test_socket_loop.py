"""The agent loop over a real 127.0.0.1 socket, against the local model server (not AI).

Where ``test_loop.py`` scripts the endpoint in-process, these runs go through httpx's pool, a
TCP connection and uvicorn, so retries, dropped connections and timeouts are the real thing.
"""

from __future__ import annotations

import json
import time
from typing import Any, Literal

import pytest

from agent import (
    Agent,
    APIConnectionError,
    APIError,
    APITimeoutError,
    AuthenticationError,
    InternalServerError,
    ProtocolError,
    RateLimitError,
    ToolContext,
    tool,
)
from agent.localmodel import AutoPolicy, Fault, Item, LocalModelServer, Policy, ResponseRequest, demo_script
from builtin_tools import registry
from tests._support import FAST_RETRY

PROMPT = "Do the four things at once."
DEMO_CALL_IDS = ["call_current_time", "call_system_info", "call_math_calculator", "call_random_generator"]


def agent_for(server: LocalModelServer, **options: Any) -> Agent:
    """An agent on ``server`` that retries without waiting unless told otherwise."""
    options.setdefault("retry", FAST_RETRY)
    options.setdefault("api_key", "local")
    return Agent("gpt-4.1", base_url=server.base_url, **options)


def served(policy: Policy | None = None, **options: Any) -> LocalModelServer:
    return LocalModelServer(policy or AutoPolicy(), **options)


def outputs_sent(body: dict[str, Any]) -> list[tuple[str, str]]:
    return [(i["call_id"], i["output"]) for i in body["input"] if i.get("type") == "function_call_output"]


@pytest.mark.asyncio
async def test_api_page_scenario_answers_four_calls_in_one_follow_up() -> None:
    """The demo script's four parallel calls all run ok, and one follow-up gets the answer."""
    async with served(demo_script()) as server, agent_for(server, tools=registry) as agent:
        result = await agent.run(PROMPT)
    assert [call.call_id for call in result.tool_calls] == DEMO_CALL_IDS
    assert all(call.ok for call in result.tool_calls)
    assert (result.turns, len(server.requests)) == (2, 2)
    assert result.output.startswith("I ran the four tasks in parallel.")


@pytest.mark.asyncio
async def test_follow_up_holds_the_four_outputs_in_call_order() -> None:
    """The second request carries one function_call_output per call, in the order of the calls."""
    async with served(demo_script()) as server, agent_for(server, tools=registry) as agent:
        result = await agent.run(PROMPT)
    expected = [(call.call_id, call.output) for call in result.tool_calls]
    assert outputs_sent(server.requests[1]) == expected
    assert [call_id for call_id, _ in expected] == DEMO_CALL_IDS


@pytest.mark.asyncio
async def test_previous_response_id_chain_is_accepted_by_the_server() -> None:
    """With use_previous_response_id the follow-up sends only the outputs, chained to response 1."""
    async with (
        served(demo_script()) as server,
        agent_for(server, tools=registry, use_previous_response_id=True) as agent,
    ):
        result = await agent.run(PROMPT)
    follow_up = server.requests[1]
    assert follow_up["previous_response_id"] == result.response_ids[0]
    assert [item["type"] for item in follow_up["input"]] == ["function_call_output"] * 4
    assert result.output.startswith("I ran the four tasks in parallel.")


@pytest.mark.parametrize(
    ("faults", "requests"),
    [
        pytest.param([Fault(status=503)] * 2, 3, id="503-twice"),
        pytest.param([Fault(status=429, retry_after=0)], 2, id="429"),
        pytest.param([Fault(drop=True)], 2, id="dropped-connection"),
        pytest.param([Fault(malformed=True)], 2, id="non-json-200"),
        pytest.param([Fault(status=500), Fault(drop=True)], 3, id="500-then-drop"),
    ],
)
@pytest.mark.asyncio
async def test_transient_failures_are_retried_to_success(faults: list[Fault], requests: int) -> None:
    """Transient failures within max_retries are retried and the run still succeeds."""
    async with served(faults=faults) as server, agent_for(server) as agent:
        result = await agent.run("echo me")
    assert (result.output, len(server.requests)) == ("echo me", requests)


@pytest.mark.asyncio
async def test_retry_after_is_honoured() -> None:
    """A 429's Retry-After (50 ms) is waited out although the backoff itself is zero."""
    async with served(faults=[Fault(status=429, retry_after=0.05)]) as server, agent_for(server) as agent:
        started = time.monotonic()
        result = await agent.run("echo me")
        waited = time.monotonic() - started
    assert (result.output, len(server.requests)) == ("echo me", 2)
    assert waited >= 0.045


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        pytest.param(Fault(drop=True), APIConnectionError, id="dropped-connection"),
        pytest.param(Fault(malformed=True), ProtocolError, id="non-json-200"),
        pytest.param(Fault(status=503), InternalServerError, id="503"),
        pytest.param(Fault(status=429, retry_after=0), RateLimitError, id="429"),
    ],
)
@pytest.mark.asyncio
async def test_persistent_failures_raise_typed_errors_after_retries(
    fault: Fault, error: type[APIError]
) -> None:
    """A failure on every attempt raises its own error type after max_retries + 1 requests."""
    async with served(faults=[fault] * 3) as server, agent_for(server, max_retries=2) as agent:
        with pytest.raises(APIError) as raised:
            await agent.run("echo me")
    assert (raised.type, len(server.requests)) == (error, 3)


@pytest.mark.asyncio
async def test_slow_response_raises_api_timeout_error() -> None:
    """A response slower than the agent's timeout raises APITimeoutError."""
    async with (
        served(faults=[Fault(delay=0.5)]) as server,
        agent_for(server, timeout=0.1, max_retries=0) as agent,
    ):
        with pytest.raises(APITimeoutError):
            await agent.run("echo me")


@pytest.mark.asyncio
async def test_failed_run_carries_its_partial_result() -> None:
    """An API error that ends a run after a tool turn carries the calls already made."""
    faults = [Fault(), *[Fault(status=503)] * 3]
    async with served(demo_script(), faults=faults) as server, agent_for(server, tools=registry) as agent:
        with pytest.raises(InternalServerError) as raised:
            await agent.run(PROMPT)
    partial = raised.value.partial_result
    assert partial is not None
    assert [call.call_id for call in partial.tool_calls] == DEMO_CALL_IDS


@pytest.mark.asyncio
async def test_wrong_api_key_raises_authentication_error() -> None:
    """A key the server does not accept: AuthenticationError, code invalid_api_key, key not shown."""
    async with served(api_key="right") as server, agent_for(server, api_key="wrong-key-1234567") as agent:
        with pytest.raises(AuthenticationError) as raised:
            await agent.run("echo me")
    assert (raised.value.status, raised.value.code) == (401, "invalid_api_key")
    assert "wrong-key-1234567" not in str(raised.value)


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_socket_loop_runs_under_trio(anyio_backend: str) -> None:
    """The API page scenario over a real socket, with the loop running under trio."""
    async with served(demo_script()) as server, agent_for(server, tools=registry) as agent:
        result = await agent.run(PROMPT)
    assert [call.kind for call in result.tool_calls] == ["ok"] * 4
    assert result.output.startswith("I ran the four tasks in parallel.")


@tool
async def forecast(city: str, unit: Literal["c", "f"] = "c") -> dict[str, str | int]:
    """Tomorrow's forecast for a city."""
    return {"city": city, "high": 21, "unit": unit}


@tool
def word_count(text: str) -> int:
    """Count the words in a text (sync: runs in a worker thread)."""
    return len(text.split())


@tool
async def greeting(ctx: ToolContext[str], name: str) -> str:
    """Greet someone on behalf of the caller."""
    return f"{ctx.deps} greets {name}"


@pytest.mark.asyncio
async def test_auto_policy_exercises_a_users_own_tools() -> None:
    """AutoPolicy calls each of the user's tools once, and the answer reports every output."""
    async with served() as server, agent_for(server, tools=[forecast, word_count, greeting]) as agent:
        result = await agent.run("Try my tools.", deps="Ada")
    outputs = {call.name: call.output for call in result.tool_calls}
    assert json.loads(outputs.pop("forecast")) == {"city": "example", "high": 21, "unit": "c"}
    assert outputs == {"word_count": "1", "greeting": "Ada greets example"}
    assert sorted(result.output.splitlines()) == sorted(f"{c.name}: {c.output}" for c in result.tool_calls)


class RepeatingPolicy:
    """Asks for one call twice under the same call id, then answers with what it got."""

    def respond(self, request: ResponseRequest) -> list[Item]:
        if request.rounds == 0:
            call = {
                "type": "function_call",
                "call_id": "call_dup",
                "name": "word_count",
                "arguments": '{"text": "a b"}',
            }
            return [call, dict(call)]
        outputs = list(request.tool_outputs.values())
        return [{"type": "message", "content": f"got {outputs}"}]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.asyncio
async def test_duplicate_call_ids_make_a_follow_up_the_strict_server_accepts(stream: bool) -> None:
    """Defect 10: a repeated call id runs once, and the follow-up is one the local server accepts."""
    async with served(RepeatingPolicy()) as server, agent_for(server, tools=[word_count]) as agent:
        result = await agent.run("count", stream=stream)
    assert (result.output, [call.output for call in result.tool_calls]) == ("got ['2']", ["2"])
    assert len(server.requests) == 2


@pytest.mark.asyncio
async def test_duplicate_call_ids_in_a_stored_response_end_with_protocol_error() -> None:
    """Defect 10: with previous_response_id the stored repeat cannot be mended: ProtocolError, one request."""
    async with (
        served(RepeatingPolicy()) as server,
        agent_for(server, tools=[word_count], use_previous_response_id=True) as agent,
    ):
        with pytest.raises(ProtocolError, match="call_dup") as raised:
            await agent.run("count")
    assert (len(server.requests), raised.value.partial_result is not None) == (1, True)
