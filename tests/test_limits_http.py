"""What the endpoint sends us, bounded and typed: sizes, nesting, encodings, redirects, URLs.

MockTransport tests use streamed bodies (async iterators), so the bytes go through the same
path as a socket's; the tests marked "socket" run against a tiny raw HTTP server on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import gc
import json
import re
import socket
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.abc
import h2.config
import h2.connection
import h2.events
import httpx
import pytest

from agent import (
    Agent,
    APIConnectionError,
    APIStatusError,
    Limits,
    ProtocolError,
    ResponseTooLargeError,
    UsageError,
    tool,
)
from agent._wire import parse_response
from tests._support import (
    FAST_RETRY,
    capturing_logger,
    function_call,
    message,
    response,
    scripted_agent,
    sse_text,
    stream_events,
)

KEY = "sk-test-secret-key-123"
SMALL = Limits(
    max_response_bytes=64 * 1024,
    max_event_bytes=32 * 1024,
    max_stream_bytes=256 * 1024,
    max_output_items=5,
    max_json_depth=20,
)
CHUNK = 4096


class Counted:
    """An endless (or finite) streamed body that counts the bytes handed out."""

    def __init__(self, head: bytes, filler: bytes = b"", *, forever: bool = True) -> None:
        self.head, self.filler, self.forever, self.sent = head, filler, forever, 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for start in range(0, len(self.head), CHUNK):
            self.sent += len(part := self.head[start : start + CHUNK])
            yield part
        while self.forever:
            await anyio.lowlevel.checkpoint()
            self.sent += len(self.filler)
            yield self.filler


def streamed(body: Counted | bytes, content_type: str = "application/json", **headers: str) -> httpx.Response:
    content = body if isinstance(body, Counted) else Counted(body, forever=False)
    return httpx.Response(200, headers={"content-type": content_type, **headers}, content=content)


def sse_streamed(events: list[Any], *, then: bytes = b"", forever: bool = False) -> httpx.Response:
    return streamed(Counted(sse_text(events).encode(), then, forever=forever), "text/event-stream")


# --- sizes (defect 11) -----------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_body_past_max_response_bytes_is_refused_near_the_limit() -> None:
    """An endless body ends in ResponseTooLargeError naming the limit, read to near the cap only."""
    body = Counted(b'{"id": "r", "output": [], "pad": "', b"x" * CHUNK)
    agent, endpoint = scripted_agent([streamed(body)], limits=SMALL)
    with pytest.raises(ResponseTooLargeError) as info:
        await agent.run("hi")
    error = info.value
    assert (error.status, error.transient, len(endpoint.requests)) == (200, False, 1)
    assert "max_response_bytes=65536" in str(error)
    assert body.sent <= SMALL.max_response_bytes + 2 * CHUNK


@pytest.mark.asyncio
async def test_an_error_body_past_max_response_bytes_is_refused() -> None:
    """A 503 whose body never ends is refused at the cap too (and keeps its status)."""
    reply = httpx.Response(503, content=Counted(b"<html>", b"busy " * 1000))
    agent, _ = scripted_agent([reply], limits=SMALL, max_retries=0)
    with pytest.raises(ResponseTooLargeError) as info:
        await agent.run("hi")
    assert info.value.status == 503


def gzip_bomb(size: int) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    zeros = bytes(1024 * 1024)
    return b"".join([*(packer.compress(zeros) for _ in range(size // len(zeros))), packer.flush()])


@pytest.mark.asyncio
async def test_a_compressed_bomb_stops_near_the_limit() -> None:
    """64 MiB of gzipped zeros (64 KiB sent) are inflated in bounded steps and refused, never held."""
    bomb = gzip_bomb(64 * 1024 * 1024)
    agent, _ = scripted_agent([streamed(bomb, **{"content-encoding": "gzip"})], limits=SMALL)
    tracemalloc.start()
    try:
        with pytest.raises(ResponseTooLargeError):
            await agent.run("hi")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2 * 1024 * 1024


@pytest.mark.asyncio
@pytest.mark.parametrize("coding", ["gzip", "deflate", "raw-deflate"])
async def test_compressed_bodies_are_read(coding: str) -> None:
    """gzip and deflate (zlib-wrapped or raw, as servers send it) bodies decode to the response."""
    wbits = {"gzip": zlib.MAX_WBITS | 16, "deflate": zlib.MAX_WBITS, "raw-deflate": -zlib.MAX_WBITS}[coding]
    packer = zlib.compressobj(6, zlib.DEFLATED, wbits)
    data = packer.compress(json.dumps(response(message("packed"))).encode()) + packer.flush()
    reply = streamed(data, **{"content-encoding": coding.removeprefix("raw-")})
    agent, endpoint = scripted_agent([reply])
    assert (await agent.run("hi")).output == "packed"
    assert endpoint.headers[0]["accept-encoding"] == "gzip, deflate"


@pytest.mark.asyncio
async def test_an_encoding_not_asked_for_is_a_protocol_error() -> None:
    """A body in an encoding the request did not accept (br) cannot be bounded: ProtocolError."""
    agent, _ = scripted_agent([streamed(b"\x0b\x02\x80{}\x03", **{"content-encoding": "br"})], max_retries=0)
    with pytest.raises(ProtocolError, match="'br'"):
        await agent.run("hi")


@pytest.mark.asyncio
async def test_one_huge_stream_event_is_refused_near_max_event_bytes() -> None:
    """A single event with no line break in sight is not buffered past max_event_bytes."""
    events = stream_events(response(message("never")))[:1]
    body = Counted(sse_text(events).encode() + b"data: " + b"x" * 100, b"x" * CHUNK)
    agent, _ = scripted_agent([streamed(body, "text/event-stream")], limits=SMALL)
    with pytest.raises(ResponseTooLargeError, match="max_event_bytes=32768"):
        await agent.run("hi", stream=True)
    assert body.sent <= SMALL.max_event_bytes + 4 * CHUNK


@pytest.mark.asyncio
async def test_an_event_of_many_data_lines_is_refused_at_max_event_bytes() -> None:
    """Many short data lines add up to one event: the cap counts the whole event."""
    body = Counted(b"event: x\n", b"data: " + b"y" * 1000 + b"\n")
    agent, _ = scripted_agent([streamed(body, "text/event-stream")], limits=SMALL)
    with pytest.raises(ResponseTooLargeError, match="max_event_bytes"):
        await agent.run("hi", stream=True)
    assert body.sent <= SMALL.max_event_bytes + 4 * CHUNK


@pytest.mark.asyncio
async def test_an_endless_stream_is_refused_at_max_stream_bytes() -> None:
    """Small events forever (no terminal event) end at max_stream_bytes."""
    keepalive = b'event: keepalive\ndata: {"type": "keepalive"}\n\n'
    body = Counted(b"", keepalive * 50)
    agent, _ = scripted_agent([streamed(body, "text/event-stream")], limits=SMALL)
    with pytest.raises(ResponseTooLargeError, match="max_stream_bytes=262144"):
        await agent.run("hi", stream=True)
    assert body.sent <= SMALL.max_stream_bytes + 4 * CHUNK


@pytest.mark.asyncio
async def test_too_many_output_items_are_refused() -> None:
    """More than max_output_items output items: ResponseTooLargeError, not transient."""
    agent, endpoint = scripted_agent([response(*[message("m")] * 6)], limits=SMALL)
    with pytest.raises(ResponseTooLargeError, match="max_output_items=5") as info:
        await agent.run("hi")
    assert (info.value.transient, len(endpoint.requests)) == (False, 1)


@pytest.mark.asyncio
async def test_too_many_streamed_output_items_are_refused() -> None:
    """A stream announcing more items than max_output_items is refused before its end."""
    agent, _ = scripted_agent([sse_streamed(stream_events(response(*[message("m")] * 6)))], limits=SMALL)
    with pytest.raises(ResponseTooLargeError, match="max_output_items"):
        await agent.run("hi", stream=True)


def test_parsing_keeps_the_output_list_as_sent() -> None:
    """The output items are not copied: a big response is held once."""
    body = response(message("a"), function_call("f"))
    assert parse_response(body).output is body["output"]


@pytest.mark.asyncio
async def test_a_quoted_body_is_cut_to_200_characters() -> None:
    """A huge non-JSON body is quoted by its first 200 characters."""
    agent, _ = scripted_agent([streamed(b"<html>" + b"z" * 50_000)], max_retries=0)
    with pytest.raises(ProtocolError) as info:
        await agent.run("hi")
    assert len(str(info.value)) < 400


# --- JSON from the wire (defect 14) ------------------------------------------------------------

BAD_BODIES = {
    "deep": b"[" * 100_000 + b"]" * 100_000,
    "past max_json_depth": b'{"id": "r", "output": [], "x": ' + b"[" * 25 + b"]" * 25 + b"}",
    "invalid UTF-8": b'{"id": "r\xff", "output": []}',
    "NaN": b'{"id": "r", "output": [], "t": NaN}',
    "Infinity": b'{"id": "r", "output": [], "t": -Infinity}',
    "overflowing float": b'{"id": "r", "output": [], "t": 1e999}',
    "huge integer": b'{"id": "r", "output": [], "t": ' + b"9" * 5000 + b"}",
    "a list": b"[1, 2]",
    "a string": b'"response"',
    "output not a list": b'{"id": "r", "output": {"a": 1}}',
    "an item not an object": b'{"id": "r", "output": [1]}',
}


@pytest.mark.asyncio
@pytest.mark.parametrize("body", BAD_BODIES.values(), ids=BAD_BODIES.keys())
async def test_hostile_json_bodies_are_protocol_errors(body: bytes) -> None:
    """Every body that is not a Responses object in plain JSON is a ProtocolError."""
    agent, _ = scripted_agent([streamed(body)], limits=SMALL, max_retries=0)
    with pytest.raises(ProtocolError):
        await agent.run("hi")


@pytest.mark.asyncio
async def test_nesting_past_max_json_depth_is_too_large() -> None:
    """Nesting past the limit names max_json_depth in a ResponseTooLargeError."""
    agent, _ = scripted_agent([streamed(BAD_BODIES["deep"])], max_retries=0)
    with pytest.raises(ResponseTooLargeError, match="max_json_depth=200"):
        await agent.run("hi")


@pytest.mark.asyncio
async def test_nesting_within_max_json_depth_is_read() -> None:
    """A body nested up to the limit, brackets inside strings aside, parses."""
    nested: Any = "deep [[[{{{ text"
    for _ in range(18):
        nested = [nested]
    agent, _ = scripted_agent([response(message("ok"), extra=nested)], limits=SMALL)
    assert (await agent.run("hi")).output == "ok"


BAD_EVENTS = {
    "deep": b"data: " + b"[" * 100_000 + b"]" * 100_000 + b"\n\n",
    "invalid UTF-8": b'data: {"type": "x", "delta": "\xc3\x28"}\n\n',
    "NaN": b'data: {"type": "x", "n": NaN}\n\n',
}


@pytest.mark.asyncio
@pytest.mark.parametrize("event", BAD_EVENTS.values(), ids=BAD_EVENTS.keys())
async def test_hostile_stream_events_are_protocol_errors(event: bytes) -> None:
    """A stream event nested too deep, not UTF-8 or with NaN is a ProtocolError."""
    agent, _ = scripted_agent([streamed(event, "text/event-stream")], max_retries=0)
    with pytest.raises(ProtocolError):
        await agent.run("hi", stream=True)


@tool
def echo(text: str) -> str:
    """Say it back."""
    return text


@pytest.mark.asyncio
@pytest.mark.parametrize("where", ["name", "arguments"])
async def test_a_lone_surrogate_the_model_wrote_does_not_break_the_next_request(where: str) -> None:
    """ "\\ud800" (legal JSON) in a call's name or arguments goes back escaped; the run goes on."""
    call = function_call("echo\ud800" if where == "name" else "echo", '{"text": "bad \ud800 text"}')
    escaped = json.dumps(response(call)).encode()  # as a server sends it: \ud800, six ASCII bytes
    first = httpx.Response(200, headers={"content-type": "application/json"}, content=escaped)
    agent, endpoint = scripted_agent([first, response(message("done"))], tools=[echo])
    assert (await agent.run("hi")).output == "done"
    sent = [i for i in endpoint.requests[1]["input"] if i.get("type") == "function_call_output"]
    assert len(sent) == 1
    assert endpoint.requests[1]["input"][1][where].count("\ud800") == 1


