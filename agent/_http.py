"""The endpoint client: ``POST {base_url}/responses`` over httpx, with auth, retries, typed errors.

:meth:`ResponsesClient.create` is the seam for one model request (retries included); the loop
reaches the endpoint through it and nothing else.
"""

from __future__ import annotations

import email.utils
import json
import math
import random
import time
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
from typing import Any, NoReturn

import anyio
import httpx
import structlog
import tenacity
from pydantic import SecretStr

from agent._errors import (
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
)
from agent._gate import RequestGate
from agent._limits import DEFAULT_LIMITS, Limits
from agent._pool import PooledTransport
from agent._result import JSONObject
from agent._wire import ModelResponse, parse_response

__all__ = ["DEFAULT_TIMEOUT", "ResponsesClient", "RetryPolicy", "StreamRead"]

StreamRead = Callable[[httpx.Response], Awaitable[ModelResponse]]
"""Reads a streamed reply to its finished response (see ``agent._stream``)."""

DEFAULT_TIMEOUT = httpx.Timeout(600.0, connect=10.0)
"""Models can think for minutes before the first byte; connecting should take seconds."""

_RETRYABLE_STATUS = frozenset({408, 409, 429})
_SSE_HEADERS = {"Accept": "text/event-stream"}


def responses_url(base_url: str) -> str:
    """``{base_url}/responses``, keeping a query the base URL carries (e.g. ``?api-version=``)."""
    url = httpx.URL(base_url)
    return str(url.copy_with(path=url.path.rstrip("/") + "/responses"))


def shown_url(url: str) -> str:
    """``url`` without user info and query, which may hold credentials."""
    return str(httpx.URL(url).copy_with(userinfo=b"", query=None))


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

    Connection errors, timeouts, 408, 409, 429 and 5xx are retried with exponential backoff and
    jitter; a server's ``Retry-After`` / ``retry-after-ms`` wins, capped at ``max_retry_after``.
    """

    max_retries: int = 2
    initial_delay: float = 0.5
    max_delay: float = 8.0
    jitter: float = 0.5
    max_retry_after: float = 60.0

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


def _jitter(limit: float) -> float:
    return random.uniform(0.0, limit) if limit > 0 else 0.0  # noqa: S311 - not for secrets


def _is_transient(error: BaseException) -> bool:
    return isinstance(error, APIError) and error.transient


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
        self._auth = _BearerAuth(api_key) if api_key else None
        self._timeout = timeout
        self._retry = retry
        self._limits = limits
        self._http2 = http2
        self._owns_client = http_client is None
        self._http = http_client or _pooled_client(timeout, max_connections)
        # Requests wait for our own pool here, before httpx builds them (your client: its own way).
        self._gate = RequestGate(max_connections) if http_client is None else None
        self._log = log

    def __repr__(self) -> str:
        return f"<ResponsesClient {self.shown_url}>"

    async def aclose(self) -> None:
        """Close the connection pool, if this client created it."""
        if self._owns_client:
            await self._http.aclose()

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
        handed to it. Transient failures are retried while ``may_retry()`` holds: a stream
        that fails after its tools started is not sent again. A ``follow_up`` (a run's request
        after its first response) waits for a connection ahead of the runs' first requests.
        """
        # The first attempt goes out bare: most requests never fail, and the retry machinery
        # (objects in reference cycles) would be built per request for nothing.
        try:
            return await self._send(body, log, read_stream, follow_up)
        except APIError as error:
            if not (self._retry.max_retries and _is_transient(error) and may_retry()):
                raise
            pause = self._retry.delay(error, 1)
            log.warning("model.retry", attempt=1, wait=round(pause, 3), error=str(error))
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
        retrying = tenacity.AsyncRetrying(
            stop=tenacity.stop_after_attempt(self._retry.max_retries),
            wait=lambda state: self._retry.wait(state, offset=1),
            retry=tenacity.retry_if_exception(lambda error: _is_transient(error) and may_retry()),
            sleep=anyio.sleep,
            reraise=True,
            before_sleep=lambda state: _log_retry(log, state),
        )
        async for attempt in retrying:
            with attempt:
                return await self._send(body, log, read_stream, follow_up)
        raise AssertionError("unreachable")  # pragma: no cover

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
        except httpx.RequestError as exc:
            error = _request_error(self.shown_url, exc)
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
        if read_stream is None:
            reply = await self._http.post(
                self.url, json=body, auth=self._request_auth(), timeout=self._timeout
            )
            _unlink(reply)
            return reply.status_code, _parse(reply)
        streamed: httpx.Response | None = None
        try:
            async with self._http.stream(
                "POST",
                self.url,
                json=body,
                auth=self._request_auth(),
                headers=_SSE_HEADERS,
                timeout=self._timeout,
            ) as streamed:
                return streamed.status_code, await _parse_stream(streamed, read_stream)
        finally:
            if streamed is not None:
                _unlink(streamed)


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


