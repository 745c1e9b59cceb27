"""``RetryPolicy``: when a failed request is tried again, and how long the agent waits first.

The retry loop itself is :meth:`agent._http.ResponsesClient.create`; what is shared by every
run of one agent (the pause and the retry budget) is ``agent._backoff``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import structlog
import tenacity

from agent._backoff import EndpointBackoff
from agent._errors import APIError, UsageError
from agent._wire import ModelResponse, failure_is_transient

__all__ = [
    "Attempt",
    "RetryPolicy",
    "delivered",
    "describe",
    "error_of",
    "is_transient",
    "log_retry",
    "outcome_of",
]


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


def is_transient(outcome: Attempt) -> bool:
    if isinstance(outcome, ModelResponse):
        return outcome.status == "failed" and failure_is_transient(outcome.error)
    return isinstance(outcome, APIError) and outcome.transient


def outcome_of(state: tenacity.RetryCallState) -> Attempt:
    outcome = state.outcome
    if outcome is None:  # pragma: no cover - tenacity sets it before asking
        raise AssertionError("no outcome")
    error = outcome.exception()
    return error if error is not None else outcome.result()


def delivered(outcome: Attempt) -> ModelResponse:
    """The attempt's response, or its error raised (the end of the retries)."""
    if isinstance(outcome, ModelResponse):
        return outcome
    raise outcome


def log_retry(log: structlog.typing.FilteringBoundLogger, state: tenacity.RetryCallState) -> None:
    """Log a retry of the tenacity loop, whose first attempt is the request's second."""
    wait = round(state.next_action.sleep, 3) if state.next_action else None
    log.warning("model.retry", attempt=state.attempt_number + 1, wait=wait, error=describe(outcome_of(state)))


def error_of(outcome: Attempt) -> BaseException | None:
    return outcome if isinstance(outcome, BaseException) else None


def describe(outcome: Attempt) -> str:
    """A failure as the retry log shows it."""
    if isinstance(outcome, ModelResponse):
        error = outcome.error or {}
        return f"response {outcome.id} failed: {error.get('code')}: {error.get('message')}"
    return str(outcome)
