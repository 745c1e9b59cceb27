"""Secret scan: the API key (and credentials inside ``base_url``) appear nowhere a user can see.

Under each failure (401, 429, 5xx, a refused connection, a timeout, a redirect, a malformed body,
a tool exception), the three secrets below are looked for in every log event (structlog,
captured through ``logger=``), the exception's str, repr, args, notes and attributes along its
whole cause/context chain, the ``RunResult`` / ``partial_result`` repr, the ``agent run --json``
error document, the tool outputs, and what the model was sent.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator, MutableMapping
from typing import Any

import httpx
import pytest
from pydantic_core import to_json
from typer.testing import CliRunner

from agent import Agent, AgentError, RetryPolicy, RunResult, UsageError, tool
from agent import _cli as cli
from agent._cli import _error_document
from agent.localmodel import AutoPolicy, LocalModelServer
from tests._support import capturing_logger, function_call, message, response

KEY = "sk-proof-ZQ7xK9pLm2vB"
PASSWORD = "pw-ZQ7-userinfo-4471"
QUERY_KEY = "qk-ZQ7-query-9083"
SECRETS = (KEY, PASSWORD, QUERY_KEY)
HOST = "api.example.test"
BASE_URL = f"https://user:{PASSWORD}@{HOST}/v1?api-key={QUERY_KEY}"

Handler = Callable[[httpx.Request], httpx.Response]


@tool
def fragile(x: int) -> int:
    """Fails on purpose.

    Args:
        x: Anything.
    """
    raise RuntimeError(f"the database refused x={x}")


def _error(status: int, message: str, **headers: str) -> Handler:
    body = {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": None}}
    return lambda request: httpx.Response(status, json=body, headers=headers)


def _raise(error: type[httpx.TransportError], message: str) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        raise error(message.format(url=request.url), request=request)

    return handler


def _redirect(request: httpx.Request) -> httpx.Response:
    location = f"https://elsewhere.example/v1/responses?{request.url.query.decode()}"
    return httpx.Response(307, headers={"location": location})


def _tool_exception() -> Handler:
    replies = [response(function_call("fragile", {"x": 1})), response(message("the tool failed"))]
    return lambda request: httpx.Response(200, json=replies.pop(0) if len(replies) > 1 else replies[0])


FAILURES: dict[str, Callable[[], Handler]] = {
    "401": lambda: _error(401, "Incorrect API key provided: sk-proo****m2vB."),
    "429": lambda: _error(429, "Rate limit reached.", **{"retry-after": "0"}),
    "500": lambda: _error(500, "The server had an error."),
    "503 HTML page": lambda: lambda request: httpx.Response(503, text="<html>Service Unavailable</html>"),
    "connection error": lambda: _raise(httpx.ConnectError, "[Errno 111] Connection refused"),
    "timeout": lambda: _raise(httpx.ReadTimeout, "The read operation timed out"),
    "redirect": lambda: _redirect,
    "malformed body": lambda: lambda request: httpx.Response(200, text='{"id": "resp_'),
    "tool exception": _tool_exception,
}


def _texts_of_error(error: BaseException) -> Iterator[str]:
    """Every text an exception shows, along its whole cause and context chain."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [error]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield str(current)
        yield repr(current)
        yield repr(current.args)
        yield repr(getattr(current, "__notes__", []))
        yield repr({k: v for k, v in vars(current).items() if k != "partial_result"})
        if isinstance(current, httpx.RequestError):
            yield repr(current.request.headers) + str(current.request.url)
        pending += [current.__cause__, current.__context__]


def _texts(
    outcome: RunResult | AgentError, entries: list[MutableMapping[str, Any]], seen: list[httpx.Request]
) -> str:
    texts = [repr(entries)]
    result = outcome if isinstance(outcome, RunResult) else outcome.partial_result
    if isinstance(outcome, AgentError):
        texts += _texts_of_error(outcome)
        texts.append(to_json(_error_document(outcome)).decode())
    if result is not None:
        texts += [repr(result), *(record.output for record in result.tool_calls)]
    texts += [request.content.decode("utf-8", "replace") for request in seen]
    return "\n".join(texts)


