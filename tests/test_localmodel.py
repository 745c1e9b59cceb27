"""The local model server: a deterministic `/v1/responses` stand-in (not AI), held to the real API."""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Self, cast

import anyio
import httpx
import openai
import pytest
import trio
from openai.types.responses import (
    FunctionToolParam,
    Response,
    ResponseFunctionToolCall,
    ResponseStreamEvent,
)
from openai.types.responses.response import IncompleteDetails
from pydantic import TypeAdapter
from typer.testing import CliRunner

import agent.localmodel as localmodel
from agent import Agent, ResponseFailedError
from agent import _cli as cli
from agent.localmodel import (
    AutoPolicy,
    Fault,
    Item,
    LocalModelServer,
    ResponseRequest,
    ScriptPolicy,
    create_app,
    demo_script,
    example_arguments,
)
from agent.localmodel._server import _bind
from agent.localmodel._validation import parse_request
from tests._support import CONFORMANCE, FAST_RETRY

EVENT = TypeAdapter[Any](ResponseStreamEvent)
AUTH = {"authorization": "Bearer test-key"}
WEATHER: Item = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather at a place.",
    "parameters": {
        "type": "object",
        "properties": {"location": {"type": "string"}, "unit": {"enum": ["C", "F"]}},
        "required": ["location"],
    },
}
CLOCK: Item = {
    "type": "function",
    "name": "clock",
    "parameters": {"type": "object", "properties": {}},
}


def user(text: str) -> Item:
    return {"role": "user", "content": text}


def call(call_id: str, name: str, arguments: str = "{}") -> Item:
    return {"type": "function_call", "call_id": call_id, "name": name, "arguments": arguments}


def output(call_id: str, text: str) -> Item:
    return {"type": "function_call_output", "call_id": call_id, "output": text}


def client_for(app: Any, **headers: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app)
    return httpx.AsyncClient(
        transport=transport, base_url="http://testserver/v1", headers={**AUTH, **headers}
    )


async def post(app: Any, body: Any, **headers: str) -> httpx.Response:
    async with client_for(app, **headers) as client:
        if isinstance(body, bytes):
            return await client.post("/responses", content=body)
        return await client.post("/responses", json=body)


async def answer(app: Any, body: Item, **headers: str) -> Item:
    """POST, expect 200, check the body against the official Response model."""
    response = await post(app, body, **headers)
    assert response.status_code == 200, response.text
    result: Item = response.json()
    Response.model_validate(result)
    return result


def sse(text: str) -> list[tuple[str, Item]]:
    """(event name, data) for each Server-Sent Event."""
    events = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((fields["event"], json.loads(fields["data"])))
    return events


def script(*turns: list[Item]) -> ScriptPolicy:
    return ScriptPolicy(list(turns))


# --- public surface -----------------------------------------------------------------------------


def test_public_names_are_exactly_all() -> None:
    """The package exports exactly the documented names."""
    public = {name for name in dir(localmodel) if not name.startswith("_")}
    assert set(localmodel.__all__) == public


# --- AutoPolicy ---------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_auto_first_turn_calls_every_tool_in_parallel() -> None:
    """AutoPolicy's first reply calls each offered tool once, all in one response."""
    body = await answer(create_app(AutoPolicy()), {"model": "m", "input": "hi", "tools": [WEATHER, CLOCK]})
    calls = [(item["name"], json.loads(item["arguments"])) for item in body["output"]]
    assert calls == [("get_weather", {"location": "example", "unit": "C"}), ("clock", {})]


@pytest.mark.parametrize(
    ("schema", "expected"),
    [
        ({"properties": {"n": {"type": "integer", "default": 5}}}, {"n": 5}),
        ({"properties": {"u": {"type": "string", "enum": ["C", "F"]}}}, {"u": "C"}),
        ({"properties": {"q": {"type": "string", "examples": ["Paris"]}}}, {"q": "Paris"}),
        ({"properties": {"n": {"type": "integer", "minimum": 3}}, "required": ["n"]}, {"n": 3}),
        ({"properties": {"q": {"type": "string"}}}, {}),
        (
            {
                "properties": {
                    "s": {"type": "string"},
                    "x": {"type": "number"},
                    "b": {"type": "boolean"},
                    "a": {"type": "array", "items": {"type": "string"}},
                },
                "required": ["s", "x", "b", "a"],
            },
            {"s": "example", "x": 1, "b": True, "a": []},
        ),
        (
            {
                "properties": {
                    "p": {"type": "object", "properties": {"x": {"type": "number"}}, "required": ["x"]}
                },
                "required": ["p"],
            },
            {"p": {"x": 1}},
        ),
        (
            {
                "$defs": {"Unit": {"enum": ["K", "C"]}},
                "properties": {"unit": {"$ref": "#/$defs/Unit"}},
                "required": ["unit"],
            },
            {"unit": "K"},
        ),
        (
            {"properties": {"v": {"anyOf": [{"type": "integer"}, {"type": "null"}]}}, "required": ["v"]},
            {"v": 1},
        ),
        (None, {}),
    ],
    ids=["default", "enum", "examples", "minimum", "optional", "types", "nested", "ref", "anyof", "none"],
)
def test_auto_arguments_come_from_the_schema(schema: Item | None, expected: Item) -> None:
    """Arguments use defaults, enums, examples and minimums, else a value of the type."""
    assert example_arguments(schema) == expected


@pytest.mark.asyncio
async def test_auto_second_turn_reports_each_output() -> None:
    """After the outputs come back, AutoPolicy answers with one `name: output` line per call."""
    app = create_app(AutoPolicy())
    first = await answer(app, {"model": "m", "input": "hi", "tools": [WEATHER, CLOCK]})
    replies = {"get_weather": "sunny", "clock": "noon"}
    history = [user("hi"), *first["output"]]
    history += [output(item["call_id"], replies[item["name"]]) for item in first["output"]]
    second = await answer(app, {"model": "m", "input": history, "tools": [WEATHER, CLOCK]})
    assert second["output"][0]["content"][0]["text"] == "get_weather: sunny\nclock: noon"


@pytest.mark.asyncio
async def test_auto_without_tools_echoes_the_last_user_message() -> None:
    """With no tools offered, AutoPolicy echoes what the user said."""
    body = await answer(create_app(AutoPolicy()), {"model": "m", "input": [user("a"), user("b")]})
    assert body["output"][0]["content"][0]["text"] == "b"


def test_auto_calls_one_tool_per_turn_without_parallel_tool_calls() -> None:
    """With parallel_tool_calls false, AutoPolicy calls the tools one reply at a time."""
    request = ResponseRequest(
        model="m",
        input=(user("hi"), call("c1", "get_weather"), output("c1", "sunny")),
        tools=(WEATHER, CLOCK),
        parallel_tool_calls=False,
    )
    assert [item["name"] for item in AutoPolicy().respond(request)] == ["clock"]


