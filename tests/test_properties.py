"""Property-based tests: whatever the endpoint sends and whatever the model writes, only the
documented typed errors (``AgentError`` subclasses) come out of ``agent.run``, and every tool call
ends with one of the documented outcome kinds.

Bodies and streams go through ``httpx.MockTransport`` (no socket). Examples are few and the
search is derandomised, so the default suite stays fast and its results repeatable.
"""

from __future__ import annotations

import asyncio
import json
import typing
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent import AgentError, OutcomeKind, RetryPolicy, RunResult, tool
from tests._support import function_call, message, response, scripted_agent, sse_text, stream_events

OUTCOMES = set(typing.get_args(OutcomeKind))
NO_RETRY = RetryPolicy(max_retries=0)
PROPERTY = settings(
    max_examples=40, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)


@tool
def probe(x: int, tags: list[str] | None = None) -> dict[str, Any]:
    """Echo what it got.

    Args:
        x: A number.
        tags: Labels.
    """
    return {"x": x, "tags": tags or []}


VALID_BODY = json.dumps(response(function_call("probe", {"x": 1}, call_id="call_p"), message("thinking")))
"""Fixed once: the generated examples must not depend on the support module's id counter."""


def _valid_body() -> dict[str, Any]:
    body: dict[str, Any] = json.loads(VALID_BODY)
    return body


@st.composite
def mutated_bodies(draw: st.DrawFn) -> Any:
    """A valid response body with one field at some depth replaced, removed or retyped."""
    body: Any = _valid_body()
    node = body
    while isinstance(node, dict | list) and node and draw(st.booleans()):
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        key = draw(st.sampled_from(keys))
        if not isinstance(node[key], dict | list) or draw(st.booleans()):
            if isinstance(node, dict) and draw(st.booleans()):
                del node[key]
            else:
                node[key] = draw(json_values)
            return body
        node = node[key]
    return body


bodies = st.one_of(
    st.binary(max_size=300),
    json_values.map(lambda value: json.dumps(value).encode()),
    mutated_bodies().map(lambda value: json.dumps(value).encode()),
)


async def _run_to_end(agent_reply: httpx.Response, **options: Any) -> RunResult | AgentError:
    """Run once against an endpoint that always answers ``agent_reply``; the result or the error."""
    agent, _ = scripted_agent([agent_reply] * 8, retry=NO_RETRY, max_turns=3, tools=[probe], **options)
    async with agent:
        try:
            return await agent.run("go")
        except AgentError as exc:
            return exc


def _check_outcomes(outcome: RunResult | AgentError) -> None:
    result = outcome if isinstance(outcome, RunResult) else outcome.partial_result
    if result is not None:
        assert {record.kind for record in result.tool_calls} <= OUTCOMES


@PROPERTY
@given(body=bodies, status=st.sampled_from([200, 200, 200, 400, 404, 429, 500, 503]))
def test_any_body_ends_in_a_result_or_a_typed_error(body: bytes, status: int) -> None:
    """Any body with any common status gives a RunResult or an AgentError, nothing else."""
    reply = httpx.Response(status, content=body, headers={"content-type": "application/json"})
    _check_outcomes(asyncio.run(_run_to_end(reply)))


@st.composite
def mutated_streams(draw: st.DrawFn) -> bytes:
    """A valid stream with events dropped, replaced by arbitrary JSON, or cut at any byte."""
    events: list[Any] = stream_events(_valid_body())
    for _ in range(draw(st.integers(0, 3))):
        index = draw(st.integers(0, len(events) - 1))
        action = draw(st.sampled_from(["drop", "replace", "retype"]))
        if action == "drop":
            del events[index]
        elif action == "replace":
            events[index] = {"type": events[index]["type"], "payload": draw(json_values)}
        else:
            events[index] = {**events[index], "type": draw(st.text(max_size=30))}
        if not events:
            break
    text = sse_text([e for e in events if isinstance(e, dict) and isinstance(e.get("type"), str)])
    data = text.encode()
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return data + draw(st.binary(max_size=40))


@PROPERTY
@given(stream=mutated_streams())
def test_any_stream_ends_in_a_result_or_a_typed_error(stream: bytes) -> None:
    """Any mutation of a valid event stream gives a RunResult or an AgentError, nothing else."""
    reply = httpx.Response(200, content=stream, headers={"content-type": "text/event-stream"})
    _check_outcomes(asyncio.run(_run_to_end(reply, stream=True)))


arguments = st.one_of(
    st.text(max_size=80),
    json_values.map(json.dumps),
    st.fixed_dictionaries({"x": json_values}, optional={"tags": json_values}).map(json.dumps),
)


async def _call_probe(raw_arguments: str) -> RunResult:
    replies = [response(function_call("probe", raw_arguments, call_id="call_a")), response(message("ok"))]
    agent, _ = scripted_agent(replies, retry=NO_RETRY, tools=[probe])
    async with agent:
        return await agent.run("go")


@PROPERTY
@given(raw=arguments)
def test_any_arguments_end_in_one_documented_outcome(raw: str) -> None:
    """Whatever the model writes as arguments, the call ends in one documented outcome kind."""
    result = asyncio.run(_call_probe(raw))
    assert [record.kind in OUTCOMES for record in result.tool_calls] == [True]


deep_arguments = st.one_of(
    st.integers(1_000, 5_000).map(lambda depth: "[" * depth + "]" * depth),
    st.integers(1_000, 5_000).map(lambda depth: '{"x":' * depth + "1" + "}" * depth),
)


@settings(PROPERTY, max_examples=10)
@given(raw=deep_arguments)
def test_deep_arguments_end_in_one_documented_outcome(raw: str) -> None:
    """Arguments nested thousands deep end in one documented outcome kind, not the run."""
    result = asyncio.run(_call_probe(raw))
    assert [record.kind in OUTCOMES for record in result.tool_calls] == [True]


async def _call_probe_or_error(raw_arguments: str) -> RunResult | AgentError:
    try:
        return await _call_probe(raw_arguments)
    except AgentError as exc:
        return exc


LONE = st.text(alphabet=st.characters(categories=["Cs"]), min_size=1, max_size=4)


@settings(PROPERTY, max_examples=10)
@given(lone=LONE)
def test_escaped_lone_surrogates_end_in_an_outcome_or_a_typed_error(lone: str) -> None:
    """Lone surrogates escaped in the arguments' JSON end in an outcome kind or a typed error."""
    outcome = asyncio.run(_call_probe_or_error(json.dumps({"x": 1, "tags": [lone]})))
    _check_outcomes(outcome)


@settings(PROPERTY, max_examples=10)
@given(lone=LONE)
def test_raw_lone_surrogates_end_in_an_outcome_or_a_typed_error(lone: str) -> None:
    """Lone surrogates written raw into the arguments end in an outcome kind or a typed error."""
    outcome = asyncio.run(_call_probe_or_error('{"x": 1, "tags": ["' + lone + '"]}'))
    _check_outcomes(outcome)
