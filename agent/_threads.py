"""Sync tools in worker threads that a timeout can walk away from, without unbounding the pool.

``anyio.to_thread.run_sync(..., abandon_on_cancel=True)`` lets the run move on when a sync tool
times out, but gives the thread's capacity token back at once, while the thread still runs:
a model that keeps calling a hanging tool would grow the pool without limit. Here the token is
held until the thread itself is done, so ``limiter`` bounds the threads that really exist.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Callable
from typing import TypeVar

import anyio
import anyio.from_thread
import anyio.to_thread

__all__ = ["run_sync_bounded"]

T = TypeVar("T")


class _Lease:
    """One capacity token, returned exactly once: by the thread, or by the caller if it never ran."""

    def __init__(self, limiter: anyio.CapacityLimiter) -> None:
        self._limiter = limiter
        self._lock = threading.Lock()
        self._state = "pending"  # -> "running" (thread owns the token) or "returned"

    def claim_for_thread(self) -> bool:
        with self._lock:
            if self._state != "pending":
                return False
            self._state = "running"
            return True

    def release_from_thread(self) -> None:
        # The event loop may be gone when an abandoned thread ends; the token is moot then.
        with contextlib.suppress(RuntimeError):
            anyio.from_thread.run_sync(self._limiter.release_on_behalf_of, self)

    def release_if_never_started(self) -> None:
        with self._lock:
            if self._state != "pending":
                return
            self._state = "returned"
        self._limiter.release_on_behalf_of(self)


async def run_sync_bounded(func: Callable[[], T], limiter: anyio.CapacityLimiter) -> T:
    """Run ``func`` in a worker thread; cancellable, with ``limiter`` counting live threads."""
    lease = _Lease(limiter)
    await limiter.acquire_on_behalf_of(lease)

    def work() -> T:
        if not lease.claim_for_thread():
            raise anyio.get_cancelled_exc_class()
        try:
            return func()
        finally:
            lease.release_from_thread()

    # The real bound is ``limiter``; anyio's default limiter (40 threads) must not cap it again.
    # (A fresh one per call: a module-level limiter would be pinned to the first event loop.)
    unbounded = anyio.CapacityLimiter(math.inf)
    try:
        return await anyio.to_thread.run_sync(work, abandon_on_cancel=True, limiter=unbounded)
    finally:
        lease.release_if_never_started()
