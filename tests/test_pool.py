"""The agent's own connection pool: reuse, bounds, expiry, reaping, timeouts, closing, on real sockets."""

from __future__ import annotations

import gc
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import anyio
import httpx
import psutil
import pytest
from anyio.abc import SocketListener, SocketStream
from anyio.streams.buffered import BufferedByteReceiveStream

from agent import Agent, TextDelta
from agent._pool import PooledTransport
from agent.localmodel import AutoPolicy, Fault, LocalModelServer, ScriptPolicy

Handler = Callable[[SocketStream], Awaitable[None]]


@asynccontextmanager
async def serving(handler: Handler) -> AsyncIterator[str]:
    """A TCP server on 127.0.0.1 running ``handler`` per connection; yields its base URL."""
    # Bound here: anyio's create_tcp_listener resolves the host, which conftest forbids.
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    async with await SocketListener.from_socket(sock) as listener, anyio.create_task_group() as group:
        group.start_soon(listener.serve, handler)
        yield f"http://127.0.0.1:{port}"
        group.cancel_scope.cancel()


async def read_request(reader: BufferedByteReceiveStream) -> str:
    """Read one bodiless request; return its path."""
    head = await reader.receive_until(b"\r\n\r\n", 65536)
    return head.split(b" ", 2)[1].decode()


def ok(body: bytes = b"ok") -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)


def client_sockets(base_url: str, status: str | None = None) -> int:
    """This process's sockets connected to ``base_url`` (in ``status``, if given)."""
    port = httpx.URL(base_url).port
    return sum(
        1
        for connection in psutil.Process().net_connections("tcp")
        if connection.raddr and connection.raddr.port == port and status in (None, connection.status)
    )


async def get_all(client: httpx.AsyncClient, urls: list[str]) -> list[int]:
    statuses: list[int] = []

    async def one(url: str) -> None:
        statuses.append((await client.get(url)).status_code)

    async with anyio.create_task_group() as group:
        for url in urls:
            group.start_soon(one, url)
    return statuses


class BurstServer:
    """Holds every request until ``burst`` of them are in flight, so a burst opens ``burst`` connections.

    ``/close`` is answered (as keep-alive) and then the server closes the connection, as servers do
    with idle ones; ``/last`` is answered once ``release`` is set; other paths are answered at once.
    """

    def __init__(self, burst: int) -> None:
        self.burst = burst
        self.arrived = 0
        self.all_arrived = anyio.Event()
        self.release = anyio.Event()
        self.closed = 0
        self.all_closed = anyio.Event()

    async def __call__(self, stream: SocketStream) -> None:
        reader = BufferedByteReceiveStream(stream)
        async with stream:
            try:
                while True:
                    path = await read_request(reader)
                    if not await self._answer(stream, path):
                        break
            except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.IncompleteRead):
                pass

    async def _answer(self, stream: SocketStream, path: str) -> bool:
        if path in ("/close", "/last", "/burst"):
            self.arrived += 1
            if self.arrived == self.burst:
                self.all_arrived.set()
            await self.all_arrived.wait()
        if path == "/last":
            await self.release.wait()
        await stream.send(ok())
        if path == "/close":
            await stream.aclose()
            self.closed += 1
            if self.closed == self.burst - 1:
                self.all_closed.set()
            return False
        return True


@pytest.mark.asyncio
async def test_sequential_requests_reuse_one_connection() -> None:
    """Ten requests one after another open a single connection."""
    transport = PooledTransport(max_connections=8)
    with LocalModelServer(AutoPolicy()) as server:
        async with httpx.AsyncClient(transport=transport) as client:
            for _ in range(10):
                assert (await client.get(server.base_url + "/nowhere")).status_code == 404
    assert transport.pool.opened == 1


@pytest.mark.asyncio
async def test_requests_in_flight_are_bounded_by_max_connections() -> None:
    """Twelve slow requests at once through a pool of three open at most three connections."""
    transport = PooledTransport(max_connections=3)
    faults = [Fault(delay=0.05)] * 12
    with LocalModelServer(AutoPolicy(), faults=faults) as server:
        async with httpx.AsyncClient(transport=transport) as client:
            statuses = await get_all(client, [server.base_url + "/nowhere"] * 12)
    assert (len(statuses), transport.pool.opened) == (12, 3)


