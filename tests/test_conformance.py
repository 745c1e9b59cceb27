"""Recorded real ``/v1/responses`` traffic (../shared/conformance): parse it, and replay it.

Each non-streamed multi-turn recording is replayed through the loop: the endpoint answers with
the recorded responses, the tools (built from the recorded request's tool schemas) return the
recorded outputs, and the run must reach the recorded final answer, sending each output under
the server's ``call_id`` (see the caveat in INDEX.md about clients that echoed the item id).
"""

from __future__ import annotations

import contextlib
import itertools
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent import (
    APIStatusError,
    ArgumentsDelta,
    MaxTurnsExceeded,
    ResponseFailedError,
    TextDelta,
    Tool,
    ToolContext,
    tool,
)
from agent._stream import StreamReader
from agent._wire import FunctionCall, parse_response
from tests._support import CONFORMANCE, check_official_request, scripted_agent, sse_text

CASES_DIR = CONFORMANCE / "responses"
pytestmark = pytest.mark.skipif(not CASES_DIR.is_dir(), reason="../shared/conformance is not beside the repo")

CASES = sorted(CASES_DIR.glob("*.json")) if CASES_DIR.is_dir() else []


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def json_exchanges(kind: str) -> list[Any]:
    """(file, index, exchange) for every exchange answered with a JSON body of ``kind``."""
    found = []
    for path in CASES:
        for index, exchange in enumerate(load(path)["exchanges"]):
            if "response" not in exchange:
                continue
            ok = exchange["status"] == 200
            if (kind == "ok") == ok:
                found.append(pytest.param(exchange, id=f"{path.stem}#{index}"))
    return found


def replayable() -> list[Any]:
    """Recordings whose every exchange is a non-streamed 200 with its request, over 2+ turns."""
    found = []
    for path in CASES:
        exchanges = load(path)["exchanges"]
        if len(exchanges) < 2:
            continue
        if all(e.get("request") and e["status"] == 200 and "response" in e for e in exchanges):
            found.append(pytest.param(path, id=path.stem))
    return found


@pytest.mark.parametrize("exchange", json_exchanges("ok"))
def test_every_recorded_response_parses(exchange: dict[str, Any]) -> None:
    """Every recorded 200 body parses; its function calls and unknown fields are kept."""
    body = exchange["response"]
    parsed = parse_response(body)
    expected_calls = [i["call_id"] for i in body["output"] if i["type"] == "function_call"]
    assert [c.call_id for c in parsed.function_calls] == expected_calls
    assert parsed.output == body["output"]
    assert parsed.body is body


@pytest.mark.asyncio
@pytest.mark.parametrize("exchange", json_exchanges("error"))
async def test_every_recorded_error_becomes_a_typed_error(exchange: dict[str, Any]) -> None:
    """Every recorded error body becomes an APIStatusError with its status, code and message."""
    error = exchange["response"]["error"]
    reply = httpx.Response(exchange["status"], json=exchange["response"])
    agent, _ = scripted_agent([reply], max_retries=0)
    with pytest.raises(APIStatusError) as info:
        await agent.run("hi")
    assert (info.value.status, info.value.code, info.value.message) == (
        exchange["status"],
        error.get("code"),
        error["message"],
    )


def recorded_outputs(exchanges: list[dict[str, Any]]) -> dict[str, str]:
    """Map each function call (by server call_id) to the output the client sent back for it."""
    outputs: dict[str, str] = {}
    for current, following in itertools.pairwise(exchanges):
        sent = {
            i["call_id"]: i["output"]
            for i in following["request"]["input"]
            if i.get("type") == "function_call_output"
        }
        for item in current["response"]["output"]:
            if item["type"] == "function_call":
                # Some clients echoed the fc_ item id instead of the call_id (INDEX.md caveat).
                outputs[item["call_id"]] = sent.get(item["call_id"]) or sent[item["id"]]
    return outputs


def replay_tools(request: dict[str, Any], outputs: dict[str, str]) -> list[Tool[..., Any]]:
    """Dynamic tools from the recorded schemas, answering with the recorded outputs."""

    async def answer(ctx: ToolContext[None], **_: Any) -> str:
        return outputs.get(ctx.call_id, "(not recorded)")

    def make(spec: dict[str, Any]) -> Tool[..., Any]:
        return tool(
            answer,
            name=spec["name"],
            description=spec.get("description") or "",
            parameters=spec["parameters"],
            strict=spec.get("strict"),
        )

    return [make(spec) for spec in request.get("tools", []) if spec.get("type") == "function"]


def final_text(body: dict[str, Any]) -> str:
    return "\n".join(
        part["text"]
        for item in body["output"]
        if item["type"] == "message"
        for part in item["content"]
        if part["type"] == "output_text"
    )


