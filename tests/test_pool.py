"""The agent's own connection pool: reuse, bounds, expiry, on a real socket."""

from __future__ import annotations

import anyio
import httpx
import pytest

from agent import Agent
from agent._pool import PooledTransport
from agent.localmodel import AutoPolicy, Fault, LocalModelServer


async def get_all(client: httpx.AsyncClient, url: str, count: int) -> list[int]:
    statuses: list[int] = []

    async def one() -> None:
        statuses.append((await client.get(url)).status_code)

    async with anyio.create_task_group() as group:
        for _ in range(count):
            group.start_soon(one)
    return statuses


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
            statuses = await get_all(client, server.base_url + "/nowhere", 12)
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


def test_this_httpx_offers_the_pool_seam() -> None:
    """The installed httpx sends through the transport's pool, so the agent's pool is used."""
    assert PooledTransport.supported()