@pytest.mark.asyncio
async def test_request_bodies_are_compact_utf8_json() -> None:
    """Requests carry Content-Type application/json and UTF-8 text unescaped."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=response(message("ok")))

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        await Agent("m", base_url="http://gw.test/v1", http_client=client).run("météo 工具")
    assert seen[0].headers["content-type"] == "application/json"
    assert "météo 工具".encode() in seen[0].content


@pytest.mark.asyncio
async def test_a_request_body_that_is_not_json_is_a_usage_error() -> None:
    """NaN or an object JSON cannot hold in extra_body is the caller's mistake, typed."""
    agent, endpoint = scripted_agent([], extra_body={"temperature": float("nan")})
    with pytest.raises(UsageError, match="cannot be sent as JSON"):
        await agent.run("hi")
    assert endpoint.requests == []


# --- stateless reasoning replay (issue 7, "also check") -----------------------------------------

ENCRYPTED = "reasoning.encrypted_content"
LOGPROBS = "message.output_text.logprobs"
REASONING = {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "gAAA"}


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("extra", "items", "include"),
    [
        ({"store": False}, [REASONING], [ENCRYPTED]),
        (
            {"store": False, "include": ["message.output_text.logprobs"]},
            [REASONING],
            ["message.output_text.logprobs", "reasoning.encrypted_content"],
        ),
        ({"store": False, "reasoning": {"effort": "low"}}, [], [ENCRYPTED]),
        ({"store": False}, [], None),
        ({}, [REASONING], None),
        (
            {"store": False, "include": ["reasoning.encrypted_content"]},
            [REASONING],
            ["reasoning.encrypted_content"],
        ),
    ],
)
async def test_stateless_reasoning_asks_for_its_encrypted_content(
    extra: dict[str, Any], items: list[dict[str, Any]], include: list[str] | None
) -> None:
    """store: false with reasoning (items to replay, or a reasoning option) adds the include."""
    agent, endpoint = scripted_agent([response(message("ok"))], extra_body=extra)
    await agent.run([*items, {"role": "user", "content": "hi"}])
    assert endpoint.requests[0].get("include") == include
    assert extra.get("include") in (None, [LOGPROBS], [ENCRYPTED])  # the caller's list is not changed