async def _run(handler: Handler, **options: Any) -> tuple[RunResult | AgentError, str]:
    logger, capture = capturing_logger()
    seen: list[httpx.Request] = []

    def recording(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return handler(request)

    client = httpx.AsyncClient(transport=httpx.MockTransport(recording))
    agent = Agent(
        "gpt-4.1",
        base_url=BASE_URL,
        api_key=KEY,
        tools=[fragile],
        http_client=client,
        retry=RetryPolicy(max_retries=1, initial_delay=0.0, jitter=0.0),
        logger=logger,
        **options,
    )
    try:
        async with agent:
            outcome: RunResult | AgentError = await agent.run("go")
    except AgentError as exc:
        outcome = exc
    finally:
        await client.aclose()
    return outcome, _texts(outcome, capture.entries, seen)


@pytest.mark.asyncio
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("failure", FAILURES)
async def test_no_secret_shows_under_failure(failure: str, stream: bool) -> None:
    """Under this failure, no secret appears in logs, errors, results, --json or model input."""
    _, text = await _run(FAILURES[failure](), stream=stream)
    assert [secret for secret in SECRETS if secret in text] == []


@pytest.mark.asyncio
async def test_no_secret_shows_when_a_transport_error_names_the_url() -> None:
    """A transport whose error message quotes the request URL does not leak its credentials."""
    _, text = await _run(_raise(httpx.ConnectError, "cannot connect to {url}"))
    assert [secret for secret in SECRETS if secret in text] == []


@pytest.mark.asyncio
async def test_the_scan_sees_a_planted_secret() -> None:
    """The scan itself works: a tool output holding the key is found."""

    def leaky_handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=response(message(f"echo {KEY}")))

    _, text = await _run(leaky_handler)
    assert KEY in text


@pytest.mark.asyncio
async def test_no_secret_shows_when_the_connection_is_refused() -> None:
    """A real refused connection (the agent's own pool) leaks no secret either."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    logger, capture = capturing_logger()
    url = f"http://user:{PASSWORD}@127.0.0.1:{port}/v1?api-key={QUERY_KEY}"
    agent = Agent("m", base_url=url, api_key=KEY, retry=RetryPolicy(max_retries=0), logger=logger)
    async with agent:
        with pytest.raises(AgentError) as info:
            await agent.run("go")
    text = _texts(info.value, capture.entries, [])
    assert [secret for secret in SECRETS if secret in text] == []


@pytest.mark.parametrize(
    "url",
    [f"https://user:{PASSWORD}@{HOST}:99999/v1?api-key={QUERY_KEY}", f"ftp://user:{PASSWORD}@{HOST}/v1"],
    ids=["bad port", "bad scheme"],
)
def test_no_secret_shows_in_a_refused_base_url(url: str) -> None:
    """A base_url refused as a caller mistake does not echo its credentials."""
    with pytest.raises(UsageError) as info:
        Agent("m", base_url=url, api_key=KEY)
    text = "\n".join(_texts_of_error(info.value))
    assert [secret for secret in SECRETS if secret in text] == []


@pytest.mark.parametrize("verbose", [False, True], ids=["plain", "verbose"])
def test_no_secret_shows_in_the_cli_json_error_document(verbose: bool) -> None:
    """`agent run --json` refused with a 401 prints its error document and logs without secrets."""
    with LocalModelServer(AutoPolicy(), api_key="sk-the-right-one") as server:
        url = f"http://user:{PASSWORD}@127.0.0.1:{server.port}/v1?api-key={QUERY_KEY}"
        args = ["run", "hi", "--json", "--no-stream", "--log-format", "json", *(["-v"] if verbose else [])]
        done = CliRunner().invoke(cli.app, args, env={"OPENAI_BASE_URL": url, "OPENAI_API_KEY": KEY})
    text = done.output + (done.stderr if done.stderr_bytes is not None else "") + repr(done.exception)
    assert (done.exit_code != 0, "AuthenticationError" in text) == (True, True)
    assert [secret for secret in SECRETS if secret in text] == []
