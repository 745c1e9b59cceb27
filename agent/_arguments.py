"""The model's arguments for a tool call: parsed under limits, errors worded for the model.

Everything here handles text the model wrote, so it must not raise anything but
:class:`ArgumentsError`, however big, deep or odd that text is: a size check before parsing, a
depth check after it (a bracket count keeps the walk off the common path), NaN and infinities
refused, and error lists cut short.
"""

from __future__ import annotations

from typing import Any

from agent._limits import Limits
from agent._wire import STRICT_JSON

__all__ = ["MAX_ERRORS", "ArgumentsError", "parse_arguments", "safe_str", "summarise"]


class ArgumentsError(ValueError):
    """The model's arguments do not fit the tool's schema; ``str()`` is written for the model.

    ``detail`` may say more, for the application only (``ToolCallRecord.error``).
    """

    def __init__(self, message: str, *, detail: str | None = None) -> None:
        super().__init__(message)
        self.detail = message if detail is None else detail


def safe_str(exc: BaseException) -> str:
    """``str(exc)``, or a placeholder when the exception's own ``__str__`` raises."""
    try:
        return str(exc)
    except Exception:
        return f"<{type(exc).__name__}: str() failed>"


def parse_arguments(arguments: str, limits: Limits) -> dict[str, Any]:
    """The model's arguments as a JSON object within ``limits`` (the size is checked before
    parsing); anything else raises :class:`ArgumentsError` with a message for the model."""
    size = _utf8_size(arguments, limits.max_argument_bytes)
    if size > limits.max_argument_bytes:
        raise ArgumentsError(
            f"arguments are {size} bytes, more than the limit of {limits.max_argument_bytes}: "
            "send less data per call"
        )
    if not arguments.strip():
        return {}
    depth_message = f"arguments are nested more than {limits.max_json_depth} levels deep"
    try:
        parsed = STRICT_JSON.decode(arguments)
    except RecursionError:  # the C scanner recurses once per level
        raise ArgumentsError(depth_message) from None
    except ValueError as exc:
        raise ArgumentsError(f"arguments are not valid JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise ArgumentsError("arguments must be a JSON object")
    # Fewer brackets than the limit cannot nest past it: the walk is for the rare large case.
    brackets = arguments.count("{") + arguments.count("[")
    if brackets > limits.max_json_depth and _deeper_than(parsed, limits.max_json_depth):
        raise ArgumentsError(depth_message)
    return parsed


def _utf8_size(text: str, limit: int) -> int:
    """The UTF-8 size of ``text``, or a lower bound when even 4 bytes a character stay within
    ``limit`` (a lone surrogate counts its 3 bytes, as in a surrogate escape)."""
    if len(text) * 4 <= limit:
        return len(text)
    return len(text.encode("utf-8", "surrogatepass"))


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether JSON ``value`` nests arrays and objects more than ``limit`` levels (no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        for child in node.values() if isinstance(node, dict) else node:
            if isinstance(child, dict | list):
                stack.append((child, depth + 1))
    return False


MAX_ERRORS = 10
_MAX_LINE = 200


def summarise(lines: list[str], total: int, *, more: bool = False) -> str:
    """The errors for the model: the first few, each cut short (a message may quote the input)."""
    shown = [line if len(line) <= _MAX_LINE else line[:_MAX_LINE] + "..." for line in lines[:MAX_ERRORS]]
    if total > len(shown):
        return "invalid arguments: " + "; ".join(shown) + f"; and {total - len(shown)} more"
    return "invalid arguments: " + "; ".join(shown) + ("; and more" if more else "")