# --- credentials in base_url (defect 13) ---------------------------------------------------------

SECRET_URLS = [
    "https://user:s3cr3t@api.test:99999/v1",
    "ftp://user:s3cr3t@api.test/v1",
    "https://api.test:99999/v1?api-key=s3cr3t",
    "https://api.test:99999/v1?api_key=s3cr3t",
    "https://api.test:99999/v1?key=s3cr3t&token=s3cr3t",
    "https://user:s3/cr3t@api.test/v1",
    "https://user:s3#cr3t@api.test/v1",
    "https://user:s3cr3t@[::1/v1",
]


@pytest.mark.parametrize("url", SECRET_URLS)
def test_a_refused_base_url_never_shows_its_credentials(url: str) -> None:
    """The UsageError for a bad base_url hides user info and query, and chains nothing."""
    with pytest.raises(UsageError) as info:
        Agent("m", base_url=url)
    assert "s3" not in str(info.value)
    assert info.value.__context__ is None


@pytest.mark.asyncio
async def test_connection_errors_and_logs_never_show_url_credentials() -> None:
    """A failing request's error, its log lines and the agent's repr hide the URL's secrets."""
    logger, capture = capturing_logger()
    url = "http://user:s3cr3t@127.0.0.1:9/v1?api-key=s3cr3t"
    agent = Agent("m", base_url=url, api_key=KEY, max_retries=1, retry=FAST_RETRY, logger=logger)
    async with agent:
        with pytest.raises(APIConnectionError) as info:
            await agent.run("hi")
    shown = [str(info.value), repr(info.value), repr(agent), *map(str, capture.entries)]
    assert not [text for text in shown if "s3cr3t" in text or KEY in text]


