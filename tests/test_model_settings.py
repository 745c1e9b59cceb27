"""``ModelSettings``: checked when made, sent in every request, overridden per run field by field."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from agent import Agent, ModelSettings, UsageError
from agent.localmodel import AutoPolicy, LocalModelServer
from tests._support import FAST_RETRY, message, response, scripted_agent

EVERY_SETTING = ModelSettings(
    temperature=0.2,
    top_p=0.9,
    max_output_tokens=256,
    reasoning_effort="low",
    reasoning_summary="auto",
    truncation="auto",
    store=True,
    include=["reasoning.encrypted_content"],  # type: ignore[arg-type]  # a list is accepted too
    service_tier="flex",
)
EVERY_FIELD = {
    "temperature": 0.2,
    "top_p": 0.9,
    "max_output_tokens": 256,
    "reasoning": {"effort": "low", "summary": "auto"},
    "truncation": "auto",
    "store": True,
    "include": ["reasoning.encrypted_content"],
    "service_tier": "flex",
}
SETTING_KEYS = {*EVERY_FIELD, "text"}


def sent(body: dict[str, Any]) -> dict[str, Any]:
    """The model-settings fields of a request body."""
    return {key: value for key, value in body.items() if key in SETTING_KEYS}


@pytest.mark.asyncio
async def test_every_setting_is_sent_in_the_request_body() -> None:
    """Each field goes out under its Responses name; effort and summary as one reasoning object."""
    agent, endpoint = scripted_agent([response(message("hi"))], model_settings=EVERY_SETTING)
    async with agent:
        await agent.run("hi")
    assert sent(endpoint.requests[0]) == EVERY_FIELD


@pytest.mark.asyncio
async def test_no_settings_send_nothing() -> None:
    """Without model settings the body holds none of their fields."""
    agent, endpoint = scripted_agent([response(message("hi"))])
    async with agent:
        await agent.run("hi")
    assert sent(endpoint.requests[0]) == {}


@pytest.mark.asyncio
async def test_a_runs_settings_override_the_agents_field_by_field() -> None:
    """A run's field replaces the agent's; the agent's other fields stay; the next run is unchanged."""
    agent_settings = ModelSettings(temperature=0.2, reasoning_effort="low", service_tier="flex")
    replies = [response(message("a")), response(message("b"))]
    agent, endpoint = scripted_agent(replies, model_settings=agent_settings)
    async with agent:
        await agent.run("hi", model_settings=ModelSettings(temperature=1.5, reasoning_summary="concise"))
        await agent.run("hi")
    first, second = (sent(body) for body in endpoint.requests)
    assert first == {
        "temperature": 1.5,
        "reasoning": {"effort": "low", "summary": "concise"},
        "service_tier": "flex",
    }
    assert second == {"temperature": 0.2, "reasoning": {"effort": "low"}, "service_tier": "flex"}


@pytest.mark.asyncio
async def test_extra_body_wins_over_model_settings() -> None:
    """``extra_body`` overrides a setting and carries options ModelSettings does not name."""
    extra = {"temperature": 0.7, "top_logprobs": 3}
    agent, endpoint = scripted_agent(
        [response(message("hi"))], model_settings=ModelSettings(temperature=0.1), extra_body=extra
    )
    async with agent:
        await agent.run("hi")
    body = endpoint.requests[0]
    assert (body["temperature"], body["top_logprobs"]) == (0.7, 3)


@pytest.mark.asyncio
async def test_store_false_from_settings_still_asks_for_encrypted_reasoning() -> None:
    """``store=False`` with a reasoning effort adds ``reasoning.encrypted_content`` to include."""
    settings = ModelSettings(
        store=False, reasoning_effort="medium", include=("message.output_text.logprobs",)
    )
    agent, endpoint = scripted_agent([response(message("hi"))], model_settings=settings)
    async with agent:
        await agent.run("hi")
    expected = ["message.output_text.logprobs", "reasoning.encrypted_content"]
    assert expected == endpoint.requests[0]["include"]


def test_run_sync_takes_model_settings() -> None:
    """``run_sync`` sends a run's settings too."""
    agent, endpoint = scripted_agent([response(message("hi"))])
    agent.run_sync("hi", model_settings=ModelSettings(top_p=0.5))
    assert sent(endpoint.requests[0]) == {"top_p": 0.5}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("temperature", -0.1),
        ("temperature", 2.5),
        ("temperature", float("nan")),
        ("temperature", "hot"),
        ("top_p", 1.5),
        ("top_p", True),
        ("max_output_tokens", 0),
        ("max_output_tokens", 1.5),
        ("reasoning_effort", "extreme"),
        ("reasoning_summary", "long"),
        ("truncation", "yes"),
        ("service_tier", "gold"),
        ("store", "no"),
        ("include", "reasoning.encrypted_content"),
        ("include", [1]),
    ],
)
def test_bad_values_are_refused_when_the_settings_are_made(field: str, value: Any) -> None:
    """A value the API would refuse is a UsageError at once, naming the field."""
    with pytest.raises(UsageError, match=field):
        ModelSettings(**{field: value})


def test_settings_are_frozen_and_include_becomes_a_tuple() -> None:
    """Settings cannot change after they are made; ``include`` is kept as a tuple."""
    settings = ModelSettings(include=["a"])  # type: ignore[arg-type]  # a list is accepted too
    assert settings.include == ("a",)
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.temperature = 1.0  # type: ignore[misc]


def test_merged_keeps_every_field_the_override_leaves_unset() -> None:
    """``merged`` replaces exactly the override's non-None fields."""
    base = ModelSettings(temperature=0.2, top_p=0.3)
    assert ModelSettings(temperature=0.2, top_p=0.9) == base.merged(ModelSettings(top_p=0.9))
    assert base is base.merged(None)


def test_an_agent_refuses_model_settings_that_are_not_model_settings() -> None:
    """A plain dict is refused when the agent is made."""
    bad: Any = {"temperature": 0.5}
    with pytest.raises(UsageError, match="ModelSettings"):
        scripted_agent([], model_settings=bad)


@pytest.mark.asyncio
async def test_a_run_refuses_model_settings_that_are_not_model_settings() -> None:
    """A plain dict given to a run is refused before anything is sent."""
    bad: Any = {"temperature": 0.5}
    agent, endpoint = scripted_agent([])
    async with agent:
        with pytest.raises(UsageError, match="ModelSettings"):
            await agent.run("hi", model_settings=bad)
    assert endpoint.requests == []


@pytest.mark.asyncio
async def test_settings_reach_the_local_model_server_over_a_socket() -> None:
    """Over a real 127.0.0.1 socket the server receives (and accepts) every setting."""
    async with LocalModelServer(AutoPolicy()) as server:
        options: dict[str, Any] = {"base_url": server.base_url, "api_key": "local", "retry": FAST_RETRY}
        async with Agent("gpt-4.1", model_settings=EVERY_SETTING, **options) as agent:
            result = await agent.run("hello")
    assert result.status == "completed"
    assert sent(server.requests[0]) == EVERY_FIELD
