"""Admission under real latency: a slow endpoint still gets ``max_connections`` requests at once.

The gate lowers how many requests go in flight only while the event loop is busy all the time
(``tests/test_gate.py`` drives that controller with injected measurements). Against an endpoint
that takes a while to answer, the loop is idle between replies, so nothing is held back: each
round of replies is followed at once by a full round of requests.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator

import anyio
import pytest

from agent import Agent
from tests._support import message, response

MAX_CONNECTIONS = 24
ROUNDS = 5
DELAY = 0.2
"""Seconds the endpoint takes per answer: a slow model, next to the client's work per reply."""

_REPLY_BODY = json.dumps(response(message("done"))).encode()
_REPLY = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
    + f"content-length: {len(_REPLY_BODY)}\r\n\r\n".encode()
    + _REPLY_BODY
)


class SlowEndpoint:
    """``POST /v1/responses`` on 127.0.0.1 in its own thread: each answer after ``DELAY`` seconds.

    Records, as each request arrives, how many requests are in flight at the server (itself
    included).
    """

    def __init__(self) -> None:
        self.seen_in_flight: list[int] = []
        self._in_flight = 0
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self.port = 0

    def __enter__(self) -> SlowEndpoint:
        self._thread = threading.Thread(target=asyncio.run, args=(self._serve(),), daemon=True)
        self._thread.start()
        self._ready.wait()
        return self

    def __exit__(self, *exc_info: object) -> None:
        assert self._loop is not None
        assert self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join()

    async def _serve(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        async with server:
            await self._stop.wait()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                length = next(
                    int(line.split(b":")[1])
                    for line in head.lower().split(b"\r\n")
                    if line.startswith(b"content-length:")
                )
                await reader.readexactly(length)
                self._in_flight += 1
                self.seen_in_flight.append(self._in_flight)
                await asyncio.sleep(DELAY)
                self._in_flight -= 1
                writer.write(_REPLY)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
def endpoint() -> Iterator[SlowEndpoint]:
    with SlowEndpoint() as server:
        yield server


def _rounds(seen: list[int]) -> list[int]:
    """The most requests in flight within each round of ``MAX_CONNECTIONS`` arrivals."""
    return [max(seen[start : start + MAX_CONNECTIONS]) for start in range(0, len(seen), MAX_CONNECTIONS)]


@pytest.mark.asyncio
async def test_a_slow_endpoint_gets_max_connections_requests_in_every_round(endpoint: SlowEndpoint) -> None:
    """Against a slow endpoint every round of requests is a full max_connections, first to last."""
    base_url = f"http://127.0.0.1:{endpoint.port}/v1"
    agent = Agent("gpt-4.1", base_url=base_url, api_key="local", max_connections=MAX_CONNECTIONS)
    async with agent, anyio.create_task_group() as group:
        for _ in range(MAX_CONNECTIONS * ROUNDS):
            group.start_soon(agent.run, "go")
    assert _rounds(endpoint.seen_in_flight) == [MAX_CONNECTIONS] * ROUNDS