# --- redirects ------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_redirect_is_a_typed_status_error() -> None:
    """A 3xx is an APIStatusError with its status and where it pointed (without credentials)."""
    location = "https://user:s3cr3t@other.test/v1/responses?key=s3cr3t"
    reply = httpx.Response(307, headers={"location": location})
    agent, endpoint = scripted_agent([reply, reply, reply])
    with pytest.raises(APIStatusError) as info:
        await agent.run("hi")
    assert (info.value.status, len(endpoint.requests)) == (307, 1)
    assert "https://other.test/v1/responses" in str(info.value)
    assert "s3cr3t" not in str(info.value)


# --- a raw HTTP/1.1 server on 127.0.0.1 -----------------------------------------------------------


async def read_request(stream: anyio.abc.ByteStream, pending: bytearray) -> tuple[bytes, bytes] | None:
    while b"\r\n\r\n" not in pending:
        try:
            pending += await stream.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            return None
    head, _, rest = bytes(pending).partition(b"\r\n\r\n")
    found = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
    length = int(found.group(1)) if found else 0
    while len(rest) < length:
        rest += await stream.receive()
    pending[:] = rest[length:]
    return head, rest[:length]


Answer = Callable[[bytes, bytes], bytes]


@dataclass
class RawServer:
    """Answers each request on 127.0.0.1 with ``answer(head, body)``; counts connections."""

    answer: Answer
    then_hang: bool = False
    """Keep each connection open and silent after its first answer."""
    port: int = 0
    accepted: int = 0

    async def serve(self, stream: anyio.abc.SocketStream) -> None:
        self.accepted += 1
        pending = bytearray()
        async with stream:
            while (request := await read_request(stream, pending)) is not None:
                await stream.send(self.answer(*request))
                if self.then_hang:
                    await anyio.sleep_forever()


