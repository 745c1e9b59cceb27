"""The exception tree.

Every error the runtime raises derives from :class:`AgentError`::

    AgentError
    ├── APIError                      the endpoint failed us (status, code, message, request_id)
    │   ├── APIConnectionError        no usable HTTP response: refused, dropped, DNS
    │   │   └── APITimeoutError       connect/read/write/pool timeout
    │   ├── APIStatusError            an HTTP error status (4xx/5xx) with the server's error body
    │   │   ├── BadRequestError           400
    │   │   ├── AuthenticationError       401
    │   │   ├── PermissionDeniedError     403
    │   │   ├── NotFoundError             404
    │   │   ├── RateLimitError            429
    │   │   └── InternalServerError       5xx
    │   ├── ResponseFailedError       HTTP 200 but the response has status "failed" (or a stream error event)
    │   └── ProtocolError             a reply that is not the Responses protocol (non-JSON, missing fields)
    │       └── ResponseTooLargeError     a body, stream or event past one of the agent's Limits
    ├── RunError                      the loop cannot go on
    │   ├── MaxTurnsExceeded
    │   ├── RunTimeoutError           the run passed its run_timeout
    │   ├── HookError                 a hook you passed raised (the original is the __cause__)
    │   ├── OutputValidationError     the final answer did not fit output_type, retries spent
    │   └── OutputRefusedError        the model refused to answer in output_type's shape
    ├── ToolSourceError               a tool source (MCP server) could not start or list its tools
    └── UsageError                    the caller's mistake, found before anything was sent
        ├── ToolDefinitionError       a tool that cannot be described or made strict
        ├── UnansweredToolCallError   a request would leave a function_call without its output
        ├── InvalidStateError         a saved run state that cannot be resumed (malformed, changed, newer)
        └── AgentClosedError          the agent was closed (before or during the run)

Errors that end a run carry what was done so far in :attr:`AgentError.partial_result`.

:class:`ToolError` stands apart on purpose: it is not a failure of the runtime but a signal a
tool raises to send its own message to the model (the run goes on).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agent._result import RunResult

__all__ = [
    "APIConnectionError",
    "APIError",
    "APIStatusError",
    "APITimeoutError",
    "AgentClosedError",
    "AgentError",
    "AuthenticationError",
    "BadRequestError",
    "HookError",
    "InternalServerError",
    "InvalidStateError",
    "MaxTurnsExceeded",
    "NotFoundError",
    "OutputRefusedError",
    "OutputValidationError",
    "PermissionDeniedError",
    "ProtocolError",
    "RateLimitError",
    "ResponseFailedError",
    "ResponseTooLargeError",
    "RunError",
    "RunTimeoutError",
    "ToolDefinitionError",
    "ToolError",
    "ToolSourceError",
    "UnansweredToolCallError",
    "UsageError",
]


class AgentError(Exception):
    """Root of every error raised by agent-runtime."""

    partial_result: RunResult | None = None
    """What the run had done when it failed (set by the loop; ``None`` outside a run)."""


class APIError(AgentError):
    """The endpoint did not give a usable response."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        error_type: str | None = None,
        param: str | None = None,
        request_id: str | None = None,
        body: Any = None,
        retry_after: float | None = None,
        transient: bool = False,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.error_type = error_type
        self.param = param
        self.request_id = request_id
        self.body = body
        self.retry_after = retry_after
        """Seconds the server asked us to wait (``Retry-After`` / ``retry-after-ms``)."""
        self.transient = transient
        """Whether trying the same request again may succeed (drives the retries)."""

    def __str__(self) -> str:
        parts = [f"HTTP {self.status}" if self.status is not None else None, self.code]
        prefix = " ".join(p for p in parts if p)
        suffix = f" (request id {self.request_id})" if self.request_id else ""
        return f"{prefix}: {self.message}{suffix}" if prefix else f"{self.message}{suffix}"


