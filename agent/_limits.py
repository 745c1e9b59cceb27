"""``Limits``: how much a model or an endpoint can make one run hold.

Every size and count here comes from outside the program: the endpoint chooses how big a body
or a stream event is and how many items a response has; the model chooses how many calls it
asks for and how big and how deep their arguments are. Each cap ends in a typed outcome
(``invalid_arguments``, ``rejected``) or a typed error (:class:`~agent.ResponseTooLargeError`),
never in an unbounded allocation or an untyped exception.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent._errors import UsageError

__all__ = ["DEFAULT_LIMITS", "Limits"]

_MiB = 1024 * 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """Caps on what the endpoint and the model can make a run hold (``Agent(limits=...)``).

    The defaults are far above what the real API sends and far below what hurts a server.
    """

    max_response_bytes: int = 64 * _MiB
    """A response body, counted after decompression (a non-streamed reply or an error body)."""
    max_event_bytes: int = 16 * _MiB
    """One Server-Sent Event's data, counted after decompression."""
    max_stream_bytes: int = 256 * _MiB
    """A whole streamed reply, counted after decompression."""
    max_output_items: int = 10_000
    """Output items in one response."""
    max_json_depth: int = 200
    """Nesting of JSON arrays and objects, in a response body, a stream event or a call's arguments."""
    max_calls_per_response: int = 128
    """Function calls run from one response; the calls past it are answered ``rejected``."""
    max_argument_bytes: int = 1 * _MiB
    """One call's arguments (UTF-8); larger ones are answered ``invalid_arguments``."""

    def __post_init__(self) -> None:
        for name in self.__slots__:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise UsageError(f"Limits.{name} must be a positive int, got {value!r}")


DEFAULT_LIMITS = Limits()