# --- ScriptPolicy -------------------------------------------------------------------------------


def test_script_fills_output_placeholders() -> None:
    """`{{output:ID}}`, `{{output:NAME}}` and `{{outputs}}` quote the received tool outputs."""
    policy = script(
        [],
        [{"type": "message", "content": "{{output:c1}}|{{output:clock}}|{{outputs}}|{{output:x}}"}],
    )
    request = ResponseRequest(
        model="m",
        input=(call("c1", "get_weather"), call("c2", "clock"), output("c1", "sunny"), output("c2", "noon")),
    )
    assert policy.respond(request)[0]["content"] == "sunny|noon|sunny\nnoon|<no output for x>"


def test_script_placeholders_reach_into_json_outputs() -> None:
    """`{{output:ID.field.0}}` quotes one field of a JSON output; a missing one says so."""
    policy = script(
        [],
        [{"type": "message", "content": "{{output:c1.result}}|{{output:c1.numbers.1}}|{{output:c1.nope}}"}],
    )
    request = ResponseRequest(
        model="m",
        input=(call("c1", "calc"), output("c1", '{"result": 580.2, "numbers": [4, 8]}')),
    )
    assert policy.respond(request)[0]["content"] == "580.2|8|<no output for c1.nope>"


@pytest.mark.asyncio
async def test_script_turn_is_the_number_of_output_rounds() -> None:
    """The turn played is the count of tool-output rounds in the resent history."""
    app = create_app(
        script([call("c1", "clock")], [call("c2", "clock")], [{"type": "message", "content": "done"}])
    )
    history = [user("go"), call("c1", "clock"), output("c1", "1"), call("c2", "clock"), output("c2", "2")]
    body = await answer(app, {"model": "m", "input": history})
    assert body["output"][0]["content"][0]["text"] == "done"


def test_script_from_file_reads_turns(tmp_path: Path) -> None:
    """A transcript file `{"turns": [{"output": [...]}]}` loads into a ScriptPolicy."""
    path = tmp_path / "script.json"
    path.write_text(json.dumps({"turns": [{"output": [{"type": "message", "content": "hi"}]}]}))
    assert ScriptPolicy.from_file(path).turns == [[{"type": "message", "content": "hi"}]]


def test_script_rejects_a_call_id_scripted_twice() -> None:
    """A call id used in two turns would make the follow-up invalid, so it is refused up front."""
    with pytest.raises(ValueError, match="scripted twice"):
        script([call("c1", "clock")], [call("c1", "clock")])


@pytest.mark.asyncio
async def test_script_exhausted_is_a_server_error() -> None:
    """A conversation longer than the script gets a 500 that says so."""
    app = create_app(script([call("c1", "clock")]))
    response = await post(app, {"model": "m", "input": [user("go"), call("c1", "clock"), output("c1", "1")]})
    assert (response.status_code, response.json()["error"]["type"]) == (500, "server_error")
    assert "ScriptExhaustedError" in response.json()["error"]["message"]


@pytest.mark.asyncio
async def test_demo_script_reproduces_the_parallel_scenario() -> None:
    """The demo calls the four tools in parallel, then quotes fields of their four outputs."""
    app = create_app(demo_script())
    first = await answer(app, {"model": "m", "input": "do four things"})
    calls = {item["name"]: json.loads(item["arguments"]) for item in first["output"]}
    assert calls == {
        "current_time": {},
        "system_info": {},
        "math_calculator": {"a": 123.5, "b": 456.7, "operation": "add"},
        "random_generator": {"min": 1, "max": 100, "count": 3},
    }
    results = {
        "current_time": {"local_time": "T-local", "timezone": "Z", "utc_time": "T-utc"},
        "system_info": {"os": "OS", "os_release": "R", "architecture": "A", "cpu_count": 2},
        "math_calculator": {"result": 580.2},
        "random_generator": {"numbers": [7, 8, 9]},
    }
    outputs = [output(item["call_id"], json.dumps(results[item["name"]])) for item in first["output"]]
    second = await answer(app, {"model": "m", "previous_response_id": first["id"], "input": outputs})
    text = second["output"][0]["content"][0]["text"]
    for part in ("T-local", "T-utc", "OS R on A, 2 CPUs", "123.5 + 456.7 = 580.2", "[7, 8, 9]"):
        assert part in text


# --- conversation state -------------------------------------------------------------------------


class Recorder:
    """A policy that remembers the requests it saw and answers with a fixed message."""

    def __init__(self) -> None:
        self.seen: list[ResponseRequest] = []

    def respond(self, request: ResponseRequest) -> list[Item]:
        self.seen.append(request)
        if request.rounds == 0:
            return [call(f"call_{len(self.seen)}", "clock")]
        return [{"type": "message", "content": "ok"}]


@pytest.mark.asyncio
async def test_previous_response_id_rebuilds_the_conversation() -> None:
    """A follow-up with only outputs and previous_response_id sees inputs, outputs, new input."""
    recorder = Recorder()
    app = create_app(recorder)
    first = await answer(app, {"model": "m", "input": "hi"})
    follow_up = output(first["output"][0]["call_id"], "noon")
    second = await answer(app, {"model": "m", "previous_response_id": first["id"], "input": [follow_up]})
    assert second["previous_response_id"] == first["id"]
    conversation = recorder.seen[1].input
    assert [item["type"] for item in conversation] == ["message", "function_call", "function_call_output"]


@pytest.mark.asyncio
async def test_store_false_responses_cannot_be_continued() -> None:
    """A response made with store false is not found by previous_response_id."""
    app = create_app(AutoPolicy())
    first = await answer(app, {"model": "m", "input": "hi", "store": False})
    response = await post(app, {"model": "m", "input": "again", "previous_response_id": first["id"]})
    assert response.json()["error"]["code"] == "previous_response_not_found"


@pytest.mark.asyncio
async def test_concurrent_conversations_are_independent() -> None:
    """Many conversations at once on one app each get their own replay and their own quotes."""
    app = create_app(script([call("c1", "clock")], [{"type": "message", "content": "{{outputs}}"}]))
    results: dict[int, str] = {}

    async def converse(number: int) -> None:
        first = await answer(app, {"model": "m", "input": f"hi {number}"})
        reply = output("c1", f"answer {number}")
        second = await answer(app, {"model": "m", "previous_response_id": first["id"], "input": [reply]})
        results[number] = second["output"][0]["content"][0]["text"]

    async with anyio.create_task_group() as group:
        for number in range(20):
            group.start_soon(converse, number)
    assert results == {number: f"answer {number}" for number in range(20)}


