"""``RequestGate``: requests in flight at once, with the follow-ups of started runs first.

When thousands of runs start together, most wait for one of the pool's connections. A plain
FIFO queue sends a run's follow-up request (its tool outputs) behind the first request of every
run started after it, so nearly all runs end up waiting at once while holding their first
response, and every run takes as long as the whole batch. The gate lets follow-ups pass first:
started runs finish, and a waiting run holds little more than its input.

A request waits here before httpx builds it, so a waiting run holds no encoded body, headers or
httpx objects either.

How many may be in flight at once adapts to how busy the event loop is (:class:`LagLimit`).
When the client itself is the bottleneck (thousands of runs against a fast endpoint), more
requests in flight do not go out faster: each only waits longer for the loop, and all it
allocates lives long enough to reach the cyclic GC's oldest generation, whose full collections
then took a third of the time. While requests wait, one of them measures how late the loop
wakes it (a timer's lateness); the limit falls while the loop is never idle and grows back,
up to ``max_connections``, when it is. Against a slow endpoint the loop idles between replies
and the limit stays at ``max_connections``.
"""

from __future__ import annotations

import math
from collections import deque

import anyio

__all__ = ["LagLimit", "RequestGate"]

TARGET_LAG = 0.008
"""Seconds a timer may fire late and the loop still count as idle for a moment."""

MIN_LIMIT = 8
"""Requests in flight the limit never falls below (or ``max_connections``, if fewer)."""

START_LIMIT = 32
"""Requests in flight the limit starts at (or ``max_connections``, if fewer)."""

PROBE_INTERVAL = 0.01
"""Seconds between two measurements of the loop's lag, while requests wait."""

WINDOW = 4
"""Measurements per decision. The least late of them is judged, so one slow pass of the loop
(a full collection, a burst of replies) moves nothing: only a loop busy throughout does."""


class LagLimit:
    """The number of requests allowed in flight, from the event loop's lag.

    It starts at ``start`` and doubles with each window of ``window`` samples in which the loop
    was idle a moment (the least late sample waited at most ``target`` seconds), up to
    ``maximum``, until a window finds the loop busy throughout (every sample later than
    ``target``) with the limit above ``minimum``. Each such window cuts the limit by an eighth
    (not below ``minimum``), and the next window is not judged, while the requests above the
    new limit finish. After the first cut the limit grows by an eighth per idle window.
    """

    def __init__(
        self,
        maximum: int,
        *,
        minimum: int = MIN_LIMIT,
        start: int = START_LIMIT,
        target: float = TARGET_LAG,
        window: int = WINDOW,
    ) -> None:
        self.maximum = maximum
        self.minimum = min(minimum, maximum)
        self.limit = max(self.minimum, min(start, maximum))
        self._target = target
        self._window = window
        self._samples = 0
        self._least = math.inf
        self._skip = False
        self._cut = False

    def observe(self, lag: float) -> None:
        """Take one measurement: seconds a timer of the loop fired late."""
        self._samples += 1
        self._least = min(self._least, lag)
        if self._samples < self._window:
            return
        least, self._samples, self._least = self._least, 0, math.inf
        if self._skip:
            self._skip = False
        elif least > self._target:
            if self.limit > self.minimum:  # busy at the minimum (start-up): still ramping
                self.limit = max(self.minimum, self.limit * 7 // 8)
                self._skip = self._cut = True
        else:
            step = max(1, self.limit // 8) if self._cut else self.limit
            self.limit = min(self.maximum, self.limit + step)


class _Waiter:
    """A request waiting for a place; woken when granted one, or to take over measuring."""

    __slots__ = ("event", "granted")

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.granted = False


class RequestGate:
    """At most ``limit.limit`` holders at once; waiting follow-ups go before waiting first requests.

    Within each of the two queues, waiters are served in arrival order. While requests wait, one
    of them (the last in line: it will wait longest) measures the loop's lag on the way: it
    wakes every :data:`PROBE_INTERVAL` and notes how late its timer fired. Once it leaves, the
    new last in line takes over.
    """

    def __init__(
        self, size: int, *, limit: LagLimit | None = None, probe_interval: float = PROBE_INTERVAL
    ) -> None:
        self.limit = limit or LagLimit(size)
        self._probe_interval = probe_interval
        self.in_flight = 0
        self._follow_ups: deque[_Waiter] = deque()
        self._firsts: deque[_Waiter] = deque()
        self._prober: _Waiter | None = None

    def acquire_nowait(self) -> bool:
        """Take a free place if there is one and nobody waits for it."""
        if self.in_flight < self.limit.limit and not (self._follow_ups or self._firsts):
            self.in_flight += 1
            return True
        return False

    async def acquire(self, *, follow_up: bool, deadline: float = math.inf) -> bool:
        """Wait for a place until ``deadline`` (``anyio.current_time()``); whether one came.

        Call :meth:`acquire_nowait` first: this one always queues.
        """
        waiter = _Waiter()
        queue = self._follow_ups if follow_up else self._firsts
        queue.append(waiter)
        if self._prober is None:
            self._prober = waiter
        # A plain scope, not fail_after(): thousands of runs may wait here at once.
        with anyio.CancelScope(deadline=deadline) as waiting:
            try:
                await self._wait(waiter)
            except BaseException:
                if waiter.granted:  # handed a place while being cancelled: pass it on
                    self.release()
                else:
                    queue.remove(waiter)
                raise
            finally:
                if self._prober is waiter:
                    self._recruit()
        return not waiting.cancelled_caught

    def release(self) -> None:
        """Give a place back: to the next waiter if the limit allows, follow-ups first."""
        self.in_flight -= 1
        self._hand_off()

    def observe(self, lag: float) -> None:
        """Take one measurement of the loop's lag (seconds); let more in if the limit grew."""
        self.limit.observe(lag)
        self._hand_off()

    async def _wait(self, waiter: _Waiter) -> None:
        while not waiter.granted:
            if self._prober is not waiter:
                await waiter.event.wait()
            else:
                with anyio.CancelScope(deadline=anyio.current_time() + self._probe_interval) as probe:
                    await waiter.event.wait()
                if probe.cancelled_caught:
                    self.observe(anyio.current_time() - probe.deadline)
            if waiter.event.is_set() and not waiter.granted:  # recruited to measure
                waiter.event = anyio.Event()

    def _recruit(self) -> None:
        """Hand measuring to the last in line, if anyone waits."""
        queue = self._firsts or self._follow_ups
        self._prober = queue[-1] if queue else None
        if self._prober is not None:
            self._prober.event.set()

    def _hand_off(self) -> None:
        while self.in_flight < self.limit.limit:
            queue = self._follow_ups or self._firsts
            if not queue:
                return
            waiter = queue.popleft()
            self.in_flight += 1
            waiter.granted = True
            waiter.event.set()
