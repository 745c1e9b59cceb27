"""One backoff per endpoint: the shared pause gate and the retry budget."""

from __future__ import annotations

import os
import time
from typing import Any

import anyio
import httpx
import pytest

from agent import Agent, InternalServerError, RateLimitError, RetryPolicy, UsageError
from agent._backoff import EndpointBackoff
from tests._support import FAST_RETRY, Reply, error_reply, message, response, scripted_agent


class FakeClock:
    """A ``time.monotonic`` the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr("agent._backoff.time.monotonic", fake)
    return fake


def budget(ratio: float | None = 0.2, min_retries: int = 2) -> EndpointBackoff:
    return EndpointBackoff(window=10.0, ratio=ratio, min_retries=min_retries, jitter=0.0)


def retries_granted(backoff: EndpointBackoff, asked: int) -> int:
    return sum(backoff.try_retry() for _ in range(asked))


def test_budget_grants_the_floor_with_no_traffic(clock: FakeClock) -> None:
    """With no first attempts, exactly ``min_retries`` retries are granted per window."""
    assert retries_granted(budget(min_retries=3), 10) == 3


def test_budget_grows_with_a_fraction_of_first_attempts(clock: FakeClock) -> None:
    """100 first attempts at ratio 0.2 add 20 retries to a floor of 2."""
    backoff = budget()
    for _ in range(100):
        backoff.attempt()
    assert retries_granted(backoff, 50) == 22


def test_budget_refills_once_the_window_has_passed(clock: FakeClock) -> None:
    """Retries spent more than a window ago no longer count."""
    backoff = budget()
    assert retries_granted(backoff, 5) == 2
    clock.now += 10.5
    assert retries_granted(backoff, 5) == 2


def test_no_budget_grants_every_retry(clock: FakeClock) -> None:
    """ratio=None switches the budget off."""
    assert retries_granted(budget(ratio=None, min_retries=0), 1000) == 1000


@pytest.mark.asyncio
async def test_the_pause_gate_holds_until_the_pause_ends() -> None:
    """wait_open() returns no earlier than the pause set, and at once when none is."""
    backoff = budget()
    backoff.pause(0.1)
    started = time.monotonic()
    await backoff.wait_open()
    assert time.monotonic() - started >= 0.095
    assert backoff.paused_for == 0.0


def timed_agent(replies: list[Reply], sent: list[float], **options: Any) -> Agent:
    """An agent on a scripted endpoint that notes when each request arrives."""

    async def handle(request: httpx.Request) -> httpx.Response:
        sent.append(time.monotonic())
        reply = replies.pop(0)
        return reply if isinstance(reply, httpx.Response) else httpx.Response(200, json=reply)

    options.setdefault("retry", FAST_RETRY)
    client = httpx.AsyncClient(transport=httpx.MockTransport(handle))
    return Agent("m", base_url="https://api.example.test/v1", api_key="k", http_client=client, **options)


async def two_runs(agent: Agent) -> None:
    """Start a run, and a second one once the first has had its first answer."""
    async with anyio.create_task_group() as group:
        group.start_soon(agent.run, "first")
        await anyio.sleep(0.05)
        group.start_soon(agent.run, "second")


@pytest.mark.asyncio
async def test_a_429_pauses_every_run_of_the_agent() -> None:
    """After one run's 429 with Retry-After, no other run's request goes out before it passes."""
    sent: list[float] = []
    limited = error_reply(429, "slow down", "rate_limit_exceeded", **{"retry-after": "0.3"})
    await two_runs(timed_agent([limited, response(message("a")), response(message("b"))], sent))
    assert len(sent) == 3
    assert min(sent[1:]) - sent[0] >= 0.29


@pytest.mark.asyncio
async def test_a_spent_budget_ends_the_run_with_rate_limit_error() -> None:
    """With no retry left in the budget a 429 ends the run at once, typed, with partial_result."""
    limited = error_reply(429, "slow down", "rate_limit_exceeded")
    policy = RetryPolicy(max_retries=5, initial_delay=0.0, jitter=0.0, budget_ratio=0.0, budget_min_retries=0)
    agent, endpoint = scripted_agent([limited], retry=policy)
    with anyio.fail_after(5), pytest.raises(RateLimitError) as info:
        await agent.run("go")
    assert (len(endpoint.requests), info.value.partial_result is not None) == (1, True)


@pytest.mark.asyncio
async def test_retries_the_server_scheduled_spend_no_budget() -> None:
    """A 429 with Retry-After is retried (up to max_retries) even with the budget spent."""
    limited = error_reply(429, "slow down", "rate_limit_exceeded", **{"retry-after": "0"})
    policy = RetryPolicy(max_retries=2, initial_delay=0.0, jitter=0.0, budget_ratio=0.0, budget_min_retries=0)
    agent, endpoint = scripted_agent([limited, limited, response(message("ok"))], retry=policy)
    with anyio.fail_after(5):
        result = await agent.run("go")
    assert (result.output, len(endpoint.requests)) == ("ok", 3)


@pytest.mark.asyncio
async def test_shared_pause_can_be_switched_off() -> None:
    """RetryPolicy(shared_pause=False): another run's request is not held by one run's 429."""
    sent: list[float] = []
    limited = error_reply(429, "slow down", "rate_limit_exceeded", **{"retry-after": "0.3"})
    policy = RetryPolicy(initial_delay=0.0, jitter=0.0, shared_pause=False)
    await two_runs(timed_agent([limited, response(message("b")), response(message("a"))], sent, retry=policy))
    assert sent[1] - sent[0] < 0.25


@pytest.mark.parametrize(
    "options",
    [{"budget_ratio": -0.1}, {"budget_min_retries": -1}, {"budget_window": 0.0}],
)
def test_impossible_budgets_are_refused(options: dict[str, Any]) -> None:
    """A retry budget that cannot be counted is a UsageError when the policy is made."""
    with pytest.raises(UsageError):
        RetryPolicy(**options)


@pytest.mark.slow
@pytest.mark.asyncio
async def test_a_503_storm_ends_every_run_typed_within_the_retry_budget() -> None:
    """A storm of 503s: every run ends ok or typed, and no more is sent than the budget allows."""
    runs = int(os.environ.get("AGENT_SOAK_RUNS", "50"))
    tokens, last, sent = 10.0, time.monotonic(), 0

    async def handle(request: httpx.Request) -> httpx.Response:
        nonlocal tokens, last, sent
        sent += 1
        await anyio.sleep(0.02)
        now = time.monotonic()
        tokens, last = min(10.0, tokens + (now - last) * 50), now
        if tokens < 1:
            return error_reply(503, "overloaded", "server_error")
        tokens -= 1
        return httpx.Response(200, json=response(message("ok")))

    client = httpx.AsyncClient(transport=httpx.MockTransport(handle))
    policy = RetryPolicy(
        max_retries=10, initial_delay=0.05, jitter=0.05, budget_ratio=0.2, budget_min_retries=10
    )
    agent = Agent("m", base_url="https://api.example.test/v1", api_key="k", http_client=client, retry=policy)
    ended: list[str] = []

    async def one() -> None:
        try:
            ended.append((await agent.run("go")).output)
        except InternalServerError as exc:
            ended.append("limited" if exc.partial_result is not None else "no partial result")

    with anyio.fail_after(60):
        async with anyio.create_task_group() as group:
            for _ in range(runs):
                group.start_soon(one)
    assert sorted(set(ended)) <= ["limited", "ok"]
    assert len(ended) == runs
    assert sent <= runs + 10 + 0.2 * runs
