"""The endpoint client: ``POST {base_url}/responses`` over httpx, with auth, retries, typed errors.

:meth:`ResponsesClient.create` is the seam for one model request (retries included); the loop
reaches the endpoint through it and nothing else. Request bodies are encoded here (see
:func:`agent._wire.encode_request`); replies are read within the agent's ``Limits`` (see
``agent._body``), and a redirect is an :class:`APIStatusError`, not followed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable, Generator
from typing import Any

import anyio
import httpx
import structlog
import tenacity
from pydantic import SecretStr

from agent._body import ACCEPT_ENCODING, ReplyBody
from agent._errors import (
    AgentClosedError,
    AgentError,
    APIError,
)
from agent._gate import RequestGate
from agent._limits import DEFAULT_LIMITS, Limits
from agent._otel import with_trace_context
from agent._pool import KEEPALIVE_EXPIRY, PooledTransport, proxy_mounts, require_http2
from agent._replies import json_body, raise_status_error, redirect_error, request_error
from agent._result import JSONObject
from agent._retry import (
    Attempt,
    RetryPolicy,
    delivered,
    describe,
    error_of,
    is_transient,
    log_retry,
    outcome_of,
)
from agent._urls import responses_url, shown_url, url_secrets
from agent._wire import (
    ModelResponse,
    encode_request,
    parse_response,
)

__all__ = ["DEFAULT_TIMEOUT", "ResponsesClient", "StreamRead"]

StreamRead = Callable[[httpx.Response], Awaitable[ModelResponse]]
"""Reads a streamed reply to its finished response (see ``agent._stream``)."""

DEFAULT_TIMEOUT = httpx.Timeout(600.0, connect=10.0)
"""Models can think for minutes before the first byte; connecting should take seconds."""

_JSON_HEADERS = {"Content-Type": "application/json", "Accept-Encoding": ACCEPT_ENCODING}
_SSE_HEADERS = {**_JSON_HEADERS, "Accept": "text/event-stream"}


class ResponsesClient:
    """Sends Responses requests to one endpoint through a pooled ``httpx.AsyncClient``."""

    def __init__(
        self,
        *,
        base_url: str,
        api_key: SecretStr | None,
        timeout: httpx.Timeout,
        retry: RetryPolicy,
        http_client: httpx.AsyncClient | None = None,
        max_connections: int = 512,
        http2: bool = False,
        limits: Limits = DEFAULT_LIMITS,
        log: structlog.typing.FilteringBoundLogger,
    ) -> None:
        self.url = responses_url(base_url)
        self.shown_url = shown_url(self.url)
        """The URL as logs and errors show it: no credentials, no query."""
        self._url_secrets = url_secrets(self.url) + ((api_key.get_secret_value(),) if api_key else ())
        self._auth = _BearerAuth(api_key) if api_key else None
        self._timeout = timeout
        self._retry = retry
        self._limits = limits
        self._owns_client = http_client is None
        self._http = http_client or _pooled_client(timeout, max_connections, http2=http2)
        # Requests wait for our own pool here, before httpx builds them (your client: its own way).
        self._gate = RequestGate(max_connections) if http_client is None else None
        self._log = log
        self._backoff = retry.backoff()
        self._closed = False

    def __repr__(self) -> str:
        return f"<ResponsesClient {self.shown_url}>"

    async def aclose(self) -> None:
        """Close the connection pool, if this client created it; refuse requests from now on."""
        self._closed = True
        if self._owns_client:
            await self._http.aclose()

    def _check_open(self) -> None:
        if self._closed:
            raise AgentClosedError("the agent was closed: this run cannot send its next request")

    async def create(
        self,
        body: JSONObject,
        *,
        log: structlog.typing.FilteringBoundLogger,
        read_stream: StreamRead | None = None,
        may_retry: Callable[[], bool] = lambda: True,
        follow_up: bool = False,
    ) -> ModelResponse:
        """Send one request and return its response; the seam for one model request.

        With ``read_stream`` the reply is streamed (the body must ask for ``stream: true``) and
        handed to it. Transient failures (a failed response with a transient code included)
        are retried while ``may_retry()`` holds: a stream that fails after its tools started is
        not sent again. A failed response that is not retried is returned, for the loop to
        keep; any other failure is raised. A ``follow_up`` (a run's request after its first
        response) waits for a connection ahead of the runs' first requests.
        """
        # The first attempt goes out bare: most requests never fail, and the retry machinery
        # (objects in reference cycles) would be built per request for nothing.
        self._backoff.attempt()
        try:
            outcome: Attempt = await self._attempt(body, log, read_stream, follow_up)
        except APIError as error:
            outcome = error
        if not self._retries(outcome, 1, may_retry, log):
            return delivered(outcome)
        pause = self._retry.delay(error_of(outcome), 1)
        log.warning("model.retry", attempt=1, wait=round(pause, 3), error=describe(outcome))
        await anyio.sleep(pause)
        return await self._retry_send(body, log, read_stream, may_retry, follow_up)

    async def _retry_send(
        self,
        body: JSONObject,
        log: structlog.typing.FilteringBoundLogger,
        read_stream: StreamRead | None,
        may_retry: Callable[[], bool],
        follow_up: bool,
    ) -> ModelResponse:
        """Attempts 2 to ``max_retries + 1``, under tenacity, once the first has failed."""

        def retries(state: tenacity.RetryCallState) -> bool:
            return self._retries(outcome_of(state), state.attempt_number + 1, may_retry, log)

        retrying = tenacity.AsyncRetrying(
            wait=lambda state: self._retry.wait(state, offset=1),
            retry=retries,
            sleep=anyio.sleep,
            before_sleep=lambda state: log_retry(log, state),
        )
        response: ModelResponse | None = None
        async for attempt in retrying:
            with attempt:
                response = await self._attempt(body, log, read_stream, follow_up)
            outcome = attempt.retry_state.outcome
            if outcome is not None and not outcome.failed:
                attempt.retry_state.set_result(response)
        # The loop ends by raising the last error, or here with the last (maybe failed) response.
        if response is None:  # pragma: no cover - tenacity always makes one attempt
            raise AssertionError("no attempt was made")
        return response

    def _retries(
        self,
        outcome: Attempt,
        attempt: int,
        may_retry: Callable[[], bool],
        log: structlog.typing.FilteringBoundLogger,
    ) -> bool:
        """Whether attempt number ``attempt``, which gave ``outcome``, is tried again.

        The retry budget is asked last, so only a retry that would really be made spends it.
        """
        if isinstance(outcome, ModelResponse) and outcome.status != "failed":
            return False
        if not (attempt <= self._retry.max_retries and is_transient(outcome) and may_retry()):
            return False
        if self._scheduled_by_server(outcome) or self._backoff.try_retry():
            return True
        log.warning("model.retry_budget_exhausted", attempt=attempt, error=describe(outcome))
        return False

    def _scheduled_by_server(self, outcome: Attempt) -> bool:
        """A retry the endpoint asked for (``Retry-After``) and the shared pause spaces out.

        It spends no budget: the budget bounds the retries the agent decides on alone (5xx,
        lost connections, timeouts), which an endpoint in trouble did not ask for.
        """
        return self._retry.shared_pause and isinstance(outcome, APIError) and outcome.retry_after is not None

    async def _attempt(
        self,
        body: JSONObject,
        log: structlog.typing.FilteringBoundLogger,
        read_stream: StreamRead | None,
        follow_up: bool,
    ) -> ModelResponse:
        """One request, sent once the endpoint's pause is over; a 429 pauses the endpoint."""
        self._check_open()
        await self._backoff.wait_open()
        self._check_open()
        try:
            return await self._send(body, log, read_stream, follow_up)
        except APIError as error:
            if self._retry.shared_pause and (error.status == 429 or error.retry_after is not None):
                self._backoff.pause(self._retry.delay(error, 1))
            raise

    async def _send(
        self,
        body: JSONObject,
        log: structlog.typing.FilteringBoundLogger,
        read_stream: StreamRead | None,
        follow_up: bool,
    ) -> ModelResponse:
        started = time.perf_counter()
        log.debug("model.request", url=self.shown_url, stream=read_stream is not None)
        try:
            status, response = await self._gated_exchange(body, read_stream, follow_up)
        except (httpx.RequestError, RuntimeError, anyio.ClosedResourceError) as exc:
            error = self._request_failure(exc)
        else:
            log.info(
                "model.response",
                status=status,
                response_id=response.id,
                response_status=response.status,
                latency=round(time.perf_counter() - started, 6),
                input_tokens=response.usage.input_tokens,
                output_tokens=response.usage.output_tokens,
            )
            return response
        # Raised out here, not in the except block: as the __context__ of our error, httpx's
        # exception would carry its request, and the request carries the key.
        raise error

    def _request_failure(self, exc: Exception) -> AgentError:
        """What a failed exchange means: the agent closed under the run, or httpx's error typed.

        A pool closed by ``Agent.aclose`` fails a request in whatever way httpx or the pool
        notices it first (``RuntimeError``, ``ClosedResourceError``, a read error).
        """
        closed = self._closed or self._http.is_closed or isinstance(exc, anyio.ClosedResourceError)
        if closed:
            return AgentClosedError("the agent (or its HTTP client) was closed during this request")
        if not isinstance(exc, httpx.RequestError):
            raise exc
        return request_error(self.shown_url, exc, self._url_secrets)

    def _request_auth(self) -> Any:
        # Without a key of ours, the client's own auth (if any) applies.
        return self._auth or httpx.USE_CLIENT_DEFAULT

    async def _gated_exchange(
        self, body: JSONObject, read_stream: StreamRead | None, follow_up: bool
    ) -> tuple[int, ModelResponse]:
        if self._gate is None:
            return await self._exchange(body, read_stream)
        if not self._gate.acquire_nowait():
            pool = self._timeout.pool
            deadline = math.inf if pool is None else anyio.current_time() + pool
            if not await self._gate.acquire(follow_up=follow_up, deadline=deadline):
                raise httpx.PoolTimeout("no free connection within the pool timeout")
        try:
            return await self._exchange(body, read_stream)
        finally:
            self._gate.release()

    async def _exchange(self, body: JSONObject, read_stream: StreamRead | None) -> tuple[int, ModelResponse]:
        # Encoded here, not by httpx: model-written text may hold lone surrogates.
        content = encode_request(body)
        headers = with_trace_context(_JSON_HEADERS if read_stream is None else _SSE_HEADERS)
        request = self._http.build_request(
            "POST", self.url, content=content, headers=headers, timeout=self._timeout
        )
        # What client.stream() does, without its context manager's objects (held by every
        # request in flight, up to the pool's 512).
        reply = await self._http.send(request, auth=self._request_auth(), stream=True)
        try:
            if read_stream is not None and _is_event_stream(reply):
                return reply.status_code, await read_stream(reply)
            return reply.status_code, await self._read(reply)
        finally:
            try:
                await reply.aclose()
            finally:
                _unlink(reply)

    async def _read(self, reply: httpx.Response) -> ModelResponse:
        """A reply read whole, within ``max_response_bytes``: the response, or its typed error."""
        limit = self._limits.max_response_bytes
        async with ReplyBody(reply, limit=limit, limit_name="max_response_bytes") as body:
            content = await body.read()
        if 300 <= reply.status_code < 400:
            raise redirect_error(reply)
        if reply.is_error:
            raise_status_error(reply, content, self._limits.max_json_depth)
        parsed = json_body(reply, content, self._limits.max_json_depth)
        return parse_response(
            parsed, max_output_items=self._limits.max_output_items, status=reply.status_code
        )