@pytest.mark.asyncio
async def test_stored_responses_can_be_retrieved() -> None:
    """GET /v1/responses/{id} returns the stored response; an unknown id is a JSON 404."""
    app = create_app(AutoPolicy())
    body = await answer(app, {"model": "m", "input": "hi"})
    async with client_for(app) as client:
        found = await client.get(f"/responses/{body['id']}")
        missing = await client.get("/responses/resp_nope")
    assert (found.json(), missing.status_code) == (body, 404)


async def stored(app: Any, response_id: str) -> bool:
    async with client_for(app) as client:
        return (await client.get(f"/responses/{response_id}")).status_code == 200


@pytest.mark.asyncio
async def test_store_evicts_the_least_recently_used_past_max_stored_bytes() -> None:
    """Past `max_stored_bytes`, the least recently used response goes, though the count allows more."""
    app = create_app(AutoPolicy(), max_stored_bytes=12_000)
    first = await answer(app, {"model": "m", "input": "a" * 3_000})
    second = await answer(app, {"model": "m", "input": "b" * 3_000})
    assert (await stored(app, first["id"]), await stored(app, second["id"])) == (False, True)


@pytest.mark.asyncio
async def test_store_keeps_the_newest_response_even_over_max_stored_bytes() -> None:
    """A response larger than the whole byte budget is still kept, so it can be continued."""
    app = create_app(AutoPolicy(), max_stored_bytes=1_000)
    body = await answer(app, {"model": "m", "input": "a" * 3_000})
    assert await stored(app, body["id"])


# --- validation ---------------------------------------------------------------------------------

BAD_REQUESTS = [
    ("missing-model", {"input": "x"}, "model", "missing_required_parameter"),
    ("model-type", {"model": 3, "input": "x"}, "model", "invalid_type"),
    ("model-empty", {"model": "", "input": "x"}, "model", "empty_string"),
    ("missing-input", {"model": "m"}, "input", "missing_required_parameter"),
    ("input-type", {"model": "m", "input": {"a": 1}}, "input", "invalid_type"),
    ("item-type", {"model": "m", "input": ["x"]}, "input[0]", "invalid_type"),
    ("role", {"model": "m", "input": [{"role": "bot", "content": "x"}]}, "input[0].role", "invalid_value"),
    (
        "unknown-previous",
        {"model": "m", "input": "x", "previous_response_id": "resp_x"},
        "previous_response_id",
        "previous_response_not_found",
    ),
    ("call-without-output", {"model": "m", "input": [user("x"), call("c1", "f")]}, "input", None),
    ("output-without-call", {"model": "m", "input": [user("x"), output("c9", "o")]}, "input", None),
    (
        "duplicate-call-id",
        {"model": "m", "input": [call("c1", "f"), call("c1", "f"), output("c1", "o")]},
        "input",
        None,
    ),
    (
        "duplicate-output",
        {"model": "m", "input": [call("c1", "f"), output("c1", "o"), output("c1", "o")]},
        "input",
        None,
    ),
    ("tools-type", {"model": "m", "input": "x", "tools": {}}, "tools", "invalid_type"),
    (
        "tool-kind",
        {"model": "m", "input": "x", "tools": [{"type": "web_search"}]},
        "tools[0].type",
        "invalid_value",
    ),
    (
        "tool-name",
        {"model": "m", "input": "x", "tools": [{**CLOCK, "name": "a b"}]},
        "tools[0].name",
        "invalid_value",
    ),
    (
        "tool-no-parameters",
        {"model": "m", "input": "x", "tools": [{"type": "function", "name": "f"}]},
        "tools[0].parameters",
        "missing_required_parameter",
    ),
    (
        "tool-parameters-type",
        {"model": "m", "input": "x", "tools": [{**CLOCK, "parameters": []}]},
        "tools[0].parameters",
        "invalid_type",
    ),
    (
        "tool-schema-not-object",
        {"model": "m", "input": "x", "tools": [{**CLOCK, "parameters": {"type": "string"}}]},
        "tools[0].parameters",
        "invalid_function_parameters",
    ),
    (
        "tool-choice-unknown",
        {"model": "m", "input": "x", "tools": [CLOCK], "tool_choice": {"type": "function", "name": "f"}},
        "tool_choice",
        None,
    ),
    (
        "temperature",
        {"model": "m", "input": "x", "temperature": -1},
        "temperature",
        "decimal_below_min_value",
    ),
    ("stream-type", {"model": "m", "input": "x", "stream": "yes"}, "stream", "invalid_type"),
    ("metadata-value", {"model": "m", "input": "x", "metadata": {"k": 1}}, "metadata.k", "invalid_type"),
    (
        "metadata-17-keys",
        {"model": "m", "input": "x", "metadata": {f"k{n}": "v" for n in range(17)}},
        "metadata",
        "object_above_max_properties",
    ),
    (
        "metadata-key-65",
        {"model": "m", "input": "x", "metadata": {"k" * 65: "v"}},
        "metadata",
        "string_above_max_length",
    ),
    (
        "metadata-value-513",
        {"model": "m", "input": "x", "metadata": {"k": "v" * 513}},
        "metadata.k",
        "string_above_max_length",
    ),
    (
        "top-logprobs-21",
        {"model": "m", "input": "x", "top_logprobs": 21},
        "top_logprobs",
        "integer_above_max_value",
    ),
    (
        "top-logprobs-negative",
        {"model": "m", "input": "x", "top_logprobs": -1},
        "top_logprobs",
        "integer_below_min_value",
    ),
    ("top-logprobs-type", {"model": "m", "input": "x", "top_logprobs": 1.5}, "top_logprobs", "invalid_type"),
    (
        "temperature-huge-integer",
        {"model": "m", "input": "x", "temperature": 10**400},
        "temperature",
        "decimal_above_max_value",
    ),
    (
        "allowed-tools-mode",
        {
            "model": "m",
            "input": "x",
            "tools": [CLOCK],
            "tool_choice": {"type": "allowed_tools", "mode": "sometimes", "tools": []},
        },
        "tool_choice.mode",
        "invalid_value",
    ),
]


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("body", "param", "code"),
    [case[1:] for case in BAD_REQUESTS],
    ids=[case[0] for case in BAD_REQUESTS],
)
async def test_invalid_requests_get_openai_400s(body: Item, param: str, code: str | None) -> None:
    """Each malformed request is a 400 invalid_request_error naming the parameter at fault."""
    response = await post(create_app(AutoPolicy()), body)
    error = response.json()["error"]
    assert (response.status_code, error["type"], error["param"], error["code"]) == (
        400,
        "invalid_request_error",
        param,
        code,
    )


@pytest.mark.asyncio
async def test_unanswered_call_message_matches_openai() -> None:
    """A function call left without output gets OpenAI's own message."""
    response = await post(create_app(AutoPolicy()), {"model": "m", "input": [user("x"), call("call_x", "f")]})
    assert response.json()["error"]["message"] == "No tool output found for function call call_x."


