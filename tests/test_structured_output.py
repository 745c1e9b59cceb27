"""``output_type``: the schema sent as ``text.format``, the answer parsed, mended or refused."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any, NotRequired

import pytest
from pydantic import BaseModel
from typing_extensions import TypedDict

from agent import Agent, OutputRefusedError, OutputValidationError, UsageError
from agent.durable._json import result_from_json, result_to_json
from tests._support import function_call, message, response, scripted_agent, sse_reply


class City(BaseModel):
    name: str
    population: int
    country: str | None = None


@dataclass
class Point:
    x: int
    y: int


class Movie(TypedDict):
    title: str
    year: int
    rating: NotRequired[float]


class Loose(BaseModel):
    counts: dict[str, int]


def text_reply(text: str, **extra: Any) -> dict[str, Any]:
    return response(message(text), **extra)


def refusal_reply(text: str) -> dict[str, Any]:
    item = {
        "type": "message",
        "id": "msg_refused",
        "role": "assistant",
        "status": "completed",
        "content": [{"type": "refusal", "refusal": text}],
    }
    return response(item)


PARIS = '{"name": "Paris", "population": 2100000, "country": null}'


@pytest.mark.asyncio
async def test_a_valid_answer_is_parsed_into_output_parsed() -> None:
    """The final JSON text becomes an instance of the output type; a strict null keeps the default."""
    agent, _ = scripted_agent([text_reply(PARIS)], output_type=City)
    async with agent:
        result = await agent.run("Largest city of France?")
    assert City(name="Paris", population=2100000) == result.output_parsed
    assert result.output == PARIS


@pytest.mark.asyncio
async def test_the_schema_is_sent_as_a_strict_text_format() -> None:
    """The request's ``text.format`` holds the strict schema, every property required."""
    agent, endpoint = scripted_agent([text_reply(PARIS)], output_type=City)
    async with agent:
        await agent.run("Largest city of France?")
    fmt = endpoint.requests[0]["text"]["format"]
    assert (fmt["type"], fmt["name"], fmt["strict"]) == ("json_schema", "City", True)
    assert (
        fmt["schema"]["required"],
        fmt["schema"]["additionalProperties"],
    ) == (["name", "population", "country"], False)


@pytest.mark.asyncio
async def test_a_schema_strict_mode_cannot_express_goes_out_not_strict() -> None:
    """A free-form dict field: ``strict: false``, still validated on the way back."""
    agent, endpoint = scripted_agent([text_reply('{"counts": {"a": 1}}')], output_type=Loose)
    async with agent:
        result = await agent.run("count")
    assert False is endpoint.requests[0]["text"]["format"]["strict"]
    assert Loose(counts={"a": 1}) == result.output_parsed


@pytest.mark.asyncio
async def test_a_dataclass_output() -> None:
    """A dataclass output type is parsed into the dataclass."""
    agent, _ = scripted_agent([text_reply('{"x": 1, "y": 2}')], output_type=Point)
    async with agent:
        result = await agent.run("a point")
    assert Point(1, 2) == result.output_parsed


@pytest.mark.asyncio
async def test_a_typed_dict_output_drops_a_strict_null() -> None:
    """A TypedDict output is a dict; a NotRequired key the model sent as null is left out."""
    agent, _ = scripted_agent(
        [text_reply('{"title": "Alien", "year": 1979, "rating": null}')], output_type=Movie
    )
    async with agent:
        result = await agent.run("a movie")
    assert result.output_parsed == {"title": "Alien", "year": 1979}


@pytest.mark.asyncio
async def test_a_wrong_answer_is_sent_back_with_its_errors_and_mended() -> None:
    """The model gets its answer back with what was wrong, and its second answer is used."""
    wrong = '{"name": "Paris", "population": "many", "country": null}'
    agent, endpoint = scripted_agent([text_reply(wrong), text_reply(PARIS)], output_type=City)
    async with agent:
        result = await agent.run("Largest city of France?")
    assert (result.turns, result.output_parsed.population) == (2, 2100000)
    *_, answered, feedback = endpoint.requests[1]["input"]
    assert wrong == answered["content"][0]["text"]
    assert feedback["role"] == "user"
    assert "- population: Input should be a valid integer" in feedback["content"]


