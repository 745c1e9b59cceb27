"""One backoff per endpoint: a pause every run waits out, and a budget on retries.

Runs of one agent share one endpoint. When it answers 429 with ``Retry-After``, retrying each run
on its own clock sends a storm of requests that are all refused again. :class:`EndpointBackoff`
makes the runs back off as one client:

- **The pause gate.** A 429 (or any failure with ``Retry-After``) closes the gate for that long;
  no request to the endpoint, first attempt or retry, goes out before it opens again. Waiters
  leave spread over ``RetryPolicy.jitter`` seconds, so the reopening is not a storm of its own.
- **The retry budget** (after Finagle's ``RetryBudget``). Over a sliding window of
  ``RetryPolicy.budget_window`` seconds, retries may number ``budget_min_retries`` plus
  ``budget_ratio`` times the first attempts sent. A retry past the budget is not made: the run
  ends with the failure it got (a :class:`~agent.RateLimitError` in a 429 storm).

Times come from ``time.monotonic``; they decide only *when* a request goes out, never what it holds.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass

import anyio

__all__ = ["EndpointBackoff"]

_SLOTS = 10
"""The window is counted in this many slots: memory stays fixed whatever the request rate."""


@dataclass(slots=True)
class _Slot:
    start: float = -math.inf
    attempts: int = 0
    retries: int = 0


class EndpointBackoff:
    """The shared pause and retry budget of one endpoint (one per agent's client)."""

    def __init__(self, *, window: float, ratio: float | None, min_retries: int, jitter: float) -> None:
        self._window = window
        self._ratio = ratio
        self._min_retries = min_retries
        self._jitter = jitter
        self._slot_length = window / _SLOTS
        self._slots = [_Slot() for _ in range(_SLOTS)]
        self._paused_until = -math.inf
        self._pause_length = 0.0

    @property
    def paused_for(self) -> float:
        """Seconds until the gate opens (0 when it is open)."""
        return max(self._paused_until - time.monotonic(), 0.0)

    def pause(self, seconds: float) -> None:
        """Close the gate for ``seconds`` from now (a longer pause already set stands)."""
        until = time.monotonic() + seconds
        if until > self._paused_until:
            self._paused_until, self._pause_length = until, seconds

    async def wait_open(self) -> None:
        """Return once the gate is open; a closed gate is left at a jittered moment after it opens.

        The waiters leave spread over as long as the pause lasted (at least ``jitter``): all of
        them at once would be the storm the pause was for.
        """
        while (wait := self.paused_for) > 0:
            spread = max(self._jitter, self._pause_length)
            await anyio.sleep(wait + random.uniform(0.0, spread))  # noqa: S311 - not for secrets

    def attempt(self) -> None:
        """Count a first attempt (it earns the budget ``ratio`` of a retry)."""
        self._slot().attempts += 1

    def try_retry(self) -> bool:
        """Take one retry from the budget; ``False`` (and nothing taken) when it is spent."""
        if self._ratio is None:
            return True
        now = time.monotonic()
        live = [slot for slot in self._slots if now - slot.start < self._window]
        attempts = sum(slot.attempts for slot in live)
        retries = sum(slot.retries for slot in live)
        if retries >= self._min_retries + self._ratio * attempts:
            return False
        self._slot().retries += 1
        return True

    def _slot(self) -> _Slot:
        """The slot counting now, emptied first if it last counted a window ago."""
        now = time.monotonic()
        start = now - now % self._slot_length
        slot = self._slots[int(now // self._slot_length) % _SLOTS]
        if slot.start != start:
            slot.start, slot.attempts, slot.retries = start, 0, 0
        return slot