@pytest.mark.asyncio
@pytest.mark.parametrize("path", replayable())
async def test_recorded_conversation_replays_to_its_final_answer(path: Path) -> None:
    """The loop, fed the recorded responses and tool outputs, reaches the recorded answer."""
    exchanges = load(path)["exchanges"]
    first = exchanges[0]["request"]
    outputs = recorded_outputs(exchanges)
    stateful = "previous_response_id" in exchanges[1]["request"]
    options: dict[str, Any] = {
        "model": first["model"],
        "tools": replay_tools(first, outputs),
        "instructions": first.get("instructions"),
        "max_turns": len(exchanges),
        "use_previous_response_id": stateful,
    }
    agent, endpoint = scripted_agent([e["response"] for e in exchanges], **options)
    last = exchanges[-1]["response"]
    if any(i["type"] == "function_call" for i in last["output"]):
        with pytest.raises(MaxTurnsExceeded) as info:
            await agent.run(first["input"])
        assert info.value.partial_result is not None
        result = info.value.partial_result
    else:
        result = await agent.run(first["input"])
        assert result.output == final_text(last)
    sent = [
        (i["call_id"], i["output"])
        for body in endpoint.requests
        for i in body["input"]
        if i.get("type") == "function_call_output"
    ]
    expected = [(r.call_id, outputs[r.call_id]) for r in result.tool_calls if r.call_id in outputs]
    assert len(expected) == len(outputs)
    assert all(r.kind == "ok" for r in result.tool_calls)
    assert sent[-len(expected) :] == expected if stateful else set(sent) == set(expected)
    for body in endpoint.requests:
        check_official_request(body)


def test_the_corpus_has_replayable_cases() -> None:
    """Guard: the replay test above really runs on several recordings."""
    assert len(replayable()) >= 6


# --- streams ---------------------------------------------------------------------------------


def sse_exchanges() -> list[Any]:
    """(exchange) for every recorded stream."""
    return [
        pytest.param(exchange, id=f"{path.stem}#{index}")
        for path in CASES
        for index, exchange in enumerate(load(path)["exchanges"])
        if "sse" in exchange
    ]


def recorded_stream(exchange: dict[str, Any]) -> httpx.Response:
    """The recorded events framed as SSE again (data-only where the fixture has no names)."""
    named = all(e["event"] for e in exchange["sse"])
    return httpx.Response(
        200,
        headers={"content-type": "text/event-stream"},
        text=sse_text([e["data"] for e in exchange["sse"]], named=named),
    )


@pytest.mark.asyncio
@pytest.mark.parametrize("exchange", sse_exchanges())
async def test_every_recorded_stream_parses_into_the_right_events(exchange: dict[str, Any]) -> None:
    """Deltas rebuild the texts and arguments, each call is handed over once, the end parses."""
    events: list[Any] = []
    calls: list[FunctionCall] = []

    async def emit(event: Any) -> None:
        events.append(event)

    parsed = await StreamReader(1, emit, calls.append).read(recorded_stream(exchange))
    final = [e["data"] for e in exchange["sse"] if e["data"]["type"] in TERMINAL][-1]["response"]
    assert parsed.status == final["status"]
    assert [c.call_id for c in calls] == [
        i["call_id"] for i in final["output"] if i["type"] == "function_call"
    ]
    for item in final["output"]:
        if item["type"] == "function_call":
            deltas = [e.delta for e in events if isinstance(e, ArgumentsDelta) and e.item_id == item["id"]]
            assert "".join(deltas) == item["arguments"]
        if item["type"] == "message":
            texts = [e.delta for e in events if isinstance(e, TextDelta) and e.item_id == item["id"]]
            assert "".join(texts) == final_text({"output": [item]})


TERMINAL = {"response.completed", "response.incomplete", "response.failed"}


def stream_replayable() -> list[Any]:
    """Recorded streamed conversations with their requests, over 2+ turns."""
    return [
        pytest.param(path, id=path.stem)
        for path in CASES
        if len(ex := load(path)["exchanges"]) >= 2 and all(e.get("request") and "sse" in e for e in ex)
    ]