@asynccontextmanager
async def raw_server(answer: Answer, *, then_hang: bool = False) -> AsyncIterator[RawServer]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    server = RawServer(answer, then_hang, sock.getsockname()[1])
    listener = await anyio.abc.SocketListener.from_socket(sock)
    async with listener, anyio.create_task_group() as group:
        group.start_soon(listener.serve, server.serve)
        try:
            yield server
        finally:
            group.cancel_scope.cancel()


def sse_bytes(event: Any) -> bytes:
    return sse_text([event]).encode()


def chunked(events: list[Any], *, end: bool = True) -> bytes:
    head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
    frames = [
        f"{len(data):x}\r\n".encode() + data + b"\r\n" for e in events if (data := sse_text([e]).encode())
    ]
    return head + b"".join(frames) + (b"0\r\n\r\n" if end else b"")


def json_answer(body: Any, status: str = "200 OK", **headers: str) -> bytes:
    data = json.dumps(body).encode()
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    head = (
        f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {len(data)}\r\n{extra}\r\n"
    )
    return head.encode() + data


# --- the end of a stream (defect 8) ---------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_stream_held_open_after_its_terminal_event_does_not_stall_the_turn() -> None:
    """After response.completed the reply is closed at once, however long the server keeps it open."""

    async def content() -> AsyncIterator[bytes]:
        yield sse_text(stream_events(response(message("done")))).encode()
        await anyio.sleep_forever()

    reply = httpx.Response(200, headers={"content-type": "text/event-stream"}, content=content())
    agent, _ = scripted_agent([reply], timeout=600)
    with anyio.fail_after(5):
        assert (await agent.run("go", stream=True)).output == "done"


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_socket_a_gateway_holding_the_stream_open_does_not_stall_or_leak(anyio_backend: str) -> None:
    """Over a real socket: the run ends right after the terminal event, nothing left unclosed."""
    events = stream_events(response(message("done")))
    async with raw_server(lambda head, body: chunked(events, end=False), then_hang=True) as server:
        base = f"http://127.0.0.1:{server.port}/v1"
        async with Agent("m", base_url=base, api_key=KEY, timeout=30) as agent:
            with anyio.fail_after(5):
                assert (await agent.run("go", stream=True)).output == "done"
        gc.collect()
        await anyio.sleep(0.01)


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_socket_a_stream_that_ends_normally_keeps_its_connection(anyio_backend: str) -> None:
    """A server that ends the body right after the terminal event: the connection is used again."""
    events = stream_events(response(message("done")))
    async with raw_server(lambda head, body: chunked(events)) as server:
        base = f"http://127.0.0.1:{server.port}/v1"
        async with Agent("m", base_url=base, api_key=KEY) as agent:
            for _ in range(3):
                assert (await agent.run("go", stream=True)).output == "done"
        assert server.accepted == 1


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_socket_a_refused_body_is_closed_without_leaks(anyio_backend: str) -> None:
    """A body refused at the cap closes its connection; no generator is left to the GC."""
    big = json_answer({"id": "r", "output": [], "pad": "x" * 200_000})
    async with raw_server(lambda head, body: big) as server:
        base = f"http://127.0.0.1:{server.port}/v1"
        async with Agent("m", base_url=base, api_key=KEY, limits=SMALL) as agent:
            with pytest.raises(ResponseTooLargeError):
                await agent.run("go")
        gc.collect()
        await anyio.sleep(0.01)