@pytest.mark.asyncio
async def test_non_json_body_is_rejected() -> None:
    """A body that is not JSON is a 400 invalid_request_error."""
    response = await post(create_app(AutoPolicy()), b"{not json")
    assert (response.status_code, response.json()["error"]["type"]) == (400, "invalid_request_error")


@pytest.mark.asyncio
@pytest.mark.parametrize("number", [b"NaN", b"Infinity", b"-Infinity", b"1e999"])
async def test_non_finite_numbers_are_not_json(number: bytes) -> None:
    """NaN, Infinity and overflowing numbers get the 400 for unparseable JSON, not a 500."""
    body = b'{"model": "m", "input": "x", "temperature": ' + number + b"}"
    response = await post(create_app(AutoPolicy()), body)
    error = response.json()["error"]
    assert (response.status_code, error["message"].startswith("We could not parse the JSON body")) == (
        400,
        True,
    )


@pytest.mark.asyncio
async def test_tool_parameters_may_be_null() -> None:
    """`parameters: null` is accepted (openai's FunctionToolParam allows it); the call gets `{}`."""
    tool = {"type": "function", "name": "ping", "parameters": None, "strict": None}
    body = await answer(create_app(AutoPolicy()), {"model": "m", "input": "x", "tools": [tool]})
    assert [(item["name"], item["arguments"]) for item in body["output"]] == [("ping", "{}")]


@pytest.mark.asyncio
async def test_allowed_tools_choice_limits_the_calls() -> None:
    """An `allowed_tools` tool choice is accepted, and AutoPolicy calls only the tools it names."""
    choice = {"type": "allowed_tools", "mode": "auto", "tools": [{"type": "function", "name": "clock"}]}
    request = {"model": "m", "input": "x", "tools": [WEATHER, CLOCK], "tool_choice": choice}
    body = await answer(create_app(AutoPolicy()), request)
    assert ([item["name"] for item in body["output"]], body["tool_choice"]) == (["clock"], choice)


@pytest.mark.asyncio
async def test_unknown_path_is_a_json_404() -> None:
    """An unknown path gets the API's JSON error, not plain text."""
    async with client_for(create_app(AutoPolicy())) as client:
        response = await client.post("/chat/completions", json={})
    assert (response.status_code, response.json()["error"]["message"]) == (
        404,
        "Invalid URL (POST /v1/chat/completions)",
    )


@pytest.mark.asyncio
async def test_wrong_method_is_a_json_405() -> None:
    """GET on the create endpoint is a 405 with a JSON error."""
    async with client_for(create_app(AutoPolicy())) as client:
        response = await client.get("/responses")
    assert (response.status_code, response.json()["error"]["type"]) == (405, "invalid_request_error")


# --- conformance with recorded traffic ----------------------------------------------------------

RECORDINGS = CONFORMANCE / "responses"


def recorded_exchanges() -> list[tuple[str, int, Item]]:
    """(file, exchange index, exchange) of every recorded request."""
    found = []
    for path in sorted(RECORDINGS.glob("*.json")):
        exchanges = json.loads(path.read_text())["exchanges"]
        found += [(path.name, index, ex) for index, ex in enumerate(exchanges) if ex["request"]]
    return found


def recorded_history(file: str) -> dict[str, list[Item]]:
    """Each recorded response id mapped to the conversation a continuation of it starts from."""
    history: dict[str, list[Item]] = {}
    for name, _, exchange in recorded_exchanges():
        response = exchange.get("response") or {}
        if name == file and "output" in response:
            request_input = exchange["request"]["input"]
            previous = history.get(exchange["request"].get("previous_response_id") or "", [])
            history[response["id"]] = [*previous, *request_input, *response["output"]]
    return history


@pytest.mark.parametrize(
    ("file", "exchange"),
    [(name, ex) for name, _, ex in recorded_exchanges() if ex["status"] == 200],
    ids=[f"{name}#{index}" for name, index, ex in recorded_exchanges() if ex["status"] == 200],
)
def test_requests_the_real_api_accepted_are_accepted(file: str, exchange: Item) -> None:
    """Every recorded request that OpenAI answered with 200 passes this server's validation."""
    parse_request(exchange["request"], recorded_history(file).get)


@pytest.mark.asyncio
@pytest.mark.skipif(not RECORDINGS.is_dir(), reason="../shared/conformance is not beside the repo")
@pytest.mark.parametrize(
    "file",
    [
        "pydantic-ai-error-400-invalid-temperature-stream.json",
        "mirascope-error-400-invalid-function-schema.json",
    ],
)
async def test_recorded_400s_are_answered_word_for_word(file: str) -> None:
    """Requests OpenAI refused get the very same status and error body here."""
    [exchange] = [ex for name, _, ex in recorded_exchanges() if name == file and ex["status"] == 400]
    response = await post(create_app(AutoPolicy()), exchange["request"])
    assert (response.status_code, response.json()) == (400, exchange["response"])


# --- authentication -----------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_missing_api_key_is_a_401() -> None:
    """A request without a bearer key is refused, as the real API does."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(create_app(AutoPolicy()))) as client:
        response = await client.post("http://testserver/v1/responses", json={"model": "m", "input": "x"})
    assert (response.status_code, response.json()["error"]["code"]) == (401, None)


@pytest.mark.asyncio
async def test_wrong_api_key_is_an_invalid_api_key_401() -> None:
    """With api_key set, another key gets the recorded invalid_api_key answer."""
    response = await post(create_app(AutoPolicy(), api_key="right"), {"model": "m", "input": "x"})
    error = response.json()["error"]
    assert (response.status_code, error["type"], error["code"]) == (
        401,
        "invalid_request_error",
        "invalid_api_key",
    )
    assert error["message"].startswith("Incorrect API key provided:")


@pytest.mark.asyncio
async def test_configured_api_key_is_accepted() -> None:
    """With api_key set, that key is accepted."""
    app = create_app(AutoPolicy(), api_key="test-key")
    assert (await post(app, {"model": "m", "input": "x"})).status_code == 200


# --- response shape -----------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_response_echoes_the_request_settings() -> None:
    """Model, instructions, metadata, tool settings and tools are echoed like the API does."""
    request = {
        "model": "gpt-local",
        "input": "x",
        "instructions": "be brief",
        "metadata": {"k": "v"},
        "tools": [CLOCK],
        "tool_choice": "required",
        "parallel_tool_calls": False,
    }
    body = await answer(create_app(AutoPolicy()), request)
    echoed = {
        key: body[key] for key in ("model", "instructions", "metadata", "tool_choice", "parallel_tool_calls")
    }
    assert echoed == {key: request[key] for key in echoed}
    assert [tool["name"] for tool in body["tools"]] == ["clock"]


@pytest.mark.asyncio
async def test_usage_is_present_and_adds_up() -> None:
    """Usage carries input, output and total tokens with their details."""
    usage = (await answer(create_app(AutoPolicy()), {"model": "m", "input": "hello there"}))["usage"]
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"] > 0
    assert (
        usage["input_tokens_details"]["cached_tokens"],
        usage["output_tokens_details"]["reasoning_tokens"],
    ) == (0, 0)


@pytest.mark.asyncio
async def test_ids_are_unique_and_prefixed() -> None:
    """Response, item and call ids never repeat and use OpenAI's prefixes."""
    app = create_app(AutoPolicy())
    bodies = [await answer(app, {"model": "m", "input": "x", "tools": [WEATHER, CLOCK]}) for _ in range(10)]
    ids = [body["id"] for body in bodies] + [item["id"] for body in bodies for item in body["output"]]
    call_ids = [item["call_id"] for body in bodies for item in body["output"]]
    assert len(set(ids + call_ids)) == 50
    assert all(i.startswith(("resp_", "fc_")) for i in ids)
    assert all(c.startswith("call_") for c in call_ids)


