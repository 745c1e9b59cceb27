"""AutoPolicy reads the prompt: the tools it names, the arguments it holds; `text.format` honoured."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent import Agent
from agent.localmodel import (
    AutoPolicy,
    Item,
    LocalModelServer,
    ResponseRequest,
    ScriptPolicy,
    create_app,
    demo_script,
)
from builtin_tools import registry

BUILTIN: tuple[Item, ...] = tuple(tool.wire() for tool in registry)
AUTH = {"authorization": "Bearer k"}


def user(text: str) -> Item:
    return {"role": "user", "content": text}


def calls(prompt: str, tools: tuple[Item, ...] = BUILTIN, *history: Item) -> list[tuple[str, Any]]:
    """(name, arguments) of each call AutoPolicy makes next."""
    request = ResponseRequest(model="m", input=(user(prompt), *history), tools=tools)
    return [(item["name"], item["arguments"]) for item in AutoPolicy().respond(request)]


def call(call_id: str, name: str, arguments: Item) -> Item:
    return {"type": "function_call", "call_id": call_id, "name": name, "arguments": json.dumps(arguments)}


def output(call_id: str, value: Any) -> Item:
    return {"type": "function_call_output", "call_id": call_id, "output": json.dumps(value)}


def function(name: str, properties: Item, description: str = "") -> Item:
    parameters = {"type": "object", "properties": properties, "required": list(properties)}
    return {"type": "function", "name": name, "description": description, "parameters": parameters}


# --- which tools ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("What is 2^10? Use the calculator.", ["math_calculator"]),
        ("Please calculate 3 * 4", ["math_calculator"]),
        ("What time is it?", ["current_time"]),
        ("Look at the clock", ["current_time"]),
        ("Roll the dice", ["random_generator"]),
        ("Give me a random number", ["random_generator"]),
        ("Describe this system", ["system_info"]),
        ("Run system_info and current_time", ["system_info", "current_time"]),
        ("hello", ["random_generator", "system_info", "math_calculator", "current_time"]),
    ],
)
def test_the_prompt_picks_the_tools_it_names(prompt: str, expected: list[str]) -> None:
    """Tool names, their words and topic words choose the tools; a prompt naming none gets them all."""
    assert [name for name, _ in calls(prompt)] == expected


def test_a_users_tool_is_named_by_a_word_of_its_name() -> None:
    """Matching is generic: `get_weather` is named by "weather", not by a list of builtin names."""
    weather = function("get_weather", {"city": {"type": "string"}})
    clock = function("clock", {})
    assert [name for name, _ in calls("Weather in Paris?", (weather, clock))] == ["get_weather"]


def test_a_tool_name_inside_another_word_does_not_name_it() -> None:
    """`add` is not named by "padding": names match as whole words."""
    add = function("add", {})
    pad = function("pad_text", {})
    assert [name for name, _ in calls("Run pad_text for the padding", (add, pad))] == ["pad_text"]


def test_a_tool_is_named_by_the_topic_of_its_description() -> None:
    """A tool whose name says nothing is found by its description's first sentence."""
    odd = function("fn_7", {}, "Roll dice for a board game. Any number of faces.")
    other = function("fn_8", {}, "Say hello.")
    assert [name for name, _ in calls("Throw the dice for me", (odd, other))] == ["fn_7"]


def test_a_function_tool_choice_wins_over_the_prompt() -> None:
    """A forced tool is called even when the prompt names another."""
    choice = {"type": "function", "name": "current_time"}
    request = ResponseRequest(model="m", input=(user("2^10?"),), tools=BUILTIN, tool_choice=choice)
    assert [item["name"] for item in AutoPolicy().respond(request)] == ["current_time"]


# --- which arguments -----------------------------------------------------------------------------


def test_an_expression_goes_to_the_calculator_as_json_values() -> None:
    """`2^10` becomes a=2, b=10, operation=power: numbers, not code."""
    assert calls("What is 2^10? Use the calculator.") == [
        ("math_calculator", {"a": 2, "b": 10, "operation": "power"})
    ]