# --- redirects over sockets -------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_socket_a_followed_redirect_to_another_origin_gets_no_authorization() -> None:
    """With your own client following redirects, another origin (port) never sees the key."""
    heads: list[bytes] = []

    def final(head: bytes, body: bytes) -> bytes:
        heads.append(head)
        return json_answer(response(message("moved")))

    async with raw_server(final) as target:
        location = f"http://127.0.0.1:{target.port}/v1/responses"

        def redirect(head: bytes, body: bytes) -> bytes:
            heads.append(head)
            return json_answer({}, "307 Temporary Redirect", location=location)

        async with raw_server(redirect) as origin, httpx.AsyncClient(follow_redirects=True) as client:
            agent = Agent("m", base_url=f"http://127.0.0.1:{origin.port}/v1", api_key=KEY, http_client=client)
            assert (await agent.run("hi")).output == "moved"
    assert [KEY.encode() in head for head in heads] == [True, False]


async def serve_h2_held_open(stream: anyio.abc.SocketStream) -> None:
    """HTTP/2 (prior knowledge): answer each request with a stream that never ends."""
    connection = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    connection.initiate_connection()
    data = sse_text(stream_events(response(message("done")))).encode()
    async with stream:
        await stream.send(connection.data_to_send())
        with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError):
            while received := await stream.receive():
                for event in connection.receive_data(received):
                    if isinstance(event, h2.events.StreamEnded):
                        headers = [(":status", "200"), ("content-type", "text/event-stream")]
                        connection.send_headers(event.stream_id, headers)
                        connection.send_data(event.stream_id, data)
                await stream.send(connection.data_to_send())


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_socket_http2_streams_held_open_do_not_stall_the_connection(anyio_backend: str) -> None:
    """Over HTTP/2, streams left open after their terminal event are closed; the connection serves on."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    base = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    listener = await anyio.abc.SocketListener.from_socket(sock)
    async with listener, anyio.create_task_group() as group:
        group.start_soon(listener.serve, serve_h2_held_open)
        async with httpx.AsyncClient(http1=False, http2=True) as client:
            agent = Agent("m", base_url=base, api_key=KEY, http_client=client, timeout=30)
            with anyio.fail_after(5):
                outputs = [(await agent.run("go", stream=True)).output for _ in range(3)]
        assert outputs == ["done"] * 3
        group.cancel_scope.cancel()
    gc.collect()