@pytest.mark.asyncio
async def test_seeded_apps_hand_out_the_same_ids() -> None:
    """Two apps with the same seed produce the same ids."""
    bodies = [await answer(create_app(AutoPolicy(), seed=7), {"model": "m", "input": "x"}) for _ in range(2)]
    assert bodies[0]["id"] == bodies[1]["id"]


@pytest.mark.asyncio
async def test_ids_have_the_api_formats() -> None:
    """Ids are prefixed hex (48 digits, 32 for request ids); call ids are 24 letters and digits."""
    async with client_for(create_app(AutoPolicy())) as client:
        response = await client.post("/responses", json={"model": "m", "input": "x", "tools": [WEATHER]})
    body = response.json()
    shapes = [
        (r"resp_[0-9a-f]{48}", body["id"]),
        (r"fc_[0-9a-f]{48}", body["output"][0]["id"]),
        (r"call_[A-Za-z0-9]{24}", body["output"][0]["call_id"]),
        (r"req_[0-9a-f]{32}", response.headers["x-request-id"]),
    ]
    mismatched = [value for pattern, value in shapes if re.fullmatch(pattern, value) is None]
    assert not mismatched


@pytest.mark.asyncio
async def test_seeded_ids_stay_the_same_across_versions() -> None:
    """A seed keeps handing out the ids it always has, so recorded demo transcripts still match."""
    async with client_for(create_app(AutoPolicy(), seed=7)) as client:
        response = await client.post("/responses", json={"model": "m", "input": "x", "tools": [WEATHER]})
    body = response.json()
    expected = [
        "fc_a4c123b1612dd272d1371c17149d439536b3216fdaeeb975",
        "call_SXpfKtHF4vUCsMehGAkWvj7F",
        "resp_d12aabfe228f219e9cb0eb53f16947ccf25ec84d8dbc7425",
        "req_4770f58904dba41ecccc3fc1626e53a1",
    ]
    call = body["output"][0]
    assert expected == [call["id"], call["call_id"], body["id"], response.headers["x-request-id"]]


@pytest.mark.asyncio
async def test_invalid_policy_output_is_a_server_error() -> None:
    """A policy item of an unknown type is a 500 naming the problem."""
    response = await post(create_app(script([{"type": "banana"}])), {"model": "m", "input": "x"})
    assert (response.status_code, "banana" in response.json()["error"]["message"]) == (500, True)


# --- faults -------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_status_fault_429_sends_retry_headers() -> None:
    """`status=429;retry_after=0.2` answers 429 rate_limit_exceeded with retry-after headers."""
    response = await post(
        create_app(AutoPolicy()),
        {"model": "m", "input": "x"},
        **{"x-localmodel-fault": "status=429;retry_after=0.2"},
    )
    assert (response.status_code, response.json()["error"]["code"]) == (429, "rate_limit_exceeded")
    assert (response.headers["retry-after"], response.headers["retry-after-ms"]) == ("0.2", "200")


@pytest.mark.asyncio
async def test_status_fault_500_is_a_server_error() -> None:
    """`status=500` answers 500 with a server_error body."""
    response = await post(
        create_app(AutoPolicy()), {"model": "m", "input": "x"}, **{"x-localmodel-fault": "status=500"}
    )
    assert (response.status_code, response.json()["error"]["type"]) == (500, "server_error")


@pytest.mark.asyncio
async def test_fault_from_metadata() -> None:
    """`metadata.localmodel_fault` injects a fault like the header does."""
    body = {"model": "m", "input": "x", "metadata": {"localmodel_fault": "status=503"}}
    assert (await post(create_app(AutoPolicy()), body)).status_code == 503


@pytest.mark.asyncio
async def test_fault_plan_is_consumed_one_per_request() -> None:
    """A server fault plan fails the first requests in order, then serves normally."""
    app = create_app(AutoPolicy(), faults=[Fault(status=503), Fault(status=429)])
    statuses = [(await post(app, {"model": "m", "input": "x"})).status_code for _ in range(3)]
    assert statuses == [503, 429, 200]


@pytest.mark.asyncio
async def test_delay_fault_postpones_the_answer() -> None:
    """`delay=0.2` answers no sooner than 0.2 s later."""
    started = time.perf_counter()
    response = await post(
        create_app(AutoPolicy()), {"model": "m", "input": "x"}, **{"x-localmodel-fault": "delay=0.2"}
    )
    assert (response.status_code, time.perf_counter() - started >= 0.2) == (200, True)


@pytest.mark.asyncio
async def test_malformed_fault_answers_200_with_a_non_json_body() -> None:
    """`malformed` answers 200 with a body that does not parse."""
    response = await post(
        create_app(AutoPolicy()), {"model": "m", "input": "x"}, **{"x-localmodel-fault": "malformed"}
    )
    assert response.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        response.json()


@pytest.mark.asyncio
async def test_malformed_fault_on_a_stream_sends_a_non_json_event() -> None:
    """`malformed` on a stream sends an event whose data does not parse."""
    body = {"model": "m", "input": "x", "stream": True}
    response = await post(create_app(AutoPolicy()), body, **{"x-localmodel-fault": "malformed"})
    with pytest.raises(json.JSONDecodeError):
        sse(response.text)


