"""The endpoint client: auth, retries with backoff and Retry-After, typed errors, no leaked key."""

from __future__ import annotations

import httpx
import pytest

from agent import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    InternalServerError,
    ProtocolError,
    RateLimitError,
    RetryPolicy,
)
from tests._support import Reply, capturing_logger, error_reply, message, response, scripted_agent

KEY = "sk-test-secret-key-123"


@pytest.mark.asyncio
async def test_bearer_auth_and_url() -> None:
    """Requests go to {base_url}/responses with the bearer token."""
    agent, endpoint = scripted_agent([response(message("hi"))], base_url="http://gw.test/v1/")
    await agent.run("hi")
    assert endpoint.headers[0]["authorization"] == f"Bearer {KEY}"


@pytest.mark.asyncio
async def test_api_key_and_base_url_default_to_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """OPENAI_BASE_URL and OPENAI_API_KEY are read when not given."""
    monkeypatch.setenv("OPENAI_BASE_URL", "http://env.test/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=response(message("ok")))

    from agent import Agent

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        await Agent("m", http_client=client).run("hi")
    assert (str(seen[0].url), seen[0].headers["authorization"]) == (
        "http://env.test/v1/responses",
        "Bearer sk-from-env",
    )


@pytest.mark.asyncio
@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 503])
async def test_transient_statuses_are_retried(status: int) -> None:
    """408, 409, 429 and 5xx are retried, and a later success finishes the run."""
    agent, endpoint = scripted_agent([error_reply(status, "busy"), response(message("ok"))])
    assert (await agent.run("hi")).output == "ok"
    assert len(endpoint.requests) == 2


@pytest.mark.asyncio
@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
async def test_other_client_errors_are_not_retried(status: int) -> None:
    """Other 4xx fail at once."""
    agent, endpoint = scripted_agent([error_reply(status, "no"), response(message("never"))])
    with pytest.raises(APIStatusError):
        await agent.run("hi")
    assert len(endpoint.requests) == 1


@pytest.mark.asyncio
async def test_retries_stop_after_max_retries() -> None:
    """After max_retries the typed error carries status, code, message and request id."""
    replies = [error_reply(503, "overloaded", "server_busy", **{"x-request-id": "req_9"})] * 3
    agent, endpoint = scripted_agent(replies, max_retries=2)
    with pytest.raises(InternalServerError) as info:
        await agent.run("hi")
    error = info.value
    assert (error.status, error.code, error.message, error.request_id) == (
        503,
        "server_busy",
        "overloaded",
        "req_9",
    )
    assert len(endpoint.requests) == 3
    assert "req_9" in str(error)


@pytest.mark.asyncio
async def test_retry_after_ms_is_honoured() -> None:
    """retry-after-ms from the server sets the wait before the next attempt."""
    logger, capture = capturing_logger()
    replies: list[Reply] = [
        error_reply(429, "slow down", **{"retry-after-ms": "30"}),
        response(message("ok")),
    ]
    agent, _ = scripted_agent(replies, logger=logger)
    await agent.run("hi")
    retries = [e for e in capture.entries if e["event"] == "model.retry"]
    assert [e["wait"] for e in retries] == [0.03]


@pytest.mark.asyncio
async def test_retry_after_seconds_is_honoured_and_capped() -> None:
    """Retry-After in seconds is honoured, up to the policy's cap."""
    logger, capture = capturing_logger()
    policy = RetryPolicy(initial_delay=0, jitter=0, max_retry_after=0.02)
    replies: list[Reply] = [error_reply(429, "slow down", **{"retry-after": "120"}), response(message("ok"))]
    agent, _ = scripted_agent(replies, logger=logger, retry=policy)
    await agent.run("hi")
    assert [e["wait"] for e in capture.entries if e["event"] == "model.retry"] == [0.02]


def test_backoff_grows_exponentially_with_jitter_bounds() -> None:
    """Without Retry-After the wait doubles per attempt, plus at most `jitter`, capped."""
    import tenacity

    policy = RetryPolicy(initial_delay=0.5, max_delay=1.5, jitter=0.25)
    waits = []
    for attempt in (1, 2, 3):
        state = tenacity.RetryCallState(tenacity.AsyncRetrying(), None, (), {})
        state.attempt_number = attempt
        waits.append(policy.wait(state))
    assert 0.5 <= waits[0] <= 0.75
    assert 1.0 <= waits[1] <= 1.25
    assert 1.5 <= waits[2] <= 1.75


@pytest.mark.asyncio
async def test_connection_errors_are_retried_then_typed() -> None:
    """A refused connection is retried, then raised as APIConnectionError."""
    refused = httpx.ConnectError("[Errno 111] Connection refused")
    agent, endpoint = scripted_agent([refused, refused, refused], max_retries=2)
    with pytest.raises(APIConnectionError, match="Connection refused"):
        await agent.run("hi")
    assert len(endpoint.requests) == 3


@pytest.mark.asyncio
async def test_timeouts_are_typed() -> None:
    """A read timeout becomes APITimeoutError."""
    agent, _ = scripted_agent([httpx.ReadTimeout("slow")], max_retries=0)
    with pytest.raises(APITimeoutError):
        await agent.run("hi")


@pytest.mark.asyncio
async def test_non_json_error_body_gives_clean_error() -> None:
    """An HTML 502 from a proxy still becomes a typed error with a readable message."""
    page = httpx.Response(502, text="<html><body>Bad gateway</body></html>")
    agent, _ = scripted_agent([page], max_retries=0)
    with pytest.raises(InternalServerError) as info:
        await agent.run("hi")
    assert info.value.status == 502
    assert "Bad gateway" in info.value.message


