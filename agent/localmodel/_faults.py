"""Fault injection: rehearse the failures a real endpoint has, on demand.

A fault comes from three places, merged in this order (later fields win): the server's fault plan
(one entry consumed per request, for clients that cannot set headers), the `x-localmodel-fault`
request header, and the request's `metadata["localmodel_fault"]`. The text form is the same for
the header and metadata: `;`-separated `key=value` pairs and flags, e.g. `status=429;retry_after=0.2`.

Most faults fail the HTTP exchange (a status, a connection dropped before or during the body, a
stall, a body that is not JSON). Two fail the *response* inside a 200, as models do mid-answer:
`fail=CODE` (status `failed`, and on a stream an `error` event then `response.failed`) and
`incomplete=REASON` (status `incomplete`, the stream ending in `response.incomplete`). Both cut the
output after its first item.

A `FaultMix` fails a random share of the requests instead, each with a fault drawn from a list,
repeatably from a seed: what a soak test needs.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import random
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass

from ._errors import Rejection

__all__ = ["DEFAULT_MIX", "Fault", "FaultMix", "FaultPlan", "response_error", "status_rejection"]

_FLAGS = ("drop", "cut", "malformed", "not_json", "truncate")
_NUMBERS = ("retry_after", "delay", "stall", "stream_delay")
_WORDS = ("fail", "incomplete")
_WORD = re.compile(r"^[A-Za-z0-9_.-]+$")

# Bodies shaped like the real API's for each status; the marker says who really sent them.
_MARK = " [localmodel fault injection]"
_STATUS_ERRORS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Bad request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: ("invalid_request_error", "unsupported_country_region_territory", "Forbidden."),
    404: ("invalid_request_error", None, "Not found."),
    409: ("invalid_request_error", None, "Conflict."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests."),
    500: ("server_error", None, "The server had an error while processing your request."),
    502: ("server_error", None, "Bad gateway."),
    503: ("server_error", None, "The engine is currently overloaded, please try again later."),
    504: ("server_error", None, "Gateway timeout."),
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Fault:
    """One injected failure. The default `Fault()` injects nothing.

    - `status`: answer this HTTP status (400-599) with an OpenAI-style error body.
    - `retry_after`: seconds, sent as `retry-after` and `retry-after-ms` headers with `status`.
    - `delay`: sleep this many seconds before answering (whatever the answer is).
    - `drop`: close the connection without any response.
    - `cut`: send the headers and part of the body, then close the connection: half of a JSON
      body (whose `content-length` promised all of it), or a stream's events up to the end of its
      first output item.
    - `stall`: send the headers and the same part of the body as `cut`, then pause this many
      seconds before the rest (past a client's read timeout, the client gives up mid-body).
    - `malformed`: answer 200 with a truncated JSON body (or, streaming, an event whose data is cut
      off mid-JSON).
    - `not_json`: answer 200 with an HTML page, as a misconfigured proxy does.
    - `truncate`: streaming only; end the stream after the first output item, with no
      `response.completed` (the connection closes cleanly).
    - `stream_delay`: seconds between streamed output items, overriding the server's setting.
    - `fail`: answer 200 with a response of status `failed` whose `error.code` is this (the real
      API's include `server_error`, `rate_limit_exceeded`, `invalid_prompt`), its output cut after
      the first item. Streaming: that item, then an `error` event, then `response.failed`.
    - `incomplete`: answer 200 with a response of status `incomplete` whose
      `incomplete_details.reason` is this (the real API's are `max_output_tokens` and
      `content_filter`), its output cut after the first item. Streaming: that item, then
      `response.incomplete` instead of `response.completed`.
    """

    status: int | None = None
    retry_after: float | None = None
    delay: float = 0.0
    drop: bool = False
    cut: bool = False
    stall: float | None = None
    malformed: bool = False
    not_json: bool = False
    truncate: bool = False
    stream_delay: float | None = None
    fail: str | None = None
    incomplete: str | None = None

    def __post_init__(self) -> None:
        if self.status is not None and not 400 <= self.status <= 599:
            raise ValueError(f"fault status must be 400-599, got {self.status}")
        if self.fail is not None and self.incomplete is not None:
            raise ValueError("a response cannot both fail and be incomplete: choose one")
        for name in _WORDS:
            word = getattr(self, name)
            if word is not None and not _WORD.match(word):
                raise ValueError(f"fault {name} must be a code such as server_error, got {word!r}")
        for name in _NUMBERS:
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise ValueError(f"fault {name} must be a finite number >= 0, got {value}")

    @classmethod
    def parse(cls, spec: str) -> Fault:
        """Read the text form: `status=429;retry_after=0.2`, `drop`, `fail=server_error`, ..."""
        fields: dict[str, float | int | bool | str] = {}
        for raw in spec.split(";"):
            key, has_value, value = (part.strip() for part in raw.partition("="))
            if not key:
                continue
            if key in _FLAGS and not has_value:
                fields[key] = True
            elif key == "status" and has_value:
                fields[key] = _number(key, value, int)
            elif key in _NUMBERS and has_value:
                fields[key] = _number(key, value, float)
            elif key in _WORDS and has_value:
                fields[key] = value
            else:
                raise ValueError(f"unknown fault {raw.strip()!r}")
        return cls(**fields)  # type: ignore[arg-type]

    def __str__(self) -> str:
        """The text form (`status=429;retry_after=0.2`), which `parse` reads back; `none` for `Fault()`."""
        parts = []
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value == field.default:
                continue
            if value is True:
                parts.append(field.name)
            elif isinstance(value, float):
                parts.append(f"{field.name}={value:g}")
            else:
                parts.append(f"{field.name}={value}")
        return ";".join(parts) or "none"

    def applies_to(self, *, stream: bool) -> bool:
        """Whether this fault changes a request that is (or is not) streamed: `truncate` needs one."""
        return stream or dataclasses.replace(self, truncate=False) != Fault()

    def merged(self, other: Fault) -> Fault:
        """This fault with every field `other` sets (differs from the default) taking over."""
        changes = {
            field.name: getattr(other, field.name)
            for field in dataclasses.fields(other)
            if getattr(other, field.name) != field.default
        }
        return dataclasses.replace(self, **changes)


def _number(key: str, text: str, kind: type[int] | type[float]) -> int | float:
    try:
        return kind(text)
    except ValueError:
        raise ValueError(f"fault {key} needs a number, got {text!r}") from None


DEFAULT_MIX: tuple[Fault, ...] = (
    Fault(status=429, retry_after=0.05),
    Fault(status=500),
    Fault(status=503),
    Fault(drop=True),
    Fault(cut=True),
    Fault(delay=2.0),
    Fault(stall=2.0),
    Fault(malformed=True),
    Fault(not_json=True),
    Fault(truncate=True),
)
"""What `FaultMix` draws from by default: every way an exchange can fail. The stalls last 2 s,
so a client whose read timeout is shorter sees a timeout (before the headers, and mid-body)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class FaultMix:
    """Fail a random share of the requests, each with a fault drawn from `kinds`; repeatable.

    Each request draws: with probability `rate` it gets one of the `kinds` that apply to it
    (`truncate` only to a streamed request), chosen uniformly. The draws come from a
    `random.Random(seed)` of the server's own, so the same seed gives the same sequence of
    faults for the same sequence of requests (with concurrent clients, which request gets which
    fault depends on their arrival order). A fault plan's explicit faults are used up first.
    """

    rate: float = 0.2
    seed: int = 0
    kinds: tuple[Fault, ...] = DEFAULT_MIX

    def __post_init__(self) -> None:
        if not (math.isfinite(self.rate) and 0.0 <= self.rate <= 1.0):
            raise ValueError(f"fault rate must be between 0 and 1, got {self.rate}")
        if not self.kinds or Fault() in self.kinds:
            raise ValueError("a fault mix needs at least one kind, and no empty Fault()")


class FaultPlan:
    """Faults consumed one per request, in order; once empty, requests are served normally, or
    failed at random by a `FaultMix`.

    Thread-safe, because the server consumes it on its own thread while a test may extend it.
    """

    def __init__(self, faults: Iterable[Fault] = (), mix: FaultMix | None = None) -> None:
        self._faults = collections.deque(faults)
        self._mix = mix
        self._random = random.Random(mix.seed if mix else 0)  # noqa: S311 - not for secrets
        self._lock = threading.Lock()

    def next(self, *, stream: bool = False) -> Fault:
        """The fault for the next request (`Fault()` when the plan is used up and no mix fails it)."""
        with self._lock:
            if self._faults:
                return self._faults.popleft()
            return self._draw(stream) if self._mix else Fault()

    def _draw(self, stream: bool) -> Fault:
        assert self._mix is not None
        # Two draws per request whatever their results, so one request's answer does not shift
        # the faults of the following ones.
        fails = self._random.random() < self._mix.rate
        pick = self._random.random()
        kinds = [kind for kind in self._mix.kinds if kind.applies_to(stream=stream)]
        return kinds[int(pick * len(kinds))] if fails and kinds else Fault()

    def extend(self, faults: Iterable[Fault]) -> None:
        """Queue more faults after those still pending."""
        with self._lock:
            self._faults.extend(faults)

    def __len__(self) -> int:
        with self._lock:
            return len(self._faults)


def status_rejection(fault: Fault) -> Rejection:
    """The error answer a `status` fault asks for, with its retry headers."""
    status = fault.status or 500
    kind, code, message = _STATUS_ERRORS.get(status, ("server_error", None, f"HTTP {status}."))
    headers = {}
    if fault.retry_after is not None:
        headers["retry-after"] = f"{fault.retry_after:g}"
        headers["retry-after-ms"] = str(round(fault.retry_after * 1000))
    return Rejection(status, message + _MARK, type=kind, code=code, headers=headers)


def response_error(code: str) -> dict[str, str]:
    """The `error` of a response that a `fail` fault failed, shaped like the API's."""
    return {"code": code, "message": f"The response failed with code '{code}'.{_MARK}"}