@pytest.mark.asyncio
async def test_invalid_fault_spec_is_a_400() -> None:
    """An unreadable fault header is refused rather than ignored."""
    response = await post(
        create_app(AutoPolicy()), {"model": "m", "input": "x"}, **{"x-localmodel-fault": "explode"}
    )
    assert (response.status_code, "unknown fault" in response.json()["error"]["message"]) == (400, True)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("status=429;retry_after=0.2", Fault(status=429, retry_after=0.2)),
        ("drop", Fault(drop=True)),
        ("delay=0.5; malformed", Fault(delay=0.5, malformed=True)),
        ("truncate;stream_delay=0.3", Fault(truncate=True, stream_delay=0.3)),
        ("fail=server_error", Fault(fail="server_error")),
        ("incomplete=max_output_tokens", Fault(incomplete="max_output_tokens")),
        ("", Fault()),
    ],
)
def test_fault_text_form_parses(spec: str, expected: Fault) -> None:
    """The header and metadata text form reads into the same Fault."""
    assert Fault.parse(spec) == expected


@pytest.mark.parametrize(
    "spec",
    [
        "status=200",
        "delay=-1",
        "status=abc",
        "explode",
        "drop=1",
        "fail",
        "fail=two words",
        "fail=server_error;incomplete=content_filter",
    ],
)
def test_fault_text_form_rejects_nonsense(spec: str) -> None:
    """Bad statuses, negative delays and unknown keys are errors, not silently ignored."""
    with pytest.raises(ValueError):  # noqa: PT011 - the message varies with the mistake
        Fault.parse(spec)


@pytest.mark.asyncio
async def test_drop_fault_in_process_raises_what_httpx_raises() -> None:
    """In-process there is no socket: `drop` surfaces as httpx.RemoteProtocolError."""
    with pytest.raises(httpx.RemoteProtocolError):
        await post(create_app(AutoPolicy()), {"model": "m", "input": "x"}, **{"x-localmodel-fault": "drop"})


def test_drop_fault_closes_the_socket_without_a_response() -> None:
    """Over a socket, `drop` closes the connection with no response; the server keeps serving."""
    with LocalModelServer(AutoPolicy()) as server, httpx.Client(headers=AUTH) as client:
        url = f"{server.base_url}/responses"
        with pytest.raises(httpx.RemoteProtocolError):
            client.post(url, json={"model": "m", "input": "x"}, headers={"x-localmodel-fault": "drop"})
        assert client.post(url, json={"model": "m", "input": "x"}).status_code == 200


# --- streaming ----------------------------------------------------------------------------------

MIXED_TURN: list[Item] = [
    {"type": "message", "content": "Let me check the clock for you now."},
    {"type": "function_call", "name": "clock", "arguments": {"zone": "UTC", "format": "iso"}},
]


async def stream(app: Any, **headers: str) -> list[tuple[str, Item]]:
    response = await post(app, {"model": "m", "input": "x", "stream": True}, **headers)
    assert response.headers["content-type"].startswith("text/event-stream")
    return sse(response.text)


@pytest.mark.asyncio
async def test_stream_follows_the_api_event_sequence() -> None:
    """A message then a call stream as created, in_progress, per-item events, completed."""
    names = [name for name, _ in await stream(create_app(script(MIXED_TURN)))]
    collapsed = [name for index, name in enumerate(names) if index == 0 or names[index - 1] != name]
    assert collapsed == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]


@pytest.mark.asyncio
@pytest.mark.parametrize("fault", ["", "incomplete=max_output_tokens"], ids=["completed", "incomplete"])
async def test_stream_events_validate_against_the_official_types(fault: str) -> None:
    """Every event parses as an openai ResponseStreamEvent and its type is its event name."""
    for name, data in await stream(create_app(script(MIXED_TURN)), **{"x-localmodel-fault": fault}):
        assert EVENT.validate_python(data).type == name


@pytest.mark.asyncio
async def test_stream_sequence_numbers_count_up_from_zero() -> None:
    """sequence_number is 0, 1, 2, ... across the whole stream."""
    events = await stream(create_app(script(MIXED_TURN)))
    assert [data["sequence_number"] for _, data in events] == list(range(len(events)))


@pytest.mark.asyncio
async def test_stream_deltas_join_into_the_done_values() -> None:
    """Argument and text deltas join into the `.done` values, in several chunks each."""
    events = await stream(create_app(script(MIXED_TURN)))

    def joined(kind: str) -> str:
        return "".join(data["delta"] for name, data in events if name == f"response.{kind}.delta")

    done = {name: data for name, data in events if name.endswith(".done")}
    assert joined("output_text") == done["response.output_text.done"]["text"]
    assert joined("function_call_arguments") == done["response.function_call_arguments.done"]["arguments"]
    assert sum(name.endswith("arguments.delta") for name, _ in events) > 1


@pytest.mark.asyncio
async def test_stream_completed_event_carries_the_stored_response() -> None:
    """response.completed holds the full response, the same one GET returns later."""
    app = create_app(script(MIXED_TURN))
    completed = (await stream(app))[-1][1]["response"]
    async with client_for(app) as client:
        stored = (await client.get(f"/responses/{completed['id']}")).json()
    assert (Response.model_validate(completed).status, stored) == ("completed", completed)


@pytest.mark.asyncio
async def test_stream_item_events_name_their_item() -> None:
    """Item events carry the output_index and item_id of the item they belong to."""
    events = await stream(create_app(script(MIXED_TURN)))
    items = {
        data["output_index"]: data["item"]["id"]
        for name, data in events
        if name == "response.output_item.done"
    }
    for _, data in events:
        if "item_id" in data:
            assert items[data["output_index"]] == data["item_id"]


@pytest.mark.asyncio
async def test_truncate_fault_ends_the_stream_after_the_first_item() -> None:
    """`truncate` stops after the first output item, without response.completed."""
    names = [
        name for name, _ in await stream(create_app(script(MIXED_TURN)), **{"x-localmodel-fault": "truncate"})
    ]
    assert (names[-1], "response.completed" in names) == ("response.output_item.done", False)


@pytest.mark.asyncio
async def test_stream_request_errors_are_plain_json() -> None:
    """A bad stream request is answered with a JSON 400, as recorded from the real API."""
    response = await post(
        create_app(AutoPolicy()), {"model": "m", "input": "x", "stream": True, "temperature": -1}
    )
    assert (response.status_code, response.json()["error"]["code"]) == (400, "decimal_below_min_value")


def test_stream_delay_separates_output_items() -> None:
    """With stream_delay, item 0 is done at least that long before item 1 starts."""
    body = {"model": "m", "input": "x", "stream": True}
    arrivals: dict[str, float] = {}
    with LocalModelServer(script(MIXED_TURN)) as server, httpx.Client(headers=AUTH) as client:
        headers = {"x-localmodel-fault": "stream_delay=0.2"}
        with client.stream("POST", f"{server.base_url}/responses", json=body, headers=headers) as response:
            for line in response.iter_lines():
                if line.startswith("event: "):
                    arrivals.setdefault(f"{line[7:]}#{len(arrivals)}", time.perf_counter())
    times = [at for name, at in arrivals.items() if "output_item" in name]
    first_done, second_added = times[1], times[2]
    assert second_added - first_done >= 0.15


