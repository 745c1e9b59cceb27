"""Mock ``POST /v1/responses`` servers for the benchmarks, and how many requests each can take.

Two servers answer the API page's scenario (turn 1: four parallel ``function_call`` items,
``current_time``, ``system_info``, ``math_calculator``, ``random_generator``; turn 2: a final
message), or with ``--script fanout`` sixteen calls ``sleeper_00`` ... ``sleeper_15``:

- ``local``: the project's own local model server, ``agent.localmodel.serve(policy, port=...,
  log_level="warning")`` (starlette + uvicorn, full request validation, a ``ScriptPolicy``).
- ``raw``: a minimal asyncio HTTP/1.1 responder. Its two bodies are canned: produced once, at
  start-up, by the local model server's app in-process, so both servers send the same bytes
  (give or take ids). It picks turn 2 when the request body holds a ``function_call_output``
  item, and can delay every response (``--delay 0.05``) without using CPU while it waits.
  ``GET /stats`` returns its request and accepted-connection counters.

Either runs as its own process pinned to core 0 (``os.sched_setaffinity``); clients pin to core 1.

Run::

    /tmp/v/bin/python bench/server.py capacity            # both servers' requests/s (about 10 s)
    /tmp/v/bin/python bench/server.py serve --kind raw --port 8123 [--script fanout] [--delay 0.05]
    /tmp/v/bin/python bench/server.py serve --kind local --port 8123

``capacity`` pins a load generator (raw asyncio sockets, 16 keep-alive connections, the two
requests agent-runtime really sends, alternately) to core 1 for 3 s per server, and prints the
throughput it got, the server's CPU per request (from ``/proc``) and so the server's capacity
on one core, ``1 / CPU per request``: the ceiling any client measured against it must stay under.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import _common
from _common import CLIENT_CPU, FANOUT_CALLS, FANOUT_PREFIX, SERVER_CPU, ServerKind, ServerProcess, Table

if TYPE_CHECKING:
    from agent.localmodel import Policy

__all__ = ["Exchange", "RawServer", "exchange"]

JSON = dict[str, Any]
_TURN_2_MARKER = b'"function_call_output"'


@dataclass(frozen=True, slots=True)
class Exchange:
    """One scripted conversation: the two request bodies a client sends, the two bodies it gets."""

    first_request: JSON
    first_response: bytes
    final_request: JSON
    final_response: bytes


def _fanout_tools() -> list[JSON]:
    parameters = {"type": "object", "properties": {}, "additionalProperties": False, "required": []}
    return [
        {
            "type": "function",
            "name": f"{FANOUT_PREFIX}{i:02d}",
            "description": "Sleep for a while, then say so.",
            "parameters": parameters,
            "strict": True,
        }
        for i in range(FANOUT_CALLS)
    ]


def _policy(script: str) -> Policy:
    from agent.localmodel import ScriptPolicy, demo_script

    if script == "demo":
        return demo_script()
    calls = [
        {"type": "function_call", "call_id": f"call_{tool['name']}", "name": tool["name"], "arguments": {}}
        for tool in _fanout_tools()
    ]
    return ScriptPolicy([calls, [{"type": "message", "content": "All done: {{outputs}}"}]])


def _tools_and_outputs(script: str) -> tuple[list[JSON], Callable[[str, str], Awaitable[str]]]:
    """The request's tools, and what a client would answer to a call (name, arguments)."""
    if script == "fanout":

        async def sleeper_output(name: str, arguments: str) -> str:
            return json.dumps(f"{name} slept")

        return _fanout_tools(), sleeper_output
    from builtin_tools import registry

    async def run_builtin(name: str, arguments: str) -> str:
        found = registry.get(name)
        assert found is not None
        result = found.function(**json.loads(arguments))
        # Three of the builtin tools are async, system_info is not.
        return json.dumps(await result if inspect.isawaitable(result) else result)

    return registry.wire(), run_builtin


def exchange(script: str = "demo") -> Exchange:
    """Play the script once through the local model server's app, in-process."""
    return asyncio.run(_exchange(script))


