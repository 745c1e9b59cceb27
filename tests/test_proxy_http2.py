"""The agent's own client: proxies from the environment, and HTTP/2 through httpx's stack."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path
from typing import cast

import anyio
import httpx
import hypercorn
import hypercorn.asyncio
import hypercorn.typing
import pytest
import trustme
from anyio.abc import SocketStream
from anyio.streams.buffered import BufferedByteReceiveStream
from starlette.types import ASGIApp, Receive, Scope, Send

from agent import Agent, APIConnectionError, UsageError
from agent._pool import PooledTransport, environment_proxies, proxy_mounts
from agent.localmodel import AutoPolicy, LocalModelServer, create_app
from tests._support import message, response
from tests.test_pool import ok, serving


@pytest.fixture(autouse=True)
def _no_proxy_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts from an environment without proxy variables, in any case."""
    for name in list(os.environ):
        if name.lower().endswith("_proxy"):
            monkeypatch.delenv(name)


class ForwardProxy:
    """Records each request line; answers requests with a canned Responses body, CONNECT with 403."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    async def __call__(self, stream: SocketStream) -> None:
        reader = BufferedByteReceiveStream(stream)
        async with stream:
            with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError, anyio.IncompleteRead):
                while await self._answer(reader, stream):
                    pass

    async def _answer(self, reader: BufferedByteReceiveStream, stream: SocketStream) -> bool:
        head = (await reader.receive_until(b"\r\n\r\n", 65536)).decode().split("\r\n")
        self.lines.append(head[0])
        if head[0].startswith("CONNECT "):
            await stream.send(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n")
            return False
        length = next(int(line.split(":")[1]) for line in head if line.lower().startswith("content-length:"))
        await reader.receive_exactly(length)
        await stream.send(ok(json.dumps(response(message("via proxy"))).encode()))
        return True


@pytest.mark.asyncio
@pytest.mark.parametrize("variable", ["HTTP_PROXY", "http_proxy", "ALL_PROXY"])
async def test_a_proxy_from_the_environment_carries_the_agents_requests(
    variable: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a proxy in the environment, the request goes to it, with the absolute URI."""
    proxy = ForwardProxy()
    async with serving(proxy) as proxy_url:
        monkeypatch.setenv(variable, proxy_url)
        async with Agent("m", base_url="http://model.example/v1", api_key="k") as agent:
            result = await agent.run("hi")
    assert (result.output, proxy.lines) == ("via proxy", ["POST http://model.example/v1/responses HTTP/1.1"])


@pytest.mark.asyncio
async def test_https_requests_tunnel_through_the_https_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """An https endpoint is reached through a CONNECT tunnel to HTTPS_PROXY."""
    proxy = ForwardProxy()
    async with serving(proxy) as proxy_url:
        monkeypatch.setenv("HTTPS_PROXY", proxy_url)
        async with Agent("m", base_url="https://model.example/v1", api_key="k", max_retries=0) as agent:
            with pytest.raises(APIConnectionError):
                await agent.run("hi")
    assert proxy.lines == ["CONNECT model.example:443 HTTP/1.1"]


@pytest.mark.asyncio
async def test_no_proxy_hosts_go_direct_through_the_agents_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    """A host in NO_PROXY is reached directly, over the agent's own pool."""
    proxy = ForwardProxy()
    async with serving(proxy) as proxy_url:
        monkeypatch.setenv("HTTP_PROXY", proxy_url)
        monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1")
        with LocalModelServer(AutoPolicy()) as server:
            async with Agent("m", base_url=server.base_url, api_key="local") as agent:
                result = await agent.run("direct")
                transport = agent._client._http._transport
    assert isinstance(transport, PooledTransport)
    assert (result.output, proxy.lines, transport.pool.opened) == ("direct", [], 1)


ENVIRONMENTS = [
    {},
    {"HTTP_PROXY": "http://p:3128"},
    {"https_proxy": "p:3128", "ALL_PROXY": "socks5://s:1080"},
    {"HTTP_PROXY": "http://p:3128", "NO_PROXY": "example.com, .corp.example,10.0.0.1,::1,localhost"},
    {"HTTP_PROXY": "http://p:3128", "NO_PROXY": "192.168.0.0/16,http://direct.example"},
    {"HTTP_PROXY": "http://p:3128", "NO_PROXY": "a.example,*"},
]


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_environment_proxies_are_read_as_httpx_reads_them(
    environment: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The proxy patterns derived from the environment are httpx's own (its private derivation)."""
    from httpx._utils import get_environment_proxies  # the reference; the product does not use it

    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert environment_proxies() == get_environment_proxies()


def test_without_trust_env_the_environment_gives_no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """trust_env=False ignores the proxy variables, as in httpx."""
    monkeypatch.setenv("HTTP_PROXY", "http://p:3128")
    assert proxy_mounts(httpx.Limits(), trust_env=False) == {}


def recording(app: ASGIApp, versions: list[str]) -> ASGIApp:
    """``app``, noting the HTTP version of each request."""

    async def recorded(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            versions.append(scope["http_version"])
        await app(scope, receive, send)

    return recorded


@contextlib.asynccontextmanager
async def tls_server(app: ASGIApp, directory: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[str]:
    """hypercorn serving ``app`` over TLS (h2 or http/1.1 by ALPN), its CA trusted by SSL_CERT_FILE."""
    authority = trustme.CA()
    authority.cert_pem.write_to_path(directory / "ca.pem")
    authority.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(directory / "server.pem")
    monkeypatch.setenv("SSL_CERT_FILE", str(directory / "ca.pem"))
    config = hypercorn.Config()
    config.certfile = config.keyfile = str(directory / "server.pem")
    config.errorlog = None
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    config.bind = [f"fd://{listener.detach()}"]
    stopped = anyio.Event()
    async with anyio.create_task_group() as group:
        # One ASGI callable, typed by starlette's aliases and hypercorn's TypedDicts.
        framework = cast(hypercorn.typing.ASGIFramework, app)
        group.start_soon(partial(hypercorn.asyncio.serve, framework, config, shutdown_trigger=stopped.wait))
        yield f"https://127.0.0.1:{port}/v1"
        stopped.set()


@pytest.mark.asyncio
@pytest.mark.parametrize(("http2", "version"), [(True, "2"), (False, "1.1")])
async def test_http2_is_negotiated_when_asked_for(
    http2: bool, version: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Agent(http2=True) speaks HTTP/2 to an endpoint that offers it; the default pool speaks 1.1."""
    versions: list[str] = []
    app = recording(create_app(AutoPolicy()), versions)
    async with (
        tls_server(app, tmp_path, monkeypatch) as base_url,
        Agent("m", base_url=base_url, api_key="local", http2=http2) as agent,
    ):
        result = await agent.run("over tls")
    assert (result.output, versions) == ("over tls", [version])


def test_http2_without_h2_installed_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the h2 package, Agent(http2=True) says what to install."""
    monkeypatch.setitem(sys.modules, "h2", None)  # import h2 now raises ImportError
    with pytest.raises(UsageError, match=r"agent-runtime\[http2\]"):
        Agent("m", base_url="http://127.0.0.1:9/v1", api_key="k", http2=True)