# --- responses that fail or stop short (the fail and incomplete faults) --------------------------

FAIL = {"x-localmodel-fault": "fail=invalid_prompt"}
INCOMPLETE = {"x-localmodel-fault": "incomplete=max_output_tokens"}


@pytest.mark.asyncio
async def test_fail_fault_answers_200_with_a_failed_response() -> None:
    """`fail=CODE` answers 200 with status failed, that error code, and the output cut after one item."""
    body = await answer(create_app(script(MIXED_TURN)), {"model": "m", "input": "x"}, **FAIL)
    assert (body["status"], body["error"]["code"], len(body["output"])) == ("failed", "invalid_prompt", 1)


@pytest.mark.asyncio
async def test_fail_fault_stream_sends_an_error_event_then_response_failed() -> None:
    """Streaming, `fail=CODE` follows the first item with an `error` event, then response.failed."""
    events = await stream(create_app(script(MIXED_TURN)), **FAIL)
    tail = [(name, data.get("error", {}).get("code")) for name, data in events[-3:]]
    failed = Response.model_validate(events[-1][1]["response"])
    assert tail == [
        ("response.output_item.done", None),
        ("error", "invalid_prompt"),
        ("response.failed", None),
    ]
    assert (failed.status, failed.error and failed.error.code, len(failed.output)) == (
        "failed",
        "invalid_prompt",
        1,
    )


@pytest.mark.asyncio
async def test_incomplete_fault_answers_an_incomplete_response() -> None:
    """`incomplete=REASON` answers status incomplete with that reason, the output cut after one item."""
    body = await answer(create_app(script(MIXED_TURN)), {"model": "m", "input": "x"}, **INCOMPLETE)
    assert (body["status"], body["incomplete_details"], len(body["output"])) == (
        "incomplete",
        {"reason": "max_output_tokens"},
        1,
    )


@pytest.mark.asyncio
async def test_incomplete_fault_stream_ends_with_response_incomplete() -> None:
    """Streaming, `incomplete=REASON` ends with response.incomplete instead of response.completed."""
    events = await stream(create_app(script(MIXED_TURN)), **INCOMPLETE)
    last = Response.model_validate(events[-1][1]["response"])
    assert (events[-1][0], last.status, last.incomplete_details) == (
        "response.incomplete",
        "incomplete",
        IncompleteDetails(reason="max_output_tokens"),
    )


@pytest.mark.asyncio
@pytest.mark.parametrize("streamed", [False, True], ids=["json", "stream"])
async def test_agent_raises_response_failed_error_for_a_fail_fault(streamed: bool) -> None:
    """The agent surfaces `fail=CODE` as ResponseFailedError with that code."""
    async with (
        LocalModelServer(AutoPolicy(), faults=[Fault(fail="invalid_prompt")]) as server,
        Agent("gpt-local", base_url=server.base_url, api_key="local", retry=FAST_RETRY) as agent,
    ):
        with pytest.raises(ResponseFailedError) as failure:
            await agent.run("hi", stream=streamed)
    assert failure.value.code == "invalid_prompt"


@pytest.mark.asyncio
@pytest.mark.parametrize("streamed", [False, True], ids=["json", "stream"])
async def test_agent_result_is_incomplete_for_an_incomplete_fault(streamed: bool) -> None:
    """The agent ends the run normally on `incomplete=REASON`, with that status and reason."""
    async with (
        LocalModelServer(AutoPolicy(), faults=[Fault(incomplete="max_output_tokens")]) as server,
        Agent("gpt-local", base_url=server.base_url, api_key="local", retry=FAST_RETRY) as agent,
    ):
        result = await agent.run("hi", stream=streamed)
    assert (result.status, result.incomplete_reason, result.output) == (
        "incomplete",
        "max_output_tokens",
        "hi",
    )


# --- the official client ------------------------------------------------------------------------


def test_official_client_parses_a_reply() -> None:
    """openai.OpenAI().responses.create parses the reply and continues by previous_response_id."""
    with (
        LocalModelServer(AutoPolicy()) as server,
        openai.OpenAI(base_url=server.base_url, api_key="x") as client,
    ):
        first = client.responses.create(
            model="gpt-local", input="hi", tools=[cast("FunctionToolParam", WEATHER)]
        )
        tool_call = first.output[0]
        assert isinstance(tool_call, ResponseFunctionToolCall)
        second = client.responses.create(
            model="gpt-local",
            previous_response_id=first.id,
            input=[{"type": "function_call_output", "call_id": tool_call.call_id, "output": "sunny"}],
        )
    assert second.output_text == "get_weather: sunny"


def test_official_client_iterates_a_stream() -> None:
    """responses.create(stream=True) yields typed events ending in response.completed."""
    with (
        LocalModelServer(script(MIXED_TURN)) as server,
        openai.OpenAI(base_url=server.base_url, api_key="x") as client,
    ):
        events = list(client.responses.create(model="gpt-local", input="hi", stream=True))
    assert (events[0].type, events[-1].type) == ("response.created", "response.completed")


def test_official_stream_helper_rebuilds_the_final_response() -> None:
    """The client's responses.stream() accumulator rebuilds the same output from the events."""
    with (
        LocalModelServer(script(MIXED_TURN)) as server,
        openai.OpenAI(base_url=server.base_url, api_key="x") as client,
        client.responses.stream(model="gpt-local", input="hi") as events,
    ):
        final = events.get_final_response()
    assert (final.output_text, final.output[1].type) == (
        "Let me check the clock for you now.",
        "function_call",
    )


def test_official_client_retries_through_planned_failures() -> None:
    """Two planned 503s with retry-after are retried by the client, which then succeeds."""
    faults = [Fault(status=503, retry_after=0.01)] * 2
    with (
        LocalModelServer(AutoPolicy(), faults=faults) as server,
        openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=2) as client,
    ):
        reply = client.responses.create(model="gpt-local", input="hi")
        assert (reply.output_text, len(server.requests)) == ("hi", 3)


def test_official_client_sees_an_invalid_api_key() -> None:
    """A server with api_key set makes the official client raise AuthenticationError."""
    with (
        LocalModelServer(AutoPolicy(), api_key="right") as server,
        openai.OpenAI(base_url=server.base_url, api_key="wrong") as client,
        pytest.raises(openai.AuthenticationError),
    ):
        client.responses.create(model="gpt-local", input="hi")


# --- the server ---------------------------------------------------------------------------------


def test_server_stop_is_idempotent_and_joins_its_thread() -> None:
    """stop() twice is fine and leaves no server thread behind."""
    server = LocalModelServer(AutoPolicy()).start()
    server.stop()
    server.stop()
    assert [t.name for t in threading.enumerate() if t.name == "localmodel-server"] == []