async def _exchange(script: str) -> Exchange:
    import httpx

    from agent.localmodel import create_app

    tools, answer = _tools_and_outputs(script)
    transport = httpx.ASGITransport(app=create_app(_policy(script), seed=1))
    first: JSON = {
        "model": "gpt-4.1",
        "input": [{"role": "user", "content": "Do the tasks."}],
        "tools": tools,
        "tool_choice": "auto",
        "parallel_tool_calls": True,
    }
    headers = {"Authorization": "Bearer local"}
    async with httpx.AsyncClient(transport=transport, base_url="http://local") as client:
        reply = await client.post("/v1/responses", json=first, headers=headers)
        reply.raise_for_status()
        output: list[JSON] = reply.json()["output"]
        calls = [item for item in output if item["type"] == "function_call"]
        outputs = [_output_item(c["call_id"], await answer(c["name"], c["arguments"])) for c in calls]
        final = {**first, "input": [*first["input"], *output, *outputs]}
        last = await client.post("/v1/responses", json=final, headers=headers)
        last.raise_for_status()
    return Exchange(first, reply.content, final, last.content)


def _output_item(call_id: str, output: str) -> JSON:
    return {"type": "function_call_output", "call_id": call_id, "output": output}


def _http_reply(body: bytes, status: str = "200 OK") -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
        "x-request-id: req_bench\r\n\r\n"
    )
    return head.encode() + body


def _message_end(buffer: bytearray) -> tuple[int, int] | None:
    """Where the first complete HTTP message in ``buffer`` has its body: (start, end)."""
    header_end = buffer.find(b"\r\n\r\n")
    if header_end < 0:
        return None
    start = header_end + 4
    at = buffer.find(b"content-length:", 0, header_end)
    if at < 0:
        at = bytes(buffer[:header_end]).lower().find(b"content-length:")
    length = 0
    if at >= 0:
        line_end = buffer.find(b"\r\n", at, start)
        length = int(buffer[at + 15 : line_end if line_end >= 0 else header_end])
    end = start + length
    return (start, end) if len(buffer) >= end else None


class RawServer:
    """Canned answers for ``POST /v1/responses``, optionally delayed; counts what it served."""

    def __init__(self, first: bytes, final: bytes, *, delay: float = 0.0) -> None:
        self.first = _http_reply(first)
        self.final = _http_reply(final)
        self.delay = delay
        self.requests = 0
        self.connections = 0

    def reply(self, buffer: bytearray, start: int, end: int) -> bytes:
        """The answer to the request whose body is ``buffer[start:end]``."""
        if buffer.startswith(b"GET /stats"):
            stats = {"requests": self.requests, "connections": self.connections}
            return _http_reply(json.dumps(stats).encode())
        self.requests += 1
        return self.final if buffer.find(_TURN_2_MARKER, start, end) >= 0 else self.first

    def protocol(self) -> asyncio.Protocol:
        """A protocol instance for one accepted connection."""
        self.connections += 1
        return _Responder(self)


