"""The ``math_calculator`` tool: five arithmetic operations, computed in decimal, never by eval.

Why decimal: models write numbers in decimal and expect decimal answers, but binary floats turn
``0.1 + 0.2`` into ``0.30000000000000004``. Each operand goes to :class:`~decimal.Decimal`
through its shortest ``repr`` (the number as written), so ``+``, ``-`` and ``*`` are exact,
``/`` and ``^`` are correctly rounded to 28 digits, and only the final result is rounded to a
float. Rounding float results to 12 significant digits would hide the noise too, but would
corrupt large exact values such as ``123456789012345 + 1``.
"""

import math
from collections.abc import Callable
from decimal import Context, Decimal, DivisionByZero, InvalidOperation, Overflow
from typing import Literal, TypedDict, get_args

from agent import ToolError, tool

__all__ = ["Calculation", "Operation", "math_calculator"]

Operation = Literal["add", "subtract", "multiply", "divide", "power"]
"""The operations ``math_calculator`` knows."""

_PRECISION = 28

# A result beyond 10^±400 is far outside a double's range (about 1.8e308 down to 4.9e-324),
# so power refuses it before computing: 10 ** 1e9 must fail at once, not fill the memory.
_MAGNITUDE_LIMIT = 400


class Calculation(TypedDict):
    """What ``math_calculator`` returns: operands, operation, result and a readable equation."""

    a: float
    b: float
    operation: str
    result: float
    expression: str


@tool
async def math_calculator(a: float, b: float, operation: Operation) -> Calculation:
    """Calculate a + b, a - b, a * b, a / b or a ^ b (a to the power of b) for two numbers.

    Returns {"a", "b", "operation", "result", "expression"}, e.g. "123.5 + 456.7 = 580.2".
    Numbers are computed in decimal as written, so 0.1 + 0.2 gives exactly 0.3; the result is
    a 64-bit float. Errors: division by zero, a result beyond about ±1.8e308 or too close to
    zero to represent, and a negative base with a non-integer exponent (a complex result).

    Args:
        a: The first number: the left operand, the dividend for divide, the base for power.
        b: The second number: the right operand, the divisor for divide, the exponent for power.
        operation: One of add, subtract, multiply, divide, power.
    """
    x, y = _operand("a", a), _operand("b", b)
    if operation not in _OPERATIONS:
        known = ", ".join(get_args(Operation))
        raise ToolError(f"unknown operation {operation!r}; use one of: {known}")
    symbol, compute = _OPERATIONS[operation]
    result = _to_float(compute(x, y))
    expression = _expression(x, symbol, y, result)
    return {"a": x, "b": y, "operation": operation, "result": result, "expression": expression}


def _operand(name: str, value: float) -> float:
    """Make ``value`` a finite float: direct callers may pass huge ints, NaN or infinity."""
    try:
        number = float(value)
    except OverflowError:
        raise ToolError(f"{name} is too large: numbers must lie within about ±1.8e308") from None
    if not math.isfinite(number):
        raise ToolError(f"{name} must be a finite number, got {number}")
    return number + 0.0  # turns -0.0 into 0.0


def _add(a: float, b: float) -> Decimal:
    return _context().add(_decimal(a), _decimal(b))


def _subtract(a: float, b: float) -> Decimal:
    return _context().subtract(_decimal(a), _decimal(b))


def _multiply(a: float, b: float) -> Decimal:
    return _context().multiply(_decimal(a), _decimal(b))


def _divide(a: float, b: float) -> Decimal:
    if b == 0:
        raise ToolError("division by zero: b (the divisor) must not be 0")
    return _context().divide(_decimal(a), _decimal(b))


def _power(a: float, b: float) -> Decimal:
    if b == 0:
        return Decimal(1)  # x ^ 0 == 1 for every x, 0 ^ 0 included, as in math.pow
    if a == 0 and b < 0:
        raise ToolError("division by zero: 0 cannot be raised to a negative power")
    if a < 0 and not b.is_integer():
        raise ToolError("a negative base needs an integer exponent: the result would be a complex number")
    _check_magnitude(a, b)
    return _context().power(_decimal(a), _decimal(b))


def _check_magnitude(a: float, b: float) -> None:
    """Refuse a ^ b cheaply when its order of magnitude alone rules out a float result."""
    if a == 0:
        return
    magnitude = b * math.log10(abs(a))
    if magnitude > _MAGNITUDE_LIMIT:
        raise ToolError(f"overflow: the result is about 10^({magnitude:.4g}), beyond ±1.8e308")
    if magnitude < -_MAGNITUDE_LIMIT:
        raise ToolError(f"underflow: the result is about 10^({magnitude:.4g}), too close to zero")


_OPERATIONS: dict[str, tuple[str, Callable[[float, float], Decimal]]] = {
    "add": ("+", _add),
    "subtract": ("-", _subtract),
    "multiply": ("*", _multiply),
    "divide": ("/", _divide),
    "power": ("^", _power),
}


def _context() -> Context:
    """A fresh context per operation: the thread's current context may have been changed."""
    return Context(prec=_PRECISION, traps=[InvalidOperation, DivisionByZero, Overflow])


def _decimal(number: float) -> Decimal:
    """The number as written: ``repr`` gives the shortest string that reads back as ``number``."""
    return Decimal(repr(number))


def _to_float(exact: Decimal) -> float:
    """Round ``exact`` to a float, refusing results a float cannot hold."""
    result = float(exact)
    if math.isinf(result):
        raise ToolError("overflow: the result is beyond ±1.8e308, the range of a float")
    if result == 0 and exact != 0:
        raise ToolError("underflow: the result is too close to zero to represent as a float")
    return result + 0.0  # turns -0.0 into 0.0


def _expression(a: float, symbol: str, b: float, result: float) -> str:
    """The equation as a person writes it: ``(-8) ^ 2 = 64``, ``5 - (-3) = 8``."""
    left = _show(a, bracket_negative=symbol == "^")
    return f"{left} {symbol} {_show(b, bracket_negative=True)} = {_show(result)}"


def _show(number: float, *, bracket_negative: bool = False) -> str:
    """Shortest faithful text for ``number``, without a trailing ``.0`` on whole numbers."""
    text = repr(number).removesuffix(".0")
    return f"({text})" if bracket_negative and number < 0 else text