def test_server_cannot_be_restarted() -> None:
    """A stopped server refuses to start again."""
    server = LocalModelServer(AutoPolicy())
    with server:
        pass
    with pytest.raises(RuntimeError, match="only once"):
        server.start()


def test_faults_can_be_queued_on_a_running_server() -> None:
    """add_faults() fails the next requests, then the server serves normally again."""
    with LocalModelServer(AutoPolicy()) as server, httpx.Client(headers=AUTH) as client:
        server.add_faults(Fault(status=502))
        statuses = [
            client.post(f"{server.base_url}/responses", json={"model": "m", "input": "x"}).status_code
            for _ in range(2)
        ]
    assert statuses == [502, 200]


def test_a_taken_port_fails_in_start() -> None:
    """Binding happens in start(), so a taken port raises there, in the caller's thread."""
    with LocalModelServer(AutoPolicy()) as first, pytest.raises(OSError, match="in use"):
        LocalModelServer(AutoPolicy(), port=first.port).start()


def test_server_records_request_bodies() -> None:
    """`requests` holds the JSON bodies received, oldest first."""
    with LocalModelServer(AutoPolicy()) as server, httpx.Client(headers=AUTH) as client:
        for text in ("a", "b"):
            client.post(f"{server.base_url}/responses", json={"model": "m", "input": text})
        assert [body["input"] for body in server.requests] == ["a", "b"]


def test_server_keeps_only_the_most_recent_request_bodies() -> None:
    """Past `max_requests`, the oldest bodies are dropped, so a long-running server stays bounded."""
    with LocalModelServer(AutoPolicy(), max_requests=2) as server, httpx.Client(headers=AUTH) as client:
        for text in ("a", "b", "c"):
            client.post(f"{server.base_url}/responses", json={"model": "m", "input": text})
        assert [body["input"] for body in server.requests] == ["b", "c"]


def test_server_request_bodies_are_copies() -> None:
    """Changing a body read from `requests` does not change what the next read returns."""
    with LocalModelServer(AutoPolicy()) as server, httpx.Client(headers=AUTH) as client:
        client.post(f"{server.base_url}/responses", json={"model": "m", "input": "a"})
        server.requests[0]["input"] = "changed"
        assert [body["input"] for body in server.requests] == ["a"]


async def roundtrip(text: str) -> str:
    async with LocalModelServer(AutoPolicy()) as server, httpx.AsyncClient(headers=AUTH) as client:
        response = await client.post(f"{server.base_url}/responses", json={"model": "m", "input": text})
    reply: str = response.json()["output"][0]["content"][0]["text"]
    return reply


@pytest.mark.asyncio
async def test_server_works_under_asyncio() -> None:
    """`async with LocalModelServer(...)` serves an asyncio client."""
    assert await roundtrip("asyncio") == "asyncio"


def test_server_works_under_trio() -> None:
    """`async with LocalModelServer(...)` serves a trio client."""
    assert trio.run(roundtrip, "trio") == "trio"


def server_threads() -> list[str]:
    return [thread.name for thread in threading.enumerate() if thread.name == "localmodel-server"]


class CancelledWhileStarting(LocalModelServer):
    """Cancels the caller's scope from inside `start()`, as a timeout expiring mid-start does."""

    def __init__(self, scope: anyio.CancelScope) -> None:
        super().__init__(AutoPolicy())
        self.scope = scope

    def start(self) -> Self:
        super().start()
        anyio.from_thread.run_sync(self.scope.cancel)
        return self


async def cancel_while_starting() -> None:
    scope = anyio.CancelScope()
    with scope:
        async with CancelledWhileStarting(scope):
            await anyio.sleep_forever()


async def cancel_while_serving() -> None:
    with anyio.CancelScope() as scope:
        async with LocalModelServer(AutoPolicy()):
            scope.cancel()
            await anyio.sleep_forever()


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_async_start_cancelled_midway_leaves_no_server_running(backend: str) -> None:
    """`async with` cancelled while the server starts stops the server it started."""
    anyio.run(cancel_while_starting, backend=backend)
    assert server_threads() == []


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_async_with_cancelled_while_serving_still_stops_the_server(backend: str) -> None:
    """A cancelled `async with` body still stops the server on the way out."""
    anyio.run(cancel_while_serving, backend=backend)
    assert server_threads() == []


def test_bind_listens_so_its_port_is_taken_at_once() -> None:
    """`_bind` returns a listening socket: a second bind of that port fails, even with SO_REUSEADDR."""
    with _bind("127.0.0.1", 0) as first, pytest.raises(OSError, match="in use"):
        _bind("127.0.0.1", first.getsockname()[1])


# --- agent serve-local ----------------------------------------------------------------------------


@contextlib.contextmanager
def serve_local(*options: str) -> Iterator[str]:
    """`python -m agent serve-local OPTIONS` in a process; yields the URL it announces."""
    env = {
        k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE")
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "agent", "serve-local", *options],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**env, "NO_COLOR": "1", "COLUMNS": "200"},
    )
    assert process.stderr is not None
    try:
        for line in process.stderr:
            if line.startswith("local model server (not AI) on "):
                yield line.split()[6]
                return
        pytest.fail("serve-local exited without announcing its URL")
    finally:
        process.terminate()
        process.wait(timeout=15)
        process.stderr.close()


def test_serve_local_announces_its_url_once_it_accepts_requests() -> None:
    """The announced URL (with the real port for --port 0) answers as soon as the line is printed."""
    with serve_local("--port", "0") as url:
        response = httpx.post(f"{url}/responses", json={"model": "m", "input": "x"}, headers=AUTH)
    assert (url.startswith("http://127.0.0.1:"), url.endswith(":0/v1"), response.status_code) == (
        True,
        False,
        200,
    )


def test_serve_local_announces_an_ipv6_host_in_brackets() -> None:
    """With --host ::1 the announced URL is http://[::1]:PORT/v1, and it answers."""
    with serve_local("--host", "::1", "--port", "0") as url:
        response = httpx.post(f"{url}/responses", json={"model": "m", "input": "x"}, headers=AUTH)
    assert (re.fullmatch(r"http://\[::1\]:\d+/v1", url) is not None, response.status_code) == (True, 200)


def test_serve_local_on_a_taken_port_is_a_one_line_error_exiting_2() -> None:
    """A taken port ends serve-local with one `error:` line and exit code 2, not uvicorn's 3."""
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = CliRunner().invoke(cli.app, ["serve-local", "--port", str(port)])
    assert (result.exit_code, result.stderr.strip().splitlines()) == (
        2,
        [f"error: cannot serve on 127.0.0.1 port {port}: Address already in use"],
    )
