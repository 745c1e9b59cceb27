"""In-memory storage of responses, for `previous_response_id` and `GET /v1/responses/{id}`."""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from dataclasses import dataclass, field

from ._request import Item

__all__ = ["ResponseStore", "StoredResponse"]


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """A response body and the conversation that led to it (its whole input, chain included)."""

    body: Item
    conversation: tuple[Item, ...]
    size: int = field(init=False, compare=False)
    """What the store charges for this entry: the JSON length of its conversation and its body."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "size", _json_length(self.conversation) + _json_length(self.body))

    def history(self) -> tuple[Item, ...]:
        """What a request continuing this response starts from: its inputs, then its outputs."""
        return (*self.conversation, *self.body["output"])


class ResponseStore:
    """A bounded, least-recently-used map of response id to `StoredResponse`.

    Bounded by count and by size, because a long-running demo server must not grow without limit:
    a client that resends its whole history with every request has each response stored with its
    own copy of that history, so the count alone bounds nothing (410 responses of 41-turn
    conversations with 8 KB tool outputs held 77 MB). An entry's size is its JSON length, whole
    conversation included; chained entries share their history in memory, so this overstates
    them, which only evicts sooner. The newest entry is always kept, even when it alone is over
    `max_bytes`, so that any conversation can be continued at least once.

    Least-recently-used because the responses a client is still continuing are the ones it keeps
    touching.
    """

    def __init__(self, capacity: int = 10_000, max_bytes: int = 64_000_000) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        if max_bytes < 1:
            raise ValueError("max_bytes must be at least 1")
        self._capacity = capacity
        self._max_bytes = max_bytes
        self._entries: OrderedDict[str, StoredResponse] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def put(self, entry: StoredResponse) -> None:
        """Store a response, evicting the least recently used ones while over a bound."""
        response_id = entry.body["id"]
        with self._lock:
            replaced = self._entries.pop(response_id, None)
            self._bytes += entry.size - (replaced.size if replaced else 0)
            self._entries[response_id] = entry
            while len(self._entries) > 1 and (
                len(self._entries) > self._capacity or self._bytes > self._max_bytes
            ):
                _, evicted = self._entries.popitem(last=False)
                self._bytes -= evicted.size

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


def _json_length(value: object) -> int:
    # Characters, not UTF-8 bytes: encoding only to measure would double the cost, and a
    # character count is within a small factor of the memory either way.
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")))
