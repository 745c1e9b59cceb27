"""The endpoint client: ``POST {base_url}/responses`` over httpx, with auth, retries, typed errors.

:meth:`ResponsesClient.create` is the seam for one model request (retries included); the loop
reaches the endpoint through it and nothing else. Request bodies are encoded here (see
:func:`agent._wire.encode_request`); replies are read within the agent's ``Limits`` (see
``agent._body``), and a redirect is an :class:`APIStatusError`, not followed.
"""

from __future__ import annotations

import email.utils
import math
import random
import re
import time
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
from typing import Any, NoReturn

import anyio
import httpx
import structlog
import tenacity
from pydantic import SecretStr

from agent._backoff import EndpointBackoff
from agent._body import ACCEPT_ENCODING, ReplyBody
from agent._errors import (
    AgentClosedError,
    AgentError,
    APIConnectionError,
    APIError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    InternalServerError,
    NotFoundError,
    PermissionDeniedError,
    ProtocolError,
    RateLimitError,
    ResponseTooLargeError,
    UsageError,
)
from agent._gate import RequestGate
from agent._limits import DEFAULT_LIMITS, Limits
from agent._pool import KEEPALIVE_EXPIRY, PooledTransport, proxy_mounts, require_http2
from agent._result import JSONObject
from agent._wire import (
    JSONRefused,
    ModelResponse,
    encode_request,
    failure_is_transient,
    load_json,
    parse_response,
)

__all__ = ["DEFAULT_TIMEOUT", "ResponsesClient", "RetryPolicy", "StreamRead"]

StreamRead = Callable[[httpx.Response], Awaitable[ModelResponse]]
"""Reads a streamed reply to its finished response (see ``agent._stream``)."""

DEFAULT_TIMEOUT = httpx.Timeout(600.0, connect=10.0)
"""Models can think for minutes before the first byte; connecting should take seconds."""

_RETRYABLE_STATUS = frozenset({408, 409, 429})
_JSON_HEADERS = {"Content-Type": "application/json", "Accept-Encoding": ACCEPT_ENCODING}
_SSE_HEADERS = {**_JSON_HEADERS, "Accept": "text/event-stream"}


def responses_url(base_url: str) -> str:
    """``{base_url}/responses``, keeping a query the base URL carries (e.g. ``?api-version=``)."""
    url = httpx.URL(base_url)
    return str(url.copy_with(path=url.path.rstrip("/") + "/responses"))


def shown_url(url: str) -> str:
    """``url`` without user info, query and fragment, which may hold credentials.

    An URL that cannot be parsed is shown only if it has no ``@``, ``?`` or ``#`` at all.
    """
    try:
        return str(httpx.URL(url).copy_with(userinfo=b"", query=None, fragment=None))
    except (httpx.InvalidURL, TypeError, ValueError):
        return "(not shown: it may hold credentials)" if _MAY_HIDE.search(url) else url


_MAY_HIDE = re.compile(r"[@?#]")


def url_secrets(url: str) -> tuple[str, ...]:
    """The parts of ``url`` that may be credentials (user info, query, fragment), longest first.

    An error message from below (httpx, a proxy, a custom transport) may quote the URL it was
    sent to; these are what :func:`redact` takes out of it.
    """
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        return ()
    parts = {parsed.userinfo.decode(errors="replace"), parsed.username, parsed.password or ""}
    parts |= {parsed.query.decode(errors="replace"), parsed.fragment}
    parts |= {value for _, value in parsed.params.multi_items()}
    return tuple(sorted((part for part in parts if len(part) > 2), key=len, reverse=True))


def redact(text: str, secrets: tuple[str, ...]) -> str:
    """``text`` with every one of ``secrets`` replaced by ``***``."""
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


