"""``RequestGate``: requests in flight at once, follow-ups of started runs first."""

from __future__ import annotations

from functools import partial
from typing import Any

import anyio
import pytest

from agent._gate import RequestGate
from agent._http import ResponsesClient
from tests._support import function_call, message, response, scripted_agent


async def _queue(gate: RequestGate, order: list[str], name: str, *, follow_up: bool) -> None:
    assert await gate.acquire(follow_up=follow_up)
    order.append(name)


def _waiters(gate: RequestGate) -> int:
    return len(gate._follow_ups) + len(gate._firsts)


async def _wait_for_waiters(gate: RequestGate, count: int) -> None:
    while _waiters(gate) < count:
        await anyio.lowlevel.checkpoint()


async def _wait_for_waiters_below(gate: RequestGate, count: int) -> None:
    while _waiters(gate) >= count:
        await anyio.lowlevel.checkpoint()


@pytest.mark.asyncio
async def test_waiting_follow_ups_go_before_waiting_first_requests_each_in_order() -> None:
    """Places freed go to follow-ups first, then to first requests, each queue in arrival order."""
    gate = RequestGate(1)
    assert gate.acquire_nowait()
    order: list[str] = []
    async with anyio.create_task_group() as group:
        arrivals = [("first-a", False), ("follow-a", True), ("first-b", False), ("follow-b", True)]
        for waiting, (name, follow_up) in enumerate(arrivals, 1):
            group.start_soon(partial(_queue, gate, order, name, follow_up=follow_up))
            await _wait_for_waiters(gate, waiting)
        for _ in arrivals:
            gate.release()
    assert order == ["follow-a", "follow-b", "first-a", "first-b"]


@pytest.mark.asyncio
async def test_a_place_free_at_once_is_taken_without_waiting() -> None:
    """acquire_nowait takes a free place, and refuses once all are taken."""
    gate = RequestGate(2)
    assert [gate.acquire_nowait() for _ in range(3)] == [True, True, False]


@pytest.mark.asyncio
@pytest.mark.parametrize("handed", [False, True], ids=["waiting", "just-handed"])
async def test_a_cancelled_waiter_loses_no_place(handed: bool) -> None:
    """A waiter cancelled while waiting, or just as it is handed a place, leaves the place to others."""
    gate = RequestGate(1)
    assert gate.acquire_nowait()
    order: list[str] = []
    scopes: list[anyio.CancelScope] = []

    async def use(name: str, *, follow_up: bool) -> None:
        if await gate.acquire(follow_up=follow_up):
            try:
                order.append(name)
                await anyio.lowlevel.checkpoint()
            finally:
                gate.release()

    async def doomed() -> None:
        with anyio.CancelScope() as scope:
            scopes.append(scope)
            await use("doomed", follow_up=True)

    async with anyio.create_task_group() as group:
        group.start_soon(doomed)
        await _wait_for_waiters(gate, 1)
        group.start_soon(partial(use, "next", follow_up=False))
        await _wait_for_waiters(gate, 2)
        if handed:
            gate.release()
            scopes[0].cancel()
        else:
            scopes[0].cancel()
            await _wait_for_waiters_below(gate, 2)
            gate.release()
    assert "next" in order
    assert gate.acquire_nowait()


@pytest.mark.asyncio
async def test_a_waiter_past_its_deadline_gives_up_and_leaves_no_trace() -> None:
    """Past the deadline acquire returns False; a later release frees a place for anyone."""
    gate = RequestGate(1)
    assert gate.acquire_nowait()
    assert not await gate.acquire(follow_up=False, deadline=anyio.current_time())
    gate.release()
    assert gate.acquire_nowait()


@pytest.mark.asyncio
async def test_a_runs_requests_after_its_first_response_are_follow_ups(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The loop marks every request of a run after its first response as a follow-up."""
    seen: list[bool] = []
    create = ResponsesClient.create

    async def spy(self: ResponsesClient, body: Any, **options: Any) -> Any:
        seen.append(options["follow_up"])
        return await create(self, body, **options)

    monkeypatch.setattr(ResponsesClient, "create", spy)
    calls = [function_call("echo", {"text": "a"})]
    agent, _ = scripted_agent([response(*calls), response(*calls), response(message("done"))], tools=[echo])
    async with agent:
        await agent.run("go")
    assert seen == [False, True, True]


def echo(text: str) -> str:
    """Echo the text."""
    return text
