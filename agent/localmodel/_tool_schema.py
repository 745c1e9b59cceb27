"""The checks the real API makes on a function tool's `parameters` schema.

Only what a client can get wrong and the API refuses: the root must be an object schema, and with
`"strict": true` every object must list all its properties as required and forbid additional ones
(the recorded `invalid_function_parameters` 400 is reproduced word for word).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["schema_problem"]


def schema_problem(schema: Mapping[str, Any], *, strict: bool) -> str | None:
    """What is wrong with a tool's parameters schema, worded as the API words it, or None."""
    if schema.get("type", "object") != "object":
        return f"schema must be a JSON Schema of 'type: \"object\"', got 'type: \"{schema['type']}\"'."
    if not isinstance(schema.get("properties", {}), Mapping):
        return "'properties' must be an object."
    if not isinstance(schema.get("required", []), list):
        return "'required' must be an array."
    if strict:
        return next(_strict_problems(schema, ()), None)
    return None


def _strict_problems(schema: Mapping[str, Any], context: tuple[str, ...]) -> Iterator[str]:
    """Strict mode's rules, checked in every object schema reachable from the root."""
    properties = schema.get("properties")
    if schema.get("type") == "object" or isinstance(properties, Mapping):
        where = f"In context={context!r}, "
        if schema.get("additionalProperties") is not False:
            yield where + "'additionalProperties' is required to be supplied and to be false."
        names = list(properties) if isinstance(properties, Mapping) else []
        missing = [name for name in names if name not in (schema.get("required") or [])]
        if missing:
            yield (
                where + "'required' is required to be supplied and to be an array including every key "
                f"in properties. Missing '{missing[0]}'."
            )
    for key, child in _children(schema):
        yield from _strict_problems(child, (*context, *key))


def _children(schema: Mapping[str, Any]) -> Iterator[tuple[tuple[str, ...], Mapping[str, Any]]]:
    for group in ("properties", "$defs", "definitions"):
        members = schema.get(group)
        if isinstance(members, Mapping):
            for name, child in members.items():
                if isinstance(child, Mapping):
                    yield (group, str(name)), child
    items = schema.get("items")
    if isinstance(items, Mapping):
        yield ("items",), items
    for group in ("anyOf", "oneOf", "allOf"):
        branches = schema.get(group)
        if isinstance(branches, list):
            for index, child in enumerate(branches):
                if isinstance(child, Mapping):
                    yield (group, str(index)), child
