"""Worker threads for sync tools: bounded, walk-away-able, and safe across event loops.

A timed-out sync tool cannot be interrupted: the run moves on and the thread goes on until the
function returns. anyio's ``to_thread.run_sync(abandon_on_cancel=True)`` would give the thread's
capacity token back at once (a model that keeps calling a hanging tool would grow the pool
without limit) and its worker threads are not daemons (the program could not exit while one
runs). A :class:`ThreadSlot` runs one call on a daemon thread and is held until that thread
ends, so the limiter bounds the threads that really exist.

anyio's limiters belong to the event loop that first uses them, while an agent or a tool lives
across loops (``run_sync`` starts a new one each time; tests run asyncio and trio):
:class:`LoopLocalLimiter` keeps one limiter per running loop.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar, cast

import anyio
import anyio.lowlevel

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
        """Run ``func`` in a daemon thread; cancelling this abandons the thread (it keeps its slot).

        A daemon thread of our own, not anyio's worker pool: Python waits for non-daemon threads
        at exit, so an abandoned tool would hold the program (and Ctrl-C) until it returned.
        """
        finished = anyio.Event()
        outcome: list[tuple[bool, Any]] = []

        # A raised exception's traceback holds the frames of `work` and of this method: their
        # locals must let go of it once it is handed over, or it would sit in a reference cycle.
        def deliver(box: list[tuple[bool, Any]]) -> None:  # on the event loop
            outcome.append(box.pop())
            finished.set()
            self._give_back()

        def work() -> None:  # in the thread
            if not self._claim():
                return
            box: list[tuple[bool, Any]] = []
            try:
                box.append((True, func()))
            except BaseException as exc:  # handed to the awaiting task, raised there
                box.append((False, exc))
            with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits any more
                self._call_soon(partial(deliver, box))

        context = contextvars.copy_context()  # the tool sees the caller's context variables
        threading.Thread(target=context.run, args=(work,), name="agent-tool", daemon=True).start()
        await finished.wait()
        ok, value = outcome.pop()
        if ok:
            return cast(T, value)
        try:
            raise value
        finally:
            del value

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
