"""Arithmetic in a prompt, read as a tree of numbers and operators. Never evaluated here.

`find_expression("What is 2^10?")` gives `("^", 2, 10)`. The local model passes the tree's parts to a
calculator tool as JSON values, innermost operations first, and takes the results the tool returns:
computing is the tool's job, as it would be for a real model.
"""

from __future__ import annotations

import re
from typing import TypeAlias

__all__ = ["OPERATION_WORDS", "Node", "find_expression", "ready_nodes", "render", "substitute"]

Node: TypeAlias = "int | float | tuple[str, Node, Node]"
"""A number, or `(operator, left, right)` with operator one of `+ - * / ^`."""

OPERATION_WORDS: dict[str, tuple[str, ...]] = {
    "+": ("add", "addition", "plus", "sum"),
    "-": ("subtract", "subtraction", "minus", "difference"),
    "*": ("multiply", "multiplication", "times", "product"),
    "/": ("divide", "division", "quotient"),
    "^": ("power", "pow", "exponent", "exponentiation", "exponentiate"),
}
"""Names an operation enum of a calculator tool may give each operator."""

_SPAN = re.compile(r"[-+*/^\u00d7\u00f7()\d.\s]+")
_DATE = re.compile(r"\d{4}-\d{1,2}-\d{1,2}|\d{1,2}/\d{1,2}/\d{2,4}")
_TOKEN = re.compile(r"\s*(\d+(?:\.\d+)?|\*\*|[-+*/^\u00d7\u00f7()])")
_SYMBOLS = {"**": "^", "\u00d7": "*", "\u00f7": "/"}
_BINDING = {"+": 1, "-": 1, "*": 2, "/": 2, "^": 3}


def find_expression(text: str) -> tuple[Node, str] | None:
    """The longest arithmetic expression with at least one operator in `text`, and its text."""
    found: list[tuple[Node, str]] = []
    for match in _SPAN.finditer(text):
        span = match.group().strip().rstrip(".")
        if _DATE.fullmatch(span):
            continue
        node = _parse(span)
        if isinstance(node, tuple):
            found.append((node, span))
    return max(found, key=lambda pair: len(pair[1]), default=None)


def ready_nodes(node: Node) -> list[tuple[str, int | float, int | float]]:
    """The operations whose operands are both numbers, left to right: what can be computed now."""
    if not isinstance(node, tuple):
        return []
    operator, left, right = node
    if not isinstance(left, tuple) and not isinstance(right, tuple):
        return [(operator, left, right)]
    return ready_nodes(left) + ready_nodes(right)


def substitute(node: Node, operation: tuple[str, float, float], result: int | float) -> tuple[Node, bool]:
    """`node` with the leftmost occurrence of `operation` replaced by `result`, and whether found."""
    if not isinstance(node, tuple):
        return node, False
    operator, left, right = node
    if not isinstance(left, tuple) and not isinstance(right, tuple):
        same = operator == operation[0] and left == operation[1] and right == operation[2]
        return (result, True) if same else (node, False)
    new_left, done = substitute(left, operation, result)
    if done:
        return (operator, new_left, right), True
    new_right, done = substitute(right, operation, result)
    return (operator, left, new_right), done


def render(node: Node) -> str:
    """The tree as text, fully bracketed: `(3 + 4) * 2`."""
    if not isinstance(node, tuple):
        return number_text(node)
    operator, left, right = node
    return f"{_operand(left)} {operator} {_operand(right)}"


def number_text(number: int | float) -> str:
    """`2`, not `2.0`; `0.5` as written."""
    return repr(number).removesuffix(".0") if isinstance(number, float) else str(number)


def _operand(node: Node) -> str:
    return f"({render(node)})" if isinstance(node, tuple) else render(node)


def _parse(text: str) -> Node | None:
    tokens = _tokens(text)
    if not tokens:
        return None
    parser = _Parser(tokens)
    node = parser.expression(1)
    return node if node is not None and parser.done() else None


def _tokens(text: str) -> list[str] | None:
    tokens, position = [], 0
    text = text.strip()
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:
            return None
        tokens.append(_SYMBOLS.get(match.group(1), match.group(1)))
        position = match.end()
    return tokens


class _Parser:
    """Precedence climbing over `+ - * / ^` and brackets; `^` binds right, unary minus to numbers."""

    def __init__(self, tokens: list[str]) -> None:
        self._tokens = tokens
        self._at = 0

    def done(self) -> bool:
        return self._at == len(self._tokens)

    def expression(self, least: int) -> Node | None:
        left = self._primary()
        while left is not None and (operator := self._peek()) in _BINDING and _BINDING[operator] >= least:
            self._at += 1
            following = _BINDING[operator] + (0 if operator == "^" else 1)
            right = self.expression(following)
            left = None if right is None else (operator, left, right)
        return left

    def _primary(self) -> Node | None:
        piece = self._next()
        if piece == "(":
            inner = self.expression(1)
            return inner if self._next() == ")" else None
        if piece == "-" and (number := self._next()) is not None and number[0].isdigit():
            return -_number(number)
        return _number(piece) if piece is not None and piece[0].isdigit() else None

    def _peek(self) -> str | None:
        return self._tokens[self._at] if self._at < len(self._tokens) else None

    def _next(self) -> str | None:
        token = self._peek()
        self._at += 1
        return token


def _number(token: str) -> int | float:
    return float(token) if "." in token else int(token)