_CLOSED_STREAM = httpx.ByteStream(b"")


def _unlink(reply: httpx.Response) -> None:
    """Break the reference cycle httpx leaves between a closed response and its stream.

    httpx binds ``reply.stream`` to the response itself (to time it), so without this every
    reply, its request, both bodies and the pool's wrappers (46 objects) wait for the cyclic GC
    instead of being freed as soon as the loop lets go of them. A closed response never reads
    its stream again.
    """
    if reply.is_closed:
        reply.stream = _CLOSED_STREAM


class _BearerAuth(httpx.Auth):
    """Sets the bearer token as the request is sent: until then the key stays in a SecretStr."""

    def __init__(self, key: SecretStr) -> None:
        self._key = key

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = "Bearer " + self._key.get_secret_value()
        yield request


def _is_event_stream(reply: httpx.Response) -> bool:
    """A reply to read as a stream (an error or a plain JSON reply is read whole)."""
    return reply.is_success and "text/event-stream" in reply.headers.get("content-type", "")


def _pooled_client(timeout: httpx.Timeout, max_connections: int, *, http2: bool = False) -> httpx.AsyncClient:
    """The agent's own client: our pool (HTTP/1.1), or httpx's stack for HTTP/2; env proxies either way."""
    headers = {"User-Agent": "agent-runtime"}
    limits = httpx.Limits(
        max_connections=max_connections,
        max_keepalive_connections=max_connections,
        keepalive_expiry=KEEPALIVE_EXPIRY,
    )
    if http2:
        require_http2()
        return httpx.AsyncClient(timeout=timeout, limits=limits, headers=headers, http2=True)
    # Our own pool: httpcore's rescans every connection per request (see agent._pool). httpx
    # reads proxies from the environment only when it builds the transport: mount them here.
    transport = PooledTransport(max_connections=max_connections)
    return httpx.AsyncClient(
        timeout=timeout, transport=transport, mounts=proxy_mounts(limits), headers=headers
    )
