"""What an HTTP reply means: a Responses body, or the typed error its status and body say.

Only the first bytes of a body are ever quoted in an error, and its ``Retry-After`` /
``retry-after-ms`` header becomes the error's ``retry_after``.
"""

from __future__ import annotations

import email.utils
import math
import time
from typing import Any, NoReturn

import httpx

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
from agent._result import JSONObject
from agent._urls import redact, shown_url
from agent._wire import JSONRefused, load_json

__all__ = ["json_body", "raise_status_error", "redirect_error", "request_error"]


_RETRYABLE_STATUS = frozenset({408, 409, 429})


_STATUS_ERRORS: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    429: RateLimitError,
}


def request_error(url: str, exc: httpx.RequestError, secrets: tuple[str, ...] = ()) -> APIError:
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


def json_body(reply: httpx.Response, content: bytes, max_depth: int) -> Any:
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


def raise_status_error(reply: httpx.Response, content: bytes, max_depth: int) -> NoReturn:
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


def redirect_error(reply: httpx.Response) -> APIStatusError:
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
