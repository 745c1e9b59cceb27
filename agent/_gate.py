"""``RequestGate``: requests in flight at once, with the follow-ups of started runs first.

When thousands of runs start together, most wait for one of the pool's connections. A plain
FIFO queue sends a run's follow-up request (its tool outputs) behind the first request of every
run started after it, so nearly all runs end up waiting at once while holding their first
response, and every run takes as long as the whole batch. The gate lets follow-ups pass first:
started runs finish, and a waiting run holds little more than its input.

A request waits here before httpx builds it, so a waiting run holds no encoded body, headers or
httpx objects either.
"""

from __future__ import annotations

import math
from collections import deque

import anyio

__all__ = ["RequestGate"]


class RequestGate:
    """At most ``size`` holders at once; waiting follow-ups go before waiting first requests.

    Within each of the two queues, waiters are served in arrival order.
    """

    def __init__(self, size: int) -> None:
        self._free = size
        self._follow_ups: deque[anyio.Event] = deque()
        self._firsts: deque[anyio.Event] = deque()

    def acquire_nowait(self) -> bool:
        """Take a free place if there is one and nobody waits for it."""
        if self._free and not (self._follow_ups or self._firsts):
            self._free -= 1
            return True
        return False

    async def acquire(self, *, follow_up: bool, deadline: float = math.inf) -> bool:
        """Wait for a place until ``deadline`` (``anyio.current_time()``); whether one came.

        Call :meth:`acquire_nowait` first: this one always queues.
        """
        granted = anyio.Event()
        queue = self._follow_ups if follow_up else self._firsts
        queue.append(granted)
        # A plain scope, not fail_after(): thousands of runs may wait here at once.
        with anyio.CancelScope(deadline=deadline) as waiting:
            try:
                await granted.wait()
            except BaseException:
                if granted.is_set():  # handed a place while being cancelled: pass it on
                    self.release()
                else:
                    queue.remove(granted)
                raise
        return not waiting.cancelled_caught

    def release(self) -> None:
        """Give a place back: to the next waiter if there is one, follow-ups first."""
        for queue in (self._follow_ups, self._firsts):
            if queue:
                queue.popleft().set()
                return
        self._free += 1
