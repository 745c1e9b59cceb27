"""The ``random_generator`` tool: uniformly random integers from the operating system's CSPRNG."""

import random
from typing import Annotated, TypedDict

from pydantic import Field

from agent import ToolError, tool

__all__ = ["RandomNumbers", "random_generator"]

_BOUND = 10**15
"""Largest magnitude allowed for ``min`` and ``max``, so the schema tells the model the range."""

_MAX_COUNT = 10
"""Most numbers one call returns; keeps the tool output small."""

# SystemRandom draws from os.urandom: no seed to guess, and no shared state to race on when
# direct callers use it from several threads. getrandom() does not block once the system has
# booted, so the tool can be async and run on the event loop.
_RNG = random.SystemRandom()

_Bound = Annotated[int, Field(ge=-_BOUND, le=_BOUND)]
_Count = Annotated[int, Field(ge=1, le=_MAX_COUNT)]


class RandomNumbers(TypedDict):
    """What ``random_generator`` returns: the numbers and the request they answer."""

    numbers: list[int]
    min: int
    max: int
    count: int


@tool
async def random_generator(min: _Bound = 1, max: _Bound = 100, count: _Count = 1) -> RandomNumbers:
    """Generate random integers between min and max (both inclusive), up to 10 per call.

    Returns {"numbers": [...], "min": ..., "max": ..., "count": ...}. The numbers are
    independent draws, so repeats are possible.

    Args:
        min: The smallest possible value, inclusive (default 1; -10^15 to 10^15).
        max: The largest possible value, inclusive (default 100; -10^15 to 10^15; at least min).
        count: How many numbers to generate (default 1; 1 to 10).
    """
    _check_range("min", min, -_BOUND, _BOUND)
    _check_range("max", max, -_BOUND, _BOUND)
    _check_range("count", count, 1, _MAX_COUNT)
    if min > max:
        raise ToolError(f"min ({min}) must not be greater than max ({max})")
    numbers = [_RNG.randint(min, max) for _ in range(count)]
    return {"numbers": numbers, "min": min, "max": max, "count": count}


def _check_range(name: str, value: int, low: int, high: int) -> None:
    """Refuse out-of-range values on direct calls too, where no schema validation ran."""
    if not low <= value <= high:
        raise ToolError(f"{name} must be between {low} and {high}, got {value}")