@pytest.mark.asyncio
async def test_expired_connections_are_replaced() -> None:
    """With a keep-alive expiry of zero every request opens a fresh connection."""
    transport = PooledTransport(max_connections=4, keepalive_expiry=0.0)
    with LocalModelServer(AutoPolicy()) as server:
        async with httpx.AsyncClient(transport=transport) as client:
            for _ in range(3):
                await client.get(server.base_url + "/nowhere")
    assert transport.pool.opened == 3


@pytest.mark.asyncio
async def test_a_connection_the_server_closed_is_not_reused() -> None:
    """After the server drops a connection, the next request opens a new one and succeeds."""
    transport = PooledTransport(max_connections=4)
    with LocalModelServer(AutoPolicy(), faults=[Fault(), Fault(drop=True)]) as server:
        async with httpx.AsyncClient(transport=transport) as client:
            url = server.base_url + "/responses"
            body = {"model": "m", "input": "hi"}
            headers = {"Authorization": "Bearer local"}
            assert (await client.post(url, json=body, headers=headers)).status_code == 200
            with pytest.raises(httpx.RemoteProtocolError):
                await client.post(url, json=body, headers=headers)
            assert (await client.post(url, json=body, headers=headers)).status_code == 200
    assert transport.pool.opened == 2


@pytest.mark.asyncio
async def test_the_agents_own_client_uses_the_pool() -> None:
    """An agent without an http_client of yours runs over the pool, one connection per turn."""
    with LocalModelServer(AutoPolicy()) as server:
        async with Agent("m", base_url=server.base_url, api_key="local") as agent:
            await agent.run("hi")
            await agent.run("hi again")
            transport = agent._client._http._transport
    assert isinstance(transport, PooledTransport)
    assert transport.pool.opened == 1


@pytest.mark.asyncio
async def test_connect_failures_are_httpx_errors() -> None:
    """A refused connection raises httpx.ConnectError, as httpx's own transport does."""
    with socket.create_server(("127.0.0.1", 0)) as sock:
        port = sock.getsockname()[1]
    async with httpx.AsyncClient(transport=PooledTransport(max_connections=1)) as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(f"http://127.0.0.1:{port}/")


@pytest.mark.asyncio
async def test_a_read_timeout_is_httpx_read_timeout_and_drops_the_connection() -> None:
    """A server that never answers raises httpx.ReadTimeout; the connection is not kept."""
    transport = PooledTransport(max_connections=1)
    async with serving(BurstServer(burst=1)) as url, httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.get(url + "/last", timeout=httpx.Timeout(5, read=0.05))
        assert (transport.pool.idle_connections, client_sockets(url)) == (0, 0)


@pytest.mark.asyncio
async def test_leaving_a_stream_early_leaks_no_socket() -> None:
    """Leaving run_stream early with a slow consumer, again and again, closes what it cancels."""
    # More text deltas than the run's event buffer holds: the run waits for the consumer when
    # the block is left, so the cancellation reaches the response's close.
    policy = ScriptPolicy([[{"type": "message", "content": " ".join(["word"] * 64)}] * 30])
    with LocalModelServer(policy) as server:
        async with Agent("m", base_url=server.base_url, api_key="local") as agent:
            open_after_each_run: list[int] = []
            for _ in range(8):
                async with agent.run_stream("hi") as events:
                    async for event in events:
                        if isinstance(event, TextDelta):
                            await anyio.sleep(0.05)  # a slow consumer: the run waits for it
                            break
                open_after_each_run.append(client_sockets(server.base_url))
            gc.collect()  # a socket dropped unclosed warns here (filterwarnings=error)
    assert max(open_after_each_run) <= 1