def stream_final(exchange: dict[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = [e["data"] for e in exchange["sse"] if e["data"]["type"] in TERMINAL][-1][
        "response"
    ]
    return body


@pytest.mark.asyncio
@pytest.mark.parametrize("path", stream_replayable())
async def test_recorded_streamed_conversation_replays_to_its_final_answer(path: Path) -> None:
    """A streamed run over the recorded streams runs the calls and reaches the recorded answer."""
    exchanges = load(path)["exchanges"]
    for exchange in exchanges:
        exchange["response"] = stream_final(exchange)
    first = exchanges[0]["request"]
    outputs = recorded_outputs(exchanges)
    tools = {spec["name"]: spec for e in exchanges for spec in e["request"].get("tools", [])}
    agent, endpoint = scripted_agent(
        [recorded_stream(e) for e in exchanges],
        model=first["model"],
        tools=replay_tools({"tools": list(tools.values())}, outputs),
        instructions=first.get("instructions"),
        max_turns=len(exchanges),
    )
    result = await agent.run(first["input"], stream=True)
    assert result.output == final_text(exchanges[-1]["response"])
    assert {(r.call_id, r.output) for r in result.tool_calls} == set(outputs.items())
    assert all(body["stream"] is True for body in endpoint.requests)


@pytest.mark.asyncio
async def test_recorded_stream_error_event_raises_insufficient_quota() -> None:
    """The recorded in-stream error (HTTP 200, then error + response.failed) is a typed error."""
    exchange = load(CASES_DIR / "vercel-stream-error-event-insufficient-quota.json")["exchanges"][0]
    agent, _ = scripted_agent([recorded_stream(exchange)])
    with pytest.raises(ResponseFailedError) as info:
        await agent.run("hi", stream=True)
    assert info.value.code == "insufficient_quota"


@pytest.mark.asyncio
async def test_recorded_incomplete_stream_ends_the_run_with_its_reason() -> None:
    """The recorded response.incomplete (max_output_tokens) ends the run as incomplete."""
    exchange = load(CASES_DIR / "ddtrace-stream-incomplete-max-output-tokens.json")["exchanges"][0]
    agent, _ = scripted_agent([recorded_stream(exchange)])
    result = await agent.run("hi", stream=True)
    assert (result.status, result.incomplete_reason) == ("incomplete", "max_output_tokens")


def streams_with_calls() -> list[Any]:
    """Every recorded stream whose response asks for function calls."""
    return [
        pytest.param(exchange, id=f"{path.stem}#{index}")
        for path in CASES
        for index, exchange in enumerate(load(path)["exchanges"])
        if "sse" in exchange and any(i["type"] == "function_call" for i in stream_final(exchange)["output"])
    ]


@pytest.mark.asyncio
@pytest.mark.parametrize("exchange", streams_with_calls())
async def test_every_recorded_streamed_call_is_run(exchange: dict[str, Any]) -> None:
    """Each function call of each recorded stream runs once, under its server call_id."""
    final = stream_final(exchange)
    calls = [i for i in final["output"] if i["type"] == "function_call"]
    specs = (exchange.get("request") or {}).get("tools") or [
        {"type": "function", "name": c["name"], "parameters": {"type": "object"}} for c in calls
    ]
    ran: list[str] = []

    async def answer(ctx: ToolContext[None], **_: Any) -> str:
        ran.append(ctx.call_id)
        return "ok"

    tools = [
        tool(answer, name=s["name"], description="", parameters=s["parameters"], strict=s.get("strict"))
        for s in specs
        if s.get("type") == "function"
    ]
    agent, _ = scripted_agent([recorded_stream(exchange)], tools=tools, max_turns=1)
    with pytest.raises(MaxTurnsExceeded) as info:
        await agent.run("replay", stream=True)
    partial = info.value.partial_result
    assert partial is not None
    assert sorted(ran) == sorted(c["call_id"] for c in calls)
    assert [r.call_id for r in partial.tool_calls] == [c["call_id"] for c in calls]
    assert all(r.kind == "ok" for r in partial.tool_calls)


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "name", ["pydantic-ai-reasoning-summary-call-gpt5.json", "mirascope-reasoning-parallel-gpt5mini.json"]
)
async def test_recorded_reasoning_replayed_statelessly_asks_for_encrypted_content(name: str) -> None:
    """With store: false, the request that replays the recorded reasoning item asks for its content."""
    exchanges = load(CASES_DIR / name)["exchanges"]
    first = exchanges[0]["request"]
    outputs = recorded_outputs(exchanges)
    agent, endpoint = scripted_agent(
        [e["response"] for e in exchanges],
        model=first["model"],
        tools=replay_tools(first, outputs),
        max_turns=len(exchanges),
        extra_body={"store": False},
    )
    with contextlib.suppress(MaxTurnsExceeded):
        await agent.run(first["input"])
    replayed = [b for b in endpoint.requests if any(i.get("type") == "reasoning" for i in b["input"])]
    assert replayed
    assert all(body["include"] == ["reasoning.encrypted_content"] for body in replayed)
    assert "include" not in endpoint.requests[0]
