"""In-memory storage of responses, for `previous_response_id` and `GET /v1/responses/{id}`."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

from ._request import Item

__all__ = ["ResponseStore", "StoredResponse"]


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """A response body and the conversation that led to it (its whole input, chain included)."""

    body: Item
    conversation: tuple[Item, ...]

    def history(self) -> tuple[Item, ...]:
        """What a request continuing this response starts from: its inputs, then its outputs."""
        return (*self.conversation, *self.body["output"])


class ResponseStore:
    """A bounded, least-recently-used map of response id to `StoredResponse`.

    Bounded because a long-running demo server must not grow without limit; least-recently-used
    because the responses a client is still continuing are the ones it keeps touching.
    """

    def __init__(self, capacity: int = 10_000) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._capacity = capacity
        self._entries: OrderedDict[str, StoredResponse] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, entry: StoredResponse) -> None:
        """Store a response, evicting the least recently used one when full."""
        with self._lock:
            self._entries[entry.body["id"]] = entry
            self._entries.move_to_end(entry.body["id"])
            while len(self._entries) > self._capacity:
                self._entries.popitem(last=False)

    def get(self, response_id: str) -> StoredResponse | None:
        """The stored response, or None when unknown or evicted."""
        with self._lock:
            entry = self._entries.get(response_id)
            if entry is not None:
                self._entries.move_to_end(response_id)
            return entry

    def history(self, response_id: str) -> tuple[Item, ...] | None:
        """The conversation a continuation of `response_id` starts from, or None."""
        entry = self.get(response_id)
        return None if entry is None else entry.history()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)