def _request_error(url: str, exc: httpx.RequestError) -> APIError:
    """httpx's failures (before or during a reply, streams included) as our typed errors."""
    name = type(exc).__name__
    if isinstance(exc, httpx.TimeoutException):
        return APITimeoutError(f"{url} timed out ({name})", transient=True)
    if isinstance(exc, httpx.DecodingError):
        return ProtocolError(f"{url} sent a body that cannot be decoded: {exc}", transient=True)
    transient = isinstance(exc, httpx.TransportError) and not isinstance(exc, httpx.UnsupportedProtocol)
    return APIConnectionError(f"cannot reach {url}: {exc or name}", transient=transient)


def _parse(reply: httpx.Response) -> ModelResponse:
    if reply.is_error:
        _raise_status_error(reply)
    return parse_response(_json_body(reply))


async def _parse_stream(reply: httpx.Response, read_stream: StreamRead) -> ModelResponse:
    """Hand an event stream to ``read_stream``; an error or a plain JSON reply is read whole."""
    content_type = reply.headers.get("content-type", "")
    if reply.is_error or "text/event-stream" not in content_type:
        await reply.aread()
        return _parse(reply)
    return await read_stream(reply)


def _pooled_client(timeout: httpx.Timeout, max_connections: int) -> httpx.AsyncClient:
    headers = {"User-Agent": "agent-runtime"}
    if not PooledTransport.supported():  # an httpx whose transport no longer has a pool seam
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        return httpx.AsyncClient(timeout=timeout, limits=limits, headers=headers)
    # Our own pool: httpcore's rescans every connection per request (see agent._pool).
    transport = PooledTransport(max_connections=max_connections, keepalive_expiry=30.0)
    return httpx.AsyncClient(timeout=timeout, transport=transport, headers=headers)


def _log_retry(log: structlog.typing.FilteringBoundLogger, state: tenacity.RetryCallState) -> None:
    """Log a retry of the tenacity loop, whose first attempt is the request's second."""
    error = state.outcome.exception() if state.outcome else None
    wait = round(state.next_action.sleep, 3) if state.next_action else None
    log.warning("model.retry", attempt=state.attempt_number + 1, wait=wait, error=str(error))


def _json_body(reply: httpx.Response) -> Any:
    try:
        return json.loads(reply.content)
    except ValueError:
        raise ProtocolError(
            f"the endpoint answered HTTP {reply.status_code} with a body that is not JSON: {_snippet(reply)}",
            status=reply.status_code,
            request_id=reply.headers.get("x-request-id"),
            transient=True,
        ) from None


def _raise_status_error(reply: httpx.Response) -> NoReturn:
    status = reply.status_code
    error: JSONObject = {}
    try:
        body: Any = json.loads(reply.content)
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            error = body["error"]
    except ValueError:
        body = reply.text
    cls = _STATUS_ERRORS.get(status, InternalServerError if status >= 500 else APIStatusError)
    raise cls(
        str(error.get("message") or f"{reply.reason_phrase or 'error'}: {_snippet(reply)}"),
        status=status,
        code=_str_or_none(error.get("code")),
        error_type=_str_or_none(error.get("type")),
        param=_str_or_none(error.get("param")),
        request_id=reply.headers.get("x-request-id"),
        body=body,
        retry_after=_retry_after(reply.headers),
        transient=status in _RETRYABLE_STATUS or status >= 500,
    )


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def _snippet(reply: httpx.Response) -> str:
    text = reply.text.strip().replace("\n", " ")
    return (text[:200] + "...") if len(text) > 200 else (text or "(empty body)")


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