@pytest.mark.asyncio
async def test_the_retry_is_a_function_of_the_responses_alone() -> None:
    """The same responses make the same requests, retry included (durable engines replay the loop)."""
    replies = [text_reply('{"name": 1}'), text_reply(PARIS)]
    bodies = []
    for _ in range(2):
        agent, endpoint = scripted_agent(copy.deepcopy(replies), output_type=City)
        async with agent:
            await agent.run("Largest city of France?")
        bodies.append(endpoint.requests)
    assert bodies[0] == bodies[1]


@pytest.mark.asyncio
async def test_an_answer_that_is_not_json_is_sent_back() -> None:
    """Prose instead of JSON is a problem the model is told about."""
    agent, endpoint = scripted_agent([text_reply("Paris, of course."), text_reply(PARIS)], output_type=City)
    async with agent:
        await agent.run("Largest city of France?")
    assert "the answer is not JSON" in endpoint.requests[1]["input"][-1]["content"]


@pytest.mark.asyncio
async def test_retries_spent_raise_output_validation_error() -> None:
    """Still wrong after ``output_retries``: OutputValidationError with the text, errors and result."""
    replies = [text_reply('{"name": "Paris"}') for _ in range(3)]
    agent, endpoint = scripted_agent(replies, output_type=City, output_retries=2)
    async with agent:
        with pytest.raises(OutputValidationError) as caught:
            await agent.run("Largest city of France?")
    error = caught.value
    assert (error.text, error.errors) == ('{"name": "Paris"}', ("population: Field required",))
    assert error.partial_result is not None
    assert (error.partial_result.turns, len(endpoint.requests)) == (3, 3)


@pytest.mark.asyncio
async def test_no_retries_fail_at_the_first_wrong_answer() -> None:
    """``output_retries=0`` raises at once."""
    agent, endpoint = scripted_agent([text_reply("nope")], output_type=City, output_retries=0)
    async with agent:
        with pytest.raises(OutputValidationError, match="after 0 retries"):
            await agent.run("hi")
    assert len(endpoint.requests) == 1


@pytest.mark.asyncio
async def test_the_last_turn_fails_rather_than_asking_again() -> None:
    """A wrong answer in the run's last allowed turn raises OutputValidationError, not MaxTurnsExceeded."""
    agent, _ = scripted_agent([text_reply("nope")], output_type=City, max_turns=1)
    async with agent:
        with pytest.raises(OutputValidationError):
            await agent.run("hi")


@pytest.mark.asyncio
async def test_a_refusal_ends_the_run_with_output_refused_error() -> None:
    """A refusal is not retried: OutputRefusedError carries its text."""
    agent, endpoint = scripted_agent([refusal_reply("I can't help with that.")], output_type=City)
    async with agent:
        with pytest.raises(OutputRefusedError) as caught:
            await agent.run("hi")
    assert (caught.value.refusal, len(endpoint.requests)) == ("I can't help with that.", 1)
    assert caught.value.partial_result is not None


@pytest.mark.asyncio
async def test_tools_run_before_the_structured_answer() -> None:
    """Tool turns are unaffected; only the final answer is parsed."""

    def population(city: str) -> int:
        """Population of a city."""
        return 2100000

    replies = [response(function_call("population", {"city": "Paris"})), text_reply(PARIS)]
    agent, _ = scripted_agent(replies, output_type=City, tools=[population])
    async with agent:
        result = await agent.run("Largest city of France?")
    assert (result.turns, result.output_parsed.name) == (2, "Paris")


