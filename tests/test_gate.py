"""``RequestGate``: follow-ups of started runs first; ``LagLimit``: how many go in flight at once."""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import anyio
import pytest

from agent._gate import LagLimit, RequestGate
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


def _fed(limit: LagLimit, *lags: float) -> int:
    for lag in lags:
        limit.observe(lag)
    return limit.limit


BUSY = 0.05
"""A timer's lateness above the target: the loop was busy at that moment."""
IDLE = 0.0
IDLE_WINDOW = [IDLE] * 4
BUSY_WINDOW = [BUSY] * 4


def _limit(maximum: int = 512, minimum: int = 8) -> LagLimit:
    return LagLimit(maximum, minimum=minimum, start=minimum, target=0.01, window=4)


def _at_max() -> LagLimit:
    """A limit grown to its maximum, 512, by an idle loop."""
    limit = _limit()
    _fed(limit, *IDLE_WINDOW * 6)
    assert limit.limit == 512
    return limit


@pytest.mark.parametrize(("maximum", "expected"), [(512, 32), (20, 20), (4, 4)])
def test_the_limit_starts_at_32_or_max_connections_if_fewer(maximum: int, expected: int) -> None:
    """Before any measurement, 32 requests may go in flight (or max_connections, if fewer)."""
    assert LagLimit(maximum).limit == expected


def test_an_idle_loop_doubles_the_limit_per_window_up_to_max_connections() -> None:
    """Until the loop is first found busy, each idle window doubles the limit, up to the maximum."""
    limit = _limit()
    assert [_fed(limit, *IDLE_WINDOW) for _ in range(7)] == [16, 32, 64, 128, 256, 512, 512]


def test_a_window_busy_throughout_cuts_the_limit_by_an_eighth() -> None:
    """When every sample of a window is late, the limit drops by an eighth."""
    assert _fed(_at_max(), *BUSY_WINDOW) == 448


@pytest.mark.parametrize("on_time", [0, 1, 3])
def test_one_timer_on_time_in_a_window_keeps_the_limit_from_falling(on_time: int) -> None:
    """A window with one on-time sample (the loop was idle a moment) never cuts the limit."""
    lags = list(BUSY_WINDOW)
    lags[on_time] = IDLE
    assert _fed(_at_max(), *lags) == 512


def test_nothing_moves_before_a_window_is_full() -> None:
    """Three late samples of a window of four leave the limit as it is."""
    assert _fed(_at_max(), BUSY, BUSY, BUSY) == 512


def test_the_window_after_a_cut_is_not_judged() -> None:
    """The window after a cut (requests above the new limit still finishing) changes nothing."""
    assert [_fed(_at_max(), *BUSY_WINDOW * n) for n in (1, 2, 3)] == [448, 448, 392]


def test_after_a_cut_the_limit_grows_by_an_eighth_per_idle_window_up_to_max_connections() -> None:
    """Once the loop was found busy, each idle window adds an eighth, and the maximum still holds."""
    limit = _at_max()
    _fed(limit, *BUSY_WINDOW * 2)
    assert [_fed(limit, *IDLE_WINDOW) for _ in range(3)] == [504, 512, 512]


def test_a_busy_loop_at_the_minimum_does_not_end_the_doubling() -> None:
    """Busy windows at the minimum (the start-up of a burst) leave the limit doubling afterwards."""
    limit = _limit()
    _fed(limit, *BUSY_WINDOW * 3)
    assert [_fed(limit, *IDLE_WINDOW) for _ in range(2)] == [16, 32]


def test_the_limit_never_falls_below_its_minimum() -> None:
    """However busy the loop, the limit stops at its minimum."""
    assert _fed(_at_max(), *BUSY_WINDOW * 1000) == 8


def test_with_fewer_connections_than_the_minimum_the_limit_is_max_connections() -> None:
    """With max_connections below the minimum, the limit is max_connections, busy loop or not."""
    limit = _limit(maximum=2)
    assert [limit.limit, _fed(limit, *BUSY_WINDOW * 10), _fed(limit, *IDLE_WINDOW * 10)] == [2, 2, 2]


def _quiet_gate(maximum: int) -> RequestGate:
    """A gate (limit from 1 up to ``maximum``) whose waiters take no measurements: the test feeds them."""
    return RequestGate(maximum, limit=_limit(maximum=maximum, minimum=1), probe_interval=math.inf)


@pytest.mark.asyncio
async def test_after_a_cut_a_freed_place_is_not_handed_on_while_too_many_are_in_flight() -> None:
    """Once the limit is cut, waiters get a place only when fewer than the new limit are in flight."""
    gate = _quiet_gate(4)
    for lag in IDLE_WINDOW * 2:
        gate.observe(lag)
    assert all(gate.acquire_nowait() for _ in range(4))
    async with anyio.create_task_group() as group:
        group.start_soon(partial(gate.acquire, follow_up=False))
        await _wait_for_waiters(gate, 1)
        for lag in BUSY_WINDOW:
            gate.observe(lag)
        assert gate.limit.limit == 3
        gate.release()
        assert _waiters(gate) == 1
        gate.release()
        assert _waiters(gate) == 0
    assert gate.in_flight == 3


@pytest.mark.asyncio
async def test_a_limit_that_grows_lets_waiters_in_at_once() -> None:
    """When a measurement raises the limit, waiting requests get the new places without a release."""
    gate = _quiet_gate(4)
    assert [gate.acquire_nowait() for _ in range(2)] == [True, False]
    async with anyio.create_task_group() as group:
        group.start_soon(partial(gate.acquire, follow_up=False))
        await _wait_for_waiters(gate, 1)
        for lag in IDLE_WINDOW:
            gate.observe(lag)
        assert (gate.limit.limit, _waiters(gate)) == (2, 0)
    assert gate.in_flight == 2


class _Recorded(LagLimit):
    """A limit that keeps every measurement it is given."""

    def __init__(self, maximum: int) -> None:
        super().__init__(maximum)
        self.lags: list[float] = []

    def observe(self, lag: float) -> None:
        self.lags.append(lag)


async def _wait_for_measurements(limit: _Recorded, count: int) -> None:
    while len(limit.lags) < count:
        await anyio.sleep(0.001)


@pytest.mark.asyncio
async def test_waiting_requests_measure_the_loop_and_hand_measuring_on() -> None:
    """While requests wait, one of them measures the loop's lag; when it leaves, another takes over."""
    limit = _Recorded(1)
    gate = RequestGate(1, limit=limit, probe_interval=0.001)
    assert gate.acquire_nowait()
    async with anyio.create_task_group() as group:
        for _ in range(2):
            group.start_soon(partial(gate.acquire, follow_up=False))
        await _wait_for_waiters(gate, 2)
        await _wait_for_measurements(limit, 3)
        gate.release()  # the first in line (measuring so far) goes; the second takes over
        await _wait_for_waiters_below(gate, 2)
        measured = len(limit.lags)
        await _wait_for_measurements(limit, measured + 3)
        gate.release()
    assert all(lag >= 0 for lag in limit.lags)


@pytest.mark.asyncio
async def test_nobody_measures_while_nobody_waits() -> None:
    """With a free place for every request, no measurement is taken (nothing to decide)."""
    limit = _Recorded(2)
    gate = RequestGate(2, limit=limit, probe_interval=0.001)
    for _ in range(20):
        assert gate.acquire_nowait()
        await anyio.sleep(0.002)
        gate.release()
    assert limit.lags == []