def test_a_nested_expression_is_computed_innermost_first() -> None:
    """`(3+4)*2`: first 3 + 4; once the tool answered 7, then 7 * 2."""
    first = calls("(3+4)*2")
    step = call("c1", "math_calculator", {"a": 3, "b": 4, "operation": "add"})
    second = calls("(3+4)*2", BUILTIN, step, output("c1", {"result": 7.0}))
    assert (first, second) == (
        [("math_calculator", {"a": 3, "b": 4, "operation": "add"})],
        [("math_calculator", {"a": 7.0, "b": 2, "operation": "multiply"})],
    )


def test_independent_operations_are_called_in_parallel() -> None:
    """`(1+2)*(3+4)`: both sums in one reply."""
    assert calls("(1+2)*(3+4)") == [
        ("math_calculator", {"a": 1, "b": 2, "operation": "add"}),
        ("math_calculator", {"a": 3, "b": 4, "operation": "add"}),
    ]


def test_the_answer_reports_the_computed_result() -> None:
    """After the calculator answered, the reply gives the expression's value and the tool's output."""
    history = (
        call("c1", "math_calculator", {"a": 2, "b": 10, "operation": "power"}),
        output("c1", {"result": 1024.0, "expression": "2 ^ 10 = 1024"}),
    )
    request = ResponseRequest(model="m", input=(user("What is 2^10?"), *history), tools=BUILTIN)
    [message] = AutoPolicy().respond(request)
    assert message["content"].splitlines()[0].startswith("2^10 = 1024, as math_calculator computed it")
    assert "not AI" in message["content"]


def test_a_tool_taking_an_expression_string_gets_it_whole() -> None:
    """A calculator with an `expression` parameter gets the text as written."""
    calc = function("calculator", {"expression": {"type": "string"}})
    assert calls("compute (3+4)*2 please", (calc,)) == [("calculator", {"expression": "(3+4)*2"})]


def test_a_time_zone_is_taken_from_the_prompt() -> None:
    """An IANA name in the prompt fills a time-zone parameter."""
    assert calls("What time is it in Europe/Paris?") == [("current_time", {"timezone": "Europe/Paris"})]


def test_bounds_and_counts_are_taken_from_the_prompt() -> None:
    """ "between 1 and 6" fills min and max; the number left over fills count."""
    assert calls("Give me 3 random numbers between 1 and 6") == [
        ("random_generator", {"min": 1, "max": 6, "count": 3})
    ]


def test_a_number_outside_the_schema_falls_back_to_its_example() -> None:
    """A count above the schema's maximum is not used: the schema's default is."""
    [(_, arguments)] = calls("Give me 50 random numbers")
    assert arguments["count"] == 1


def test_quoted_strings_and_enum_words_fill_string_parameters() -> None:
    """A quoted string fills a string parameter, a word equal to an enum value that enum."""
    translate = function(
        "translate", {"text": {"type": "string"}, "language": {"enum": ["english", "french"]}}
    )
    assert calls('Translate "good morning" to French', (translate,)) == [
        ("translate", {"text": "good morning", "language": "french"})
    ]


@pytest.mark.asyncio
async def test_agent_run_computes_with_the_builtin_calculator() -> None:
    """End to end: `2^10` with the builtin tools calls only the calculator and answers 1024."""
    async with (
        LocalModelServer(AutoPolicy()) as server,
        Agent("m", tools=registry, base_url=server.base_url, api_key="local") as agent,
    ):
        result = await agent.run("What is 2^10? Use the calculator.")
    assert [call.name for call in result.tool_calls] == ["math_calculator"]
    assert "1024" in result.output


# --- text.format -----------------------------------------------------------------------------