class _Responder(asyncio.Protocol):
    def __init__(self, server: RawServer) -> None:
        self._server = server
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while (span := _message_end(self._buffer)) is not None:
            start, end = span
            reply = self._server.reply(self._buffer, start, end)
            del self._buffer[:end]
            if self._server.delay > 0:
                asyncio.get_running_loop().call_later(self._server.delay, self._write, reply)
            else:
                self._write(reply)

    def _write(self, reply: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None


def serve_raw(port: int, script: str, delay: float) -> None:
    """Run the raw responder on 127.0.0.1:``port`` until SIGTERM or SIGINT."""
    played = exchange(script)
    server = RawServer(played.first_response, played.final_response, delay=delay)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        listener = await loop.create_server(server.protocol, "127.0.0.1", port, backlog=4096)
        async with listener:
            await stop.wait()

    asyncio.run(main())


def serve_local(port: int, script: str) -> None:
    """Run the project's local model server on 127.0.0.1:``port`` (uvicorn, log level warning)."""
    from agent.localmodel import serve

    serve(_policy(script), port=port, log_level="warning")


class _LoadConnection(asyncio.Protocol):
    """Sends the requests in turn on one keep-alive connection, the next as soon as one is answered."""

    def __init__(self, requests: tuple[bytes, ...], counts: list[int], stop_at: float) -> None:
        self._requests = requests
        self._counts = counts  # [answered, errors]
        self._stop_at = stop_at
        self._buffer = bytearray()
        self._sent = 0
        self._transport: asyncio.Transport | None = None
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._send()

    def _send(self) -> None:
        assert self._transport is not None
        if time.perf_counter() >= self._stop_at:
            self._transport.close()
            return
        self._transport.write(self._requests[self._sent % len(self._requests)])
        self._sent += 1

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while (span := _message_end(self._buffer)) is not None:
            ok = self._buffer.startswith(b"HTTP/1.1 200")
            self._counts[0 if ok else 1] += 1
            del self._buffer[: span[1]]
            self._send()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)


def _request_bytes(port: int, body: JSON) -> bytes:
    payload = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    head = (
        f"POST /v1/responses HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: */*\r\n"
        "Authorization: Bearer local\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n"
    )
    return head.encode() + payload


async def _load(port: int, requests: tuple[bytes, ...], connections: int, seconds: float) -> tuple[int, int]:
    loop = asyncio.get_running_loop()
    counts = [0, 0]
    stop_at = time.perf_counter() + seconds
    protocols = []
    for _ in range(connections):
        _, protocol = await loop.create_connection(
            lambda: _LoadConnection(requests, counts, stop_at), "127.0.0.1", port
        )
        protocols.append(protocol)
    await asyncio.gather(*(p.done for p in protocols))
    return counts[0], counts[1]


def capacity(seconds: float = 3.0, connections: int = 16) -> Table:
    """Load each server to saturation from core 1; the table of what it sustained."""
    played = exchange("demo")
    table = Table("server", "requests/s", "errors", "server CPU/request", "server busy", "capacity, 1 core")
    _common.pin(CLIENT_CPU)
    kinds: tuple[ServerKind, ...] = ("raw", "local")
    for kind in kinds:
        with ServerProcess(kind) as server:
            requests = (
                _request_bytes(server.port, played.first_request),
                _request_bytes(server.port, played.final_request),
            )
            asyncio.run(_load(server.port, requests, connections, 0.5))  # warm-up
            cpu_before, started = server.cpu_seconds(), time.perf_counter()
            answered, errors = asyncio.run(_load(server.port, requests, connections, seconds))
            wall = time.perf_counter() - started
            cpu = server.cpu_seconds() - cpu_before
        per_request = cpu / max(answered, 1)
        table.add(
            kind,
            f"{answered / wall:,.0f}",
            str(errors),
            f"{per_request * 1e6:,.0f} µs",
            f"{cpu / wall:.0%}",
            f"{1 / per_request:,.0f} req/s" if per_request else "n/a",
        )
    return table


def main() -> None:
    """Parse the command line and serve, or measure capacity."""
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve in the foreground, pinned to core 0")
    serve.add_argument("--kind", choices=["raw", "local"], default="raw")
    serve.add_argument("--script", choices=["demo", "fanout"], default="demo")
    serve.add_argument("--port", type=int, default=8123)
    serve.add_argument("--delay", type=float, default=0.0, help="seconds before each answer (raw only)")
    measure = commands.add_parser("capacity", help="measure both servers' requests/s")
    measure.add_argument("--seconds", type=float, default=3.0)
    measure.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    if args.command == "capacity":
        print(capacity(args.seconds, args.connections).render())
        return
    _common.pin(SERVER_CPU)
    if args.kind == "raw":
        serve_raw(args.port, args.script, args.delay)
    elif args.delay:
        parser.error("--delay needs --kind raw")
    else:
        serve_local(args.port, args.script)


if __name__ == "__main__":
    main()