class APIConnectionError(APIError):
    """The request got no HTTP response: connection refused or dropped, name not resolved."""


class APITimeoutError(APIConnectionError):
    """The endpoint did not answer in time."""


class APIStatusError(APIError):
    """The endpoint answered with an HTTP error status."""


class BadRequestError(APIStatusError):
    """HTTP 400: the endpoint refused the request body."""


class AuthenticationError(APIStatusError):
    """HTTP 401: the API key is missing or wrong."""


class PermissionDeniedError(APIStatusError):
    """HTTP 403: the key may not use this model or endpoint."""


class NotFoundError(APIStatusError):
    """HTTP 404: wrong base URL, or an unknown model or response id."""


class RateLimitError(APIStatusError):
    """HTTP 429: rate limit or quota, still failing after the retries."""


class InternalServerError(APIStatusError):
    """HTTP 5xx: the endpoint failed, still failing after the retries."""


class ResponseFailedError(APIError):
    """The response came back with ``status: "failed"`` (or a stream reported an error)."""


class ProtocolError(APIError):
    """The reply does not follow the Responses protocol (not JSON, missing fields, broken stream)."""


class ResponseTooLargeError(ProtocolError):
    """A reply passed one of the agent's :class:`~agent.Limits` (bytes, event size, items, depth)."""


class RunError(AgentError):
    """The loop cannot go on."""


class MaxTurnsExceeded(RunError):
    """The model still asked for tools after ``max_turns`` model responses."""


class RunTimeoutError(RunError):
    """The run was still going when its ``run_timeout`` passed; it was cancelled there."""


class HookError(RunError):
    """A hook raised; the run ended there. The hook's own exception is the ``__cause__``."""


class OutputValidationError(RunError):
    """The final answer was not JSON of the run's ``output_type``, also after ``output_retries``.

    ``text`` is the last answer as written and ``errors`` what was wrong with it (as the model
    was told); ``partial_result`` holds the conversation, every attempt included.
    """

    def __init__(self, message: str, *, text: str = "", errors: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.text = text
        """The model's last answer, as written."""
        self.errors = errors
        """What was wrong with it: one line per problem, ``where: what``."""


class OutputRefusedError(RunError):
    """The model refused to answer (a ``refusal`` content part) in a run with an ``output_type``.

    Asking again rarely changes a refusal, so the run ends at once; ``refusal`` is its text.
    """

    def __init__(self, message: str, *, refusal: str = "") -> None:
        super().__init__(message)
        self.refusal = refusal
        """The model's explanation, as written."""


class UsageError(AgentError):
    """The caller's mistake, found before anything was sent."""


class ToolDefinitionError(UsageError):
    """A tool cannot be described to the model (bad signature, impossible strict schema, clash)."""


class ToolSourceError(AgentError):
    """A tool source (an MCP server) could not list its tools: it did not start, did not answer
    within its ``connect_timeout``, or refused. Raised when a run (or the agent's ``async with``)
    starts; once listed, a server that dies only fails the calls made to it."""


class InvalidStateError(UsageError):
    """A saved run state that :meth:`Agent.resume` refuses: not JSON, not ours, changed after it
    was saved (its digest), from a newer runtime, or naming calls its conversation does not hold.
    Nothing was run."""


class UnansweredToolCallError(UsageError):
    """A request would leave a ``function_call`` without its ``function_call_output``.

    The endpoint answers such a request with HTTP 400 ("No tool output found for function
    call ..."), so it is refused before it is sent.
    """


class AgentClosedError(UsageError):
    """The agent was closed: no new run starts, and a run in flight fails at its next request."""


class ToolError(Exception):
    """Raise from a tool to send ``message`` to the model as the call's error output.

    Any other exception's message may hold secrets, so by default the model only sees its
    type; a ``ToolError`` is the tool's way to say something on purpose, e.g. "no city named
    'Pariss'; did you mean 'Paris'?". The run goes on and the model can react.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