ANSWER_SCHEMA: Item = {
    "type": "object",
    "properties": {
        "result": {"type": "number"},
        "summary": {"type": "string"},
        "unit": {"anyOf": [{"type": "string", "enum": ["none", "meters"]}, {"type": "null"}]},
        "steps": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["result", "summary", "unit", "steps"],
    "additionalProperties": False,
}


def json_schema_format(schema: Item, **extra: Any) -> Item:
    return {"format": {"type": "json_schema", "name": "answer", "schema": schema, **extra}}


async def post(body: Item) -> httpx.Response:
    transport = httpx.ASGITransport(create_app(AutoPolicy()))
    async with httpx.AsyncClient(transport=transport, base_url="http://t/v1", headers=AUTH) as client:
        return await client.post("/responses", json=body)


def test_a_structured_answer_takes_tool_results_by_property_name() -> None:
    """Under a json_schema text.format the answer is a valid object; `result` comes from the tool."""
    history = (
        call("c1", "math_calculator", {"a": 2, "b": 10, "operation": "power"}),
        output("c1", {"result": 1024.0}),
    )
    body = {"text": json_schema_format(ANSWER_SCHEMA, strict=True)}
    request = ResponseRequest(model="m", input=(user("2^10"), *history), tools=BUILTIN, body=body)
    [message] = AutoPolicy().respond(request)
    answer = json.loads(message["content"])
    jsonschema.validate(answer, ANSWER_SCHEMA)
    assert answer["result"] == 1024.0


@pytest.mark.asyncio
async def test_without_tools_the_structured_answer_is_built_from_the_schema() -> None:
    """No tools: the answer is still a JSON object valid against the requested schema."""
    response = await post({"model": "m", "input": "hi", "text": json_schema_format(ANSWER_SCHEMA)})
    assert response.status_code == 200, response.text
    jsonschema.validate(json.loads(response.json()["output"][0]["content"][0]["text"]), ANSWER_SCHEMA)


_SCALARS: st.SearchStrategy[Item] = st.sampled_from(
    [
        {"type": "string"},
        {"type": "string", "minLength": 12, "maxLength": 20},
        {"type": "string", "format": "date-time"},
        {"type": "integer", "minimum": -5, "maximum": -2},
        {"type": "integer", "exclusiveMinimum": 10},
        {"type": "number", "maximum": 0.25},
        {"type": "number", "multipleOf": 7, "minimum": 3},
        {"type": "boolean"},
        {"type": "null"},
        {"enum": ["a", "b"]},
        {"const": 3},
        {"type": ["string", "null"]},
        {"anyOf": [{"type": "integer"}, {"type": "null"}]},
    ]
)


def _object(children: st.SearchStrategy[Item]) -> st.SearchStrategy[Item]:
    properties = st.dictionaries(st.from_regex(r"[a-z]{1,8}", fullmatch=True), children, max_size=4)
    return properties.map(
        lambda props: {
            "type": "object",
            "properties": props,
            "required": list(props),
            "additionalProperties": False,
        }
    )


def _array(children: st.SearchStrategy[Item]) -> st.SearchStrategy[Item]:
    return st.tuples(children, st.integers(0, 3)).map(
        lambda pair: {"type": "array", "items": pair[0], "minItems": pair[1]}
    )


SCHEMAS = _object(st.recursive(_SCALARS, lambda inner: _object(inner) | _array(inner), max_leaves=12))


@settings(max_examples=60, deadline=None)
@given(SCHEMAS)
def test_structured_answers_validate_against_any_strict_schema(schema: Item) -> None:
    """Whatever strict schema is asked for, the answer validates against it."""
    request = ResponseRequest(model="m", input=(user("hi"),), body={"text": json_schema_format(schema)})
    [message] = AutoPolicy().respond(request)
    jsonschema.validate(json.loads(message["content"]), schema)


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("text", "param", "code"),
    [
        ({"format": "json"}, "text.format", "invalid_type"),
        ({"format": {"type": "xml"}}, "text.format.type", "invalid_value"),
        (
            {"format": {"type": "json_schema", "schema": ANSWER_SCHEMA}},
            "text.format.name",
            "missing_required_parameter",
        ),
        (
            {"format": {"type": "json_schema", "name": "a b", "schema": {}}},
            "text.format.name",
            "invalid_value",
        ),
        (
            {"format": {"type": "json_schema", "name": "x" * 65, "schema": {}}},
            "text.format.name",
            "string_above_max_length",
        ),
        (
            {"format": {"type": "json_schema", "name": "a"}},
            "text.format.schema",
            "missing_required_parameter",
        ),
        (
            {"format": {"type": "json_schema", "name": "a", "schema": []}},
            "text.format.schema",
            "invalid_type",
        ),
        (
            {"format": {"type": "json_schema", "name": "a", "schema": {}, "strict": "yes"}},
            "text.format.strict",
            "invalid_type",
        ),
        (
            {"format": {"type": "json_schema", "name": "a", "schema": {"type": "array"}}},
            "text.format.schema",
            "invalid_json_schema",
        ),
        (
            {
                "format": {
                    "type": "json_schema",
                    "name": "a",
                    "strict": True,
                    "schema": {"type": "object", "properties": {"x": {"type": "string"}}},
                }
            },
            "text.format.schema",
            "invalid_json_schema",
        ),
        ({"verbosity": "loud"}, "text.verbosity", "invalid_value"),
    ],
    ids=[
        "not-object",
        "type",
        "no-name",
        "bad-name",
        "long-name",
        "no-schema",
        "schema-type",
        "strict-type",
        "not-object-schema",
        "strict-rules",
        "verbosity",
    ],
)
async def test_malformed_text_formats_are_refused_as_the_api_does(text: Item, param: str, code: str) -> None:
    """A malformed `text` gets the API's 400 `invalid_request_error` naming the parameter."""
    response = await post({"model": "m", "input": "hi", "text": text})
    error = response.json()["error"]
    assert (response.status_code, error["type"], error["param"], error["code"]) == (
        400,
        "invalid_request_error",
        param,
        code,
    )