@pytest.mark.asyncio
async def test_idle_connections_past_their_expiry_are_reaped_under_steady_traffic() -> None:
    """After a burst of six, steady traffic on one connection reaps the five idle past expiry."""
    expiry = 0.1
    server = BurstServer(burst=6)
    transport = PooledTransport(max_connections=6, keepalive_expiry=expiry)
    async with serving(server) as url, httpx.AsyncClient(transport=transport) as client:
        await get_all(client, [url + "/burst"] * 6)
        assert transport.pool.idle_connections == 6
        deadline = anyio.current_time() + 3 * expiry
        while anyio.current_time() < deadline:
            await client.get(url + "/")
            await anyio.sleep(expiry / 5)
        assert (transport.pool.idle_connections, client_sockets(url)) == (1, 1)


@pytest.mark.asyncio
async def test_connections_the_server_closed_while_idle_are_closed_under_steady_traffic() -> None:
    """Idle connections below the one in use, closed by the server, do not stay in CLOSE_WAIT."""
    server = BurstServer(burst=6)
    transport = PooledTransport(max_connections=6)
    async with serving(server) as url, httpx.AsyncClient(transport=transport) as client:
        async with anyio.create_task_group() as group:
            group.start_soon(get_all, client, [url + "/last"])
            await get_all(client, [url + "/close"] * 5)
            server.release.set()  # "/last" checks in last: on top of the stack
        await server.all_closed.wait()
        for _ in range(3):
            await client.get(url + "/")
        assert transport.pool.idle_connections == 1
        assert client_sockets(url, psutil.CONN_CLOSE_WAIT) == 0


@pytest.mark.asyncio
async def test_waiting_for_a_connection_past_the_pool_timeout_raises_pool_timeout() -> None:
    """With one connection held by an open response, the next request fails after the pool timeout."""
    transport = PooledTransport(max_connections=1)
    async with (
        serving(BurstServer(burst=0)) as url,
        httpx.AsyncClient(transport=transport) as client,
        client.stream("GET", url + "/"),
    ):
        with anyio.fail_after(5), pytest.raises(httpx.PoolTimeout):
            await client.get(url + "/", timeout=httpx.Timeout(5, pool=0.05))


@pytest.mark.asyncio
async def test_a_closed_pool_refuses_requests() -> None:
    """Requests through a closed transport raise anyio.ClosedResourceError."""
    transport = PooledTransport(max_connections=2)
    async with serving(BurstServer(burst=0)) as url, httpx.AsyncClient(transport=transport) as client:
        await client.get(url + "/")
        await transport.aclose()
        with pytest.raises(anyio.ClosedResourceError):
            await client.get(url + "/")


@pytest.mark.asyncio
async def test_a_response_closed_after_the_pool_closes_its_connection() -> None:
    """A connection checked in after the pool closed is closed, not kept."""
    transport = PooledTransport(max_connections=2)
    async with serving(BurstServer(burst=0)) as url, httpx.AsyncClient(transport=transport) as client:
        async with client.stream("GET", url + "/") as reply:
            await transport.aclose()
            await reply.aread()
        assert (transport.pool.idle_connections, client_sockets(url)) == (0, 0)


@pytest.mark.asyncio
async def test_closing_the_pool_survives_cancellation_and_is_idempotent() -> None:
    """aclose() in a cancelled scope still closes every idle connection; a second aclose() is harmless."""
    server = BurstServer(burst=3)
    transport = PooledTransport(max_connections=3)
    async with serving(server) as url, httpx.AsyncClient(transport=transport) as client:
        await get_all(client, [url + "/burst"] * 3)
        with anyio.CancelScope() as scope:
            scope.cancel()
            await transport.aclose()
        await transport.aclose()
        assert (transport.pool.idle_connections, client_sockets(url)) == (0, 0)


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_the_pool_works_under_trio(anyio_backend: str) -> None:
    """Under trio: reuse, the pool timeout, and a closed pool refusing work."""
    transport = PooledTransport(max_connections=1)
    async with serving(BurstServer(burst=0)) as url, httpx.AsyncClient(transport=transport) as client:
        for _ in range(3):
            await client.get(url + "/")
        async with client.stream("GET", url + "/"):
            with pytest.raises(httpx.PoolTimeout):
                await client.get(url + "/", timeout=httpx.Timeout(5, pool=0.05))
        await transport.aclose()
        with pytest.raises(anyio.ClosedResourceError):
            await client.get(url + "/")
    assert transport.pool.opened == 1