@pytest.mark.asyncio
async def test_malformed_success_body_is_a_protocol_error() -> None:
    """HTTP 200 with a body that is not JSON is a ProtocolError (retried as transient)."""
    bad = httpx.Response(200, text="{not json")
    agent, endpoint = scripted_agent([bad, bad], max_retries=1)
    with pytest.raises(ProtocolError, match="not JSON"):
        await agent.run("hi")
    assert len(endpoint.requests) == 2


@pytest.mark.asyncio
async def test_json_that_is_not_a_response_is_a_protocol_error() -> None:
    """A JSON body without the Responses fields is a ProtocolError, not a crash."""
    agent, endpoint = scripted_agent([httpx.Response(200, json={"hello": "world"})])
    with pytest.raises(ProtocolError, match="not a Responses object"):
        await agent.run("hi")
    assert len(endpoint.requests) == 1


@pytest.mark.asyncio
async def test_rate_limit_error_is_typed() -> None:
    """429 after the retries is a RateLimitError."""
    agent, _ = scripted_agent([error_reply(429, "quota", "insufficient_quota")], max_retries=0)
    with pytest.raises(RateLimitError) as info:
        await agent.run("hi")
    assert info.value.code == "insufficient_quota"


@pytest.mark.asyncio
async def test_api_key_never_appears_in_errors_or_logs() -> None:
    """The key stays out of exception text, reprs and every log event."""
    logger, capture = capturing_logger()
    body = {"error": {"message": "Incorrect API key provided: sk-tes***123.", "code": "invalid_api_key"}}
    agent, _ = scripted_agent([httpx.Response(401, json=body)], logger=logger)
    with pytest.raises(AuthenticationError) as info:
        await agent.run("hi")
    texts = [str(info.value), repr(info.value), repr(agent), repr(vars(agent)), repr(capture.entries)]
    assert all(KEY not in text for text in texts)
    assert any(e["event"] == "run.error" for e in capture.entries)


@pytest.mark.asyncio
async def test_bad_request_error_fields() -> None:
    """A 400 body's message, type, param and code are all exposed."""
    body = {
        "error": {"message": "bad temp", "type": "invalid_request_error", "param": "temperature", "code": "x"}
    }
    agent, _ = scripted_agent([httpx.Response(400, json=body)])
    with pytest.raises(BadRequestError) as info:
        await agent.run("hi")
    error = info.value
    assert (error.message, error.error_type, error.param, error.code) == (
        "bad temp",
        "invalid_request_error",
        "temperature",
        "x",
    )


@pytest.mark.asyncio
async def test_log_events_cover_a_run() -> None:
    """One event per step, bound with the run id and call ids."""
    from tests._support import function_call
    from tests.test_loop import echo

    logger, capture = capturing_logger()
    call = function_call("echo", {"text": "x"})
    agent, _ = scripted_agent([response(call), response(message("ok"))], tools=[echo], logger=logger)
    await agent.run("hi")
    events = [e["event"] for e in capture.entries]
    assert events == [
        "run.start",
        "model.request",
        "model.response",
        "tool.start",
        "tool.end",
        "model.request",
        "model.response",
        "run.end",
    ]
    assert len({e["run_id"] for e in capture.entries}) == 1
    tool_end = next(e for e in capture.entries if e["event"] == "tool.end")
    assert (tool_end["call_id"], tool_end["kind"]) == (call["call_id"], "ok")


@pytest.mark.asyncio
async def test_undecodable_body_is_a_typed_error() -> None:
    """A body that claims gzip but is not becomes ProtocolError, not a raw httpx error."""
    broken = httpx.Response(200, headers={"content-encoding": "gzip"}, stream=httpx.ByteStream(b"not gzip"))
    agent, _ = scripted_agent([broken], max_retries=0)
    with pytest.raises(ProtocolError, match="cannot be decoded"):
        await agent.run("hi")


@pytest.mark.asyncio
@pytest.mark.parametrize("stream", [False, True])
async def test_key_is_not_reachable_from_the_error_or_its_traceback(stream: bool) -> None:
    """Neither the exception chain nor the traceback's local variables hold the key."""
    import traceback

    agent, _ = scripted_agent([httpx.ConnectError("refused")], max_retries=0)
    with pytest.raises(APIConnectionError) as info:
        await agent.run("hi", stream=stream)
    error = info.value
    assert error.__context__ is None
    assert error.__cause__ is None
    rendered = "".join(traceback.TracebackException.from_exception(error, capture_locals=True).format())
    assert KEY not in rendered


@pytest.mark.asyncio
async def test_non_finite_retry_after_falls_back_to_backoff() -> None:
    """A retry-after-ms of "nan" is ignored rather than crashing the run."""
    replies: list[Reply] = [error_reply(503, "busy", **{"retry-after-ms": "nan"}), response(message("ok"))]
    agent, _ = scripted_agent(replies)
    assert (await agent.run("hi")).output == "ok"


def test_credentials_in_base_url_are_not_shown() -> None:
    """User info and query parameters of base_url stay out of the agent's repr."""
    from agent import Agent

    agent = Agent("m", base_url="https://user:hunter2@gw.example/v1?key=sk-in-query")
    assert "hunter2" not in repr(agent)
    assert "sk-in-query" not in repr(agent)


@pytest.mark.asyncio
async def test_base_url_query_is_kept_after_the_path() -> None:
    """A gateway base URL with a query (e.g. ?api-version=) gets /responses before the query."""
    agent, endpoint = scripted_agent(
        [response(message("ok"))], base_url="https://gw.example/openai/v1?api-version=x"
    )
    await agent.run("hi")
    assert endpoint.urls == ["https://gw.example/openai/v1/responses?api-version=x"]