@pytest.mark.asyncio
async def test_a_strict_schema_problem_is_worded_as_the_api_words_it() -> None:
    """The message names the format and the rule broken, as the real API's does."""
    schema = {"type": "object", "properties": {"x": {"type": "string"}}, "required": ["x"]}
    text = json_schema_format(schema, strict=True)
    response = await post({"model": "m", "input": "hi", "text": text})
    assert response.json()["error"]["message"] == (
        "Invalid schema for response_format 'answer': In context=(), 'additionalProperties' is "
        "required to be supplied and to be false."
    )


# --- pacing the demo ---------------------------------------------------------------------------


def _item_arrivals(policy: Any, stream_delay: float) -> list[float]:
    """When each `response.output_item.added` of the first reply arrived, in seconds from the first."""
    body = {"model": "m", "input": "go", "stream": True}
    arrivals: list[float] = []
    with (
        LocalModelServer(policy, stream_delay=stream_delay) as server,
        httpx.Client(headers=AUTH) as client,
        client.stream("POST", f"{server.base_url}/responses", json=body) as response,
    ):
        for line in response.iter_lines():
            if line == "event: response.output_item.added":
                arrivals.append(time.perf_counter())
    return [at - arrivals[0] for at in arrivals]


def test_the_demos_parallel_calls_stream_back_to_back_on_a_paced_server() -> None:
    """demo_script's four calls arrive together even when the server paces its stream."""
    assert max(_item_arrivals(demo_script(), stream_delay=0.3)) < 0.25


def test_the_demos_calls_follow_the_server_pacing_when_asked() -> None:
    """With call_delay=None, the server's stream_delay separates the calls again."""
    assert max(_item_arrivals(demo_script(call_delay=None), stream_delay=0.1)) >= 0.25


def test_a_policy_items_stream_delay_must_be_a_number() -> None:
    """A bad per-item `stream_delay` is the policy's fault: a 500 naming it."""
    bad = ScriptPolicy([[{"type": "message", "content": "x", "stream_delay": "slow"}]])
    with LocalModelServer(bad) as server, httpx.Client(headers=AUTH) as client:
        response = client.post(f"{server.base_url}/responses", json={"model": "m", "input": "x"})
    assert (response.status_code, "stream_delay" in response.json()["error"]["message"]) == (500, True)