@pytest.mark.asyncio
async def test_a_runs_output_type_overrides_the_agents() -> None:
    """``run(output_type=...)`` parses into its own type and sends its own schema."""
    agent, endpoint = scripted_agent([text_reply('{"x": 3, "y": 4}')], output_type=City)
    async with agent:
        result = await agent.run("a point", output_type=Point)
    assert Point(3, 4) == result.output_parsed
    assert endpoint.requests[0]["text"]["format"]["name"] == "Point"


@pytest.mark.asyncio
async def test_without_output_type_nothing_is_parsed() -> None:
    """No output type: no ``text`` field, ``output_parsed`` is None even for JSON text."""
    agent, endpoint = scripted_agent([text_reply(PARIS)])
    async with agent:
        result = await agent.run("hi")
    assert (result.output_parsed, "text" in endpoint.requests[0]) == (None, False)


@pytest.mark.asyncio
async def test_an_incomplete_answer_is_not_parsed() -> None:
    """A cut-short response ends the run ``incomplete`` with ``output_parsed`` None, not a retry."""
    cut = text_reply('{"name": "Par', status="incomplete", incomplete_details={"reason": "max_output_tokens"})
    agent, _ = scripted_agent([cut], output_type=City)
    async with agent:
        result = await agent.run("hi")
    assert (result.status, result.output_parsed) == ("incomplete", None)


@pytest.mark.asyncio
async def test_a_streamed_run_is_parsed_and_mended_too() -> None:
    """``run_stream``: the retry happens and the result holds the parsed output."""
    replies = [sse_reply(text_reply("nope")), sse_reply(text_reply('{"x": 5, "y": 6}'))]
    agent, endpoint = scripted_agent(replies)
    async with agent, agent.run_stream("a point", output_type=Point) as events:
        async for _ in events:
            pass
    assert events.result is not None
    assert (Point(5, 6), 2) == (events.result.output_parsed, len(endpoint.requests))
    assert endpoint.requests[0]["stream"] is True


@pytest.mark.asyncio
async def test_previous_response_id_mode_sends_only_the_feedback() -> None:
    """With server-kept conversations the retry sends just the feedback item."""
    first = text_reply("nope")
    agent, endpoint = scripted_agent(
        [first, text_reply(PARIS)], output_type=City, use_previous_response_id=True
    )
    async with agent:
        await agent.run("hi")
    retry = endpoint.requests[1]
    assert (first["id"], 1) == (retry["previous_response_id"], len(retry["input"]))
    assert retry["input"][0]["role"] == "user"


def test_run_sync_takes_output_type() -> None:
    """``run_sync`` parses into a run's output type."""
    agent, _ = scripted_agent([text_reply('{"x": 1, "y": 1}')])
    assert Point(1, 1) == agent.run_sync("a point", output_type=Point).output_parsed


@pytest.mark.parametrize("bad", [int, list[int], "City", City(name="x", population=1)])
def test_an_unsupported_output_type_is_refused(bad: Any) -> None:
    """Only pydantic models, dataclasses and TypedDicts: anything else is a UsageError at once."""
    with pytest.raises(UsageError, match="output_type"):
        Agent("gpt-4.1", api_key="k", output_type=bad)


@pytest.mark.parametrize("bad", [-1, 1.5, True])
def test_bad_output_retries_are_refused(bad: Any) -> None:
    """``output_retries`` is an integer >= 0."""
    with pytest.raises(UsageError, match="output_retries"):
        Agent("gpt-4.1", api_key="k", output_retries=bad)


@pytest.mark.asyncio
async def test_durable_json_carries_output_parsed() -> None:
    """A result's JSON holds the dumped output; read back as the type when given, else as JSON."""
    agent, _ = scripted_agent([text_reply(PARIS)], output_type=City)
    async with agent:
        result = await agent.run("hi")
    data = json.loads(json.dumps(result_to_json(result)))
    assert data["output_parsed"] == {"name": "Paris", "population": 2100000, "country": None}
    assert result == result_from_json(data, City)
    assert data["output_parsed"] == result_from_json(data).output_parsed