_STATUS_ERRORS: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    429: RateLimitError,
}


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When and how long to wait before trying a failed request again.

    Connection errors, timeouts, 408, 409, 429, 5xx and responses that failed with a transient
    code (``server_error``, ``rate_limit_exceeded``) are retried with exponential backoff and
    jitter; a server's ``Retry-After`` / ``retry-after-ms`` wins, capped at ``max_retry_after``.

    The runs of one agent back off as one client (see ``agent._backoff``): a 429 or a
    ``Retry-After`` pauses every request to the endpoint (``shared_pause``), and over any
    ``budget_window`` seconds the retries the agent decides on alone (no ``Retry-After`` to
    follow) may number at most ``budget_min_retries`` plus ``budget_ratio`` times the first
    attempts (``budget_ratio=None``: no budget).
    """

    max_retries: int = 2
    initial_delay: float = 0.5
    max_delay: float = 8.0
    jitter: float = 0.5
    max_retry_after: float = 60.0
    shared_pause: bool = True
    budget_ratio: float | None = 0.2
    budget_min_retries: int = 10
    budget_window: float = 10.0

    def __post_init__(self) -> None:
        ratio_ok = self.budget_ratio is None or self.budget_ratio >= 0
        if not (ratio_ok and self.budget_min_retries >= 0 and self.budget_window > 0):
            raise UsageError(
                "RetryPolicy needs budget_ratio >= 0 (or None), budget_min_retries >= 0, budget_window > 0"
            )

    def delay(self, error: BaseException | None, attempt: int) -> float:
        """Seconds to sleep after failed attempt number ``attempt`` (1-based) failed with ``error``."""
        if isinstance(error, APIError) and error.retry_after is not None:
            return min(max(error.retry_after, 0.0), self.max_retry_after)
        backoff = self.initial_delay * 2.0 ** (attempt - 1)
        return min(backoff, self.max_delay) + _jitter(self.jitter)

    def wait(self, state: tenacity.RetryCallState, offset: int = 0) -> float:
        """:meth:`delay` as tenacity's ``wait`` hook (``offset``: attempts made before tenacity's)."""
        error = state.outcome.exception() if state.outcome else None
        return self.delay(error, state.attempt_number + offset)

    def backoff(self) -> EndpointBackoff:
        """A new shared pause and retry budget following this policy (one per endpoint client)."""
        return EndpointBackoff(
            window=self.budget_window,
            ratio=self.budget_ratio,
            min_retries=self.budget_min_retries,
            jitter=self.jitter,
        )


def _jitter(limit: float) -> float:
    return random.uniform(0.0, limit) if limit > 0 else 0.0  # noqa: S311 - not for secrets


Attempt = ModelResponse | BaseException
"""What one attempt gave: a response (maybe a failed one) or the error it raised."""


def _is_transient(outcome: Attempt) -> bool:
    if isinstance(outcome, ModelResponse):
        return outcome.status == "failed" and failure_is_transient(outcome.error)
    return isinstance(outcome, APIError) and outcome.transient


def _outcome_of(state: tenacity.RetryCallState) -> Attempt:
    outcome = state.outcome
    if outcome is None:  # pragma: no cover - tenacity sets it before asking
        raise AssertionError("no outcome")
    error = outcome.exception()
    return error if error is not None else outcome.result()


def _delivered(outcome: Attempt) -> ModelResponse:
    """The attempt's response, or its error raised (the end of the retries)."""
    if isinstance(outcome, ModelResponse):
        return outcome
    raise outcome


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
        self._http2 = http2
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
            return _delivered(outcome)
        pause = self._retry.delay(_error_of(outcome), 1)
        log.warning("model.retry", attempt=1, wait=round(pause, 3), error=_describe(outcome))
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
            return self._retries(_outcome_of(state), state.attempt_number + 1, may_retry, log)

        retrying = tenacity.AsyncRetrying(
            wait=lambda state: self._retry.wait(state, offset=1),
            retry=retries,
            sleep=anyio.sleep,
            before_sleep=lambda state: _log_retry(log, state),
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
        if not (attempt <= self._retry.max_retries and _is_transient(outcome) and may_retry()):
            return False
        if self._scheduled_by_server(outcome) or self._backoff.try_retry():
            return True
        log.warning("model.retry_budget_exhausted", attempt=attempt, error=_describe(outcome))
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
        return _request_error(self.shown_url, exc, self._url_secrets)

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
        headers = _JSON_HEADERS if read_stream is None else _SSE_HEADERS
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
            raise _redirect_error(reply)
        if reply.is_error:
            _raise_status_error(reply, content, self._limits.max_json_depth)
        parsed = _json_body(reply, content, self._limits.max_json_depth)
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


def _request_error(url: str, exc: httpx.RequestError, secrets: tuple[str, ...] = ()) -> APIError:
    """httpx's failures (before or during a reply, streams included) as our typed errors.

    Their messages may quote the request's URL: whatever in it may be a credential is taken out.
    """
    name = type(exc).__name__
    if isinstance(exc, httpx.TimeoutException):
        return APITimeoutError(f"{url} timed out ({name})", transient=True)
    detail = redact(str(exc) or name, secrets)
    if isinstance(exc, httpx.DecodingError):
        return ProtocolError(f"{url} sent a body that cannot be decoded: {detail}", transient=True)
    transient = isinstance(exc, httpx.TransportError) and not isinstance(exc, httpx.UnsupportedProtocol)
    return APIConnectionError(f"cannot reach {url}: {detail}", transient=transient)


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


def _log_retry(log: structlog.typing.FilteringBoundLogger, state: tenacity.RetryCallState) -> None:
    """Log a retry of the tenacity loop, whose first attempt is the request's second."""
    wait = round(state.next_action.sleep, 3) if state.next_action else None
    log.warning(
        "model.retry", attempt=state.attempt_number + 1, wait=wait, error=_describe(_outcome_of(state))
    )


def _error_of(outcome: Attempt) -> BaseException | None:
    return outcome if isinstance(outcome, BaseException) else None


def _describe(outcome: Attempt) -> str:
    """A failure as the retry log shows it."""
    if isinstance(outcome, ModelResponse):
        error = outcome.error or {}
        return f"response {outcome.id} failed: {error.get('code')}: {error.get('message')}"
    return str(outcome)


def _json_body(reply: httpx.Response, content: bytes, max_depth: int) -> Any:
    try:
        return load_json(content, max_depth=max_depth)
    except JSONRefused as exc:
        error = _refused(reply, content, exc)
    raise error


def _refused(reply: httpx.Response, content: bytes, exc: JSONRefused) -> ProtocolError:
    status, request_id = reply.status_code, reply.headers.get("x-request-id")
    if exc.too_deep:
        return ResponseTooLargeError(f"the body is {exc}", status=status, request_id=request_id)
    return ProtocolError(
        f"the endpoint answered HTTP {status} with a body that is not JSON ({exc}): {_snippet(content)}",
        status=status,
        request_id=request_id,
        transient=True,
    )


def _raise_status_error(reply: httpx.Response, content: bytes, max_depth: int) -> NoReturn:
    status = reply.status_code
    error: JSONObject = {}
    try:
        body: Any = load_json(content, max_depth=max_depth)
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            error = body["error"]
    except JSONRefused:
        body = content.decode("utf-8", "replace")
    cls = _STATUS_ERRORS.get(status, InternalServerError if status >= 500 else APIStatusError)
    raise cls(
        str(error.get("message") or f"{reply.reason_phrase or 'error'}: {_snippet(content)}"),
        status=status,
        code=_str_or_none(error.get("code")),
        error_type=_str_or_none(error.get("type")),
        param=_str_or_none(error.get("param")),
        request_id=reply.headers.get("x-request-id"),
        body=body,
        retry_after=_retry_after(reply.headers),
        transient=status in _RETRYABLE_STATUS or status >= 500,
    )


def _redirect_error(reply: httpx.Response) -> APIStatusError:
    """A redirect is not followed (unless your own client does): base_url should be the final URL."""
    location = reply.headers.get("location")
    target = f" to {shown_url(location)}" if location else ""
    return APIStatusError(
        f"the endpoint redirected{target}; set base_url to the URL that answers",
        status=reply.status_code,
        request_id=reply.headers.get("x-request-id"),
    )


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def _snippet(content: bytes) -> str:
    """The start of a body, for a message (never a copy of the whole body)."""
    text = content[:800].decode("utf-8", "replace").strip().replace("\n", " ")
    return (text[:200] + "...") if len(text) > 200 or len(content) > 800 else (text or "(empty body)")


def _retry_after(headers: httpx.Headers) -> float | None:
    """Read ``retry-after-ms`` (OpenAI's, milliseconds) or ``Retry-After`` (seconds or a date)."""
    if (ms := headers.get("retry-after-ms")) is not None:
        try:
            return _finite(float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return _finite(float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


def _finite(seconds: float) -> float:
    if not math.isfinite(seconds):
        raise ValueError("not a finite number of seconds")
    return seconds
