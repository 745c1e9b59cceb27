"""Worker threads for sync tools: bounded, walk-away-able, and safe across event loops.

``anyio.to_thread.run_sync(..., abandon_on_cancel=True)`` lets the run move on when a sync tool
times out, but gives the thread's capacity token back at once while the thread still runs: a
model that keeps calling a hanging tool would grow the pool without limit. A :class:`ThreadSlot`
is held until the thread itself ends, so the limiter bounds the threads that really exist.

anyio's limiters belong to the event loop that first uses them, while an agent or a tool lives
across loops (``run_sync`` starts a new one each time; tests run asyncio and trio):
:class:`LoopLocalLimiter` keeps one limiter per running loop.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Callable
from typing import TypeVar

import anyio
import anyio.lowlevel
import anyio.to_thread

__all__ = ["LoopLocalLimiter", "ThreadSlot"]

T = TypeVar("T")


class LoopLocalLimiter:
    """A ``CapacityLimiter`` of ``total`` tokens per running event loop."""

    def __init__(self, total: float) -> None:
        self.total = total
        self._per_loop: anyio.lowlevel.RunVar[anyio.CapacityLimiter] = anyio.lowlevel.RunVar(
            f"agent-runtime limiter {id(self)}"
        )

    def get(self) -> anyio.CapacityLimiter:
        """This loop's limiter (made on first use in the loop)."""
        try:
            return self._per_loop.get()
        except LookupError:
            limiter = anyio.CapacityLimiter(self.total)
            self._per_loop.set(limiter)
            return limiter


class ThreadSlot:
    """One place in a bounded pool of worker threads, held until the thread using it ends.

    Acquire it outside a tool's timeout (waiting for a free thread is not the tool's time),
    :meth:`run` one function with it, and :meth:`close` it in every case: the slot goes back to
    the limiter exactly once, from the thread when it ends, or from :meth:`close` if no thread
    ever took it.
    """

    def __init__(self, limiter: anyio.CapacityLimiter) -> None:
        self._limiter = limiter
        # Thread-safe, non-blocking "run this on the loop": the loop may be busy or gone by then.
        native = anyio.lowlevel.current_token().native_token  # an asyncio loop or a TrioToken
        soon = getattr(native, "call_soon_threadsafe", None) or getattr(native, "run_sync_soon")  # noqa: B009
        self._call_soon: Callable[[Callable[[], object]], object] = soon
        self._lock = threading.Lock()
        self._state = "pending"  # -> "running" (the thread gives it back) or "returned"

    @classmethod
    async def acquire(cls, limiter: anyio.CapacityLimiter) -> ThreadSlot:
        """Wait for a free slot."""
        slot = cls(limiter)
        await limiter.acquire_on_behalf_of(slot)
        return slot

    async def run(self, func: Callable[[], T]) -> T:
        """Run ``func`` in a worker thread; cancelling this abandons the thread (it keeps its slot)."""

        def work() -> T:
            if not self._claim():
                raise anyio.get_cancelled_exc_class()
            try:
                return func()
            finally:
                with contextlib.suppress(RuntimeError):  # the loop has closed: the slot is moot
                    self._call_soon(self._give_back)

        # The bound is this slot; anyio's default limiter (40 threads) must not cap it again.
        return await anyio.to_thread.run_sync(
            work, abandon_on_cancel=True, limiter=anyio.CapacityLimiter(math.inf)
        )

    def close(self) -> None:
        """Give the slot back now if no thread took it."""
        with self._lock:
            if self._state != "pending":
                return
            self._state = "returned"
        self._give_back()

    def _claim(self) -> bool:
        with self._lock:
            if self._state != "pending":
                return False
            self._state = "running"
            return True

    def _give_back(self) -> None:
        self._limiter.release_on_behalf_of(self)
