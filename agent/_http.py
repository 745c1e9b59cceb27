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

from agent._body import ACCEPT_ENCODING, ReplyBody
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
    ResponseTooLargeError,
)
from agent._limits import DEFAULT_LIMITS, Limits
from agent._pool import PooledTransport
from agent._result import JSONObject
from agent._wire import JSONRefused, ModelResponse, encode_request, load_json, parse_response

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
    ) -> ModelResponse:
        """Send one request and return its response; the seam for one model request.

        With ``read_stream`` the reply is streamed (the body must ask for ``stream: true``) and
        handed to it. Transient failures are retried while ``may_retry()`` holds: a stream
        that fails after its tools started is not sent again.
        """
        # The first attempt goes out bare: most requests never fail, and the retry machinery
        # (objects in reference cycles) would be built per request for nothing.
        try:
            return await self._send(body, log, read_stream)
        except APIError as error:
            if not (self._retry.max_retries and _is_transient(error) and may_retry()):
                raise
            pause = self._retry.delay(error, 1)
            log.warning("model.retry", attempt=1, wait=round(pause, 3), error=str(error))
        await anyio.sleep(pause)
        return await self._retry_send(body, log, read_stream, may_retry)

    async def _retry_send(
        self,
        body: JSONObject,
        log: structlog.typing.FilteringBoundLogger,
        read_stream: StreamRead | None,
        may_retry: Callable[[], bool],
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
                return await self._send(body, log, read_stream)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _send(
        self, body: JSONObject, log: structlog.typing.FilteringBoundLogger, read_stream: StreamRead | None
    ) -> ModelResponse:
        started = time.perf_counter()
        log.debug("model.request", url=self.shown_url, stream=read_stream is not None)
        try:
            status, response = await self._exchange(body, read_stream)
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

    async def _exchange(self, body: JSONObject, read_stream: StreamRead | None) -> tuple[int, ModelResponse]:
        # Encoded here, not by httpx: model-written text may hold lone surrogates.
        content = encode_request(body)
        headers = _JSON_HEADERS if read_stream is None else _SSE_HEADERS
        request = self._http.stream(
            "POST",
            self.url,
            content=content,
            auth=self._request_auth(),
            headers=headers,
            timeout=self._timeout,
        )
        async with request as reply:
            if read_stream is not None and _is_event_stream(reply):
                return reply.status_code, await read_stream(reply)
            return reply.status_code, await self._read(reply)

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


def _is_event_stream(reply: httpx.Response) -> bool:
    """A reply to read as a stream (an error or a plain JSON reply is read whole)."""
    return reply.is_success and "text/event-stream" in reply.headers.get("content-type", "")


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
