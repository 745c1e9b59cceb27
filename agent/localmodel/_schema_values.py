"""Values that satisfy a JSON schema, chosen predictably: tool arguments and structured answers.

The local model needs them twice: arguments for a tool it calls without finding them in the prompt,
and the JSON object of a final answer under `text.format`. `hints` (values by property name, from the
prompt or the tool results) are taken where they fit the property's schema; the rest comes from the
schema itself (`default`, `const`, `enum`, `examples`, else the least value of its type and bounds).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jsonschema
from referencing.exceptions import Unresolvable

__all__ = ["instance", "kind_of", "resolve"]

_MISSING = object()
_MAX_DEPTH = 8
_FORMATS = {
    "date-time": "2025-01-01T00:00:00Z",
    "date": "2025-01-01",
    "time": "00:00:00Z",
    "email": "user@example.com",
    "uri": "https://example.com",
    "uuid": "00000000-0000-4000-8000-000000000000",
    "ipv4": "127.0.0.1",
    "ipv6": "::1",
    "hostname": "example.com",
}


def instance(
    schema: Mapping[str, Any] | None,
    *,
    hints: Mapping[str, Sequence[Any]] | None = None,
    all_properties: bool = False,
) -> dict[str, Any]:
    """An object valid against the object `schema`, built from `hints` and the schema's own values.

    `hints` gives candidate values by property name (any depth; case and `-`/`_` ignored): the
    first one valid against the property's schema is taken.

    Optional properties are left out unless the schema names a value for them (`default`, ...), a
    hint fits them, or `all_properties` is set.
    """
    if not schema:
        return {}
    builder = _Builder(schema, hints or {}, all_properties=all_properties)
    value = builder.object_value(schema, 0)
    return value if isinstance(value, dict) else {}


def kind_of(schema: Mapping[str, Any], root: Mapping[str, Any]) -> str:
    """The JSON type a property takes when not null: `string`, `integer`, `object`, ..."""
    schema = resolve(schema, root)
    for key in ("anyOf", "oneOf"):
        branches = schema.get(key)
        if isinstance(branches, list):
            usable = [b for b in branches if isinstance(b, Mapping) and b.get("type") != "null"]
            if usable:
                return kind_of(usable[0], root)
    return _type(schema)


def resolve(schema: Mapping[str, Any], root: Mapping[str, Any]) -> Mapping[str, Any]:
    """Follow a local `$ref` such as `#/$defs/Point` (pydantic's nested models)."""
    ref = schema.get("$ref")
    for _ in range(_MAX_DEPTH):
        if not isinstance(ref, str) or not ref.startswith("#"):
            return schema
        target: Any = root
        for part in ref[2:].split("/") if len(ref) > 1 else []:
            target = target.get(part) if isinstance(target, Mapping) else None
        if not isinstance(target, Mapping):
            return schema
        schema = target
        ref = schema.get("$ref")
    return schema


class _Builder:
    def __init__(
        self, root: Mapping[str, Any], hints: Mapping[str, Sequence[Any]], *, all_properties: bool
    ) -> None:
        self._root = root
        self._hints: dict[str, list[Any]] = {}
        for name, values in hints.items():
            self._hints.setdefault(_key(name), []).extend(values)
        self._all = all_properties

    def value(self, schema: Mapping[str, Any], depth: int) -> Any:
        known = self._known(schema)
        if known is not _MISSING:
            return known
        if depth > _MAX_DEPTH:
            return None
        schema = resolve(schema, self._root)
        branch = _first_branch(schema)
        if branch is not None:
            return self.value(branch, depth + 1)
        kind = _type(schema)
        if kind == "object":
            return self.object_value(schema, depth)
        if kind == "array":
            return self._array_value(schema, depth)
        return _scalar(schema, kind)

    def object_value(self, schema: Mapping[str, Any], depth: int) -> dict[str, Any]:
        schema = resolve(schema, self._root)
        properties = schema.get("properties") or {}
        required = set(schema.get("required") or [])
        value = {}
        for name, raw in properties.items():
            prop = raw if isinstance(raw, Mapping) else {}
            hinted = self._hint(name, prop)
            if hinted is not _MISSING:
                value[name] = hinted
            elif self._all or name in required or self._known(prop) is not _MISSING:
                value[name] = self.value(prop, depth + 1)
        return value

    def _array_value(self, schema: Mapping[str, Any], depth: int) -> list[Any]:
        item_schema = schema.get("items")
        count = int(schema.get("minItems", 0))
        if not count or not isinstance(item_schema, Mapping):
            return []
        return [self.value(item_schema, depth + 1) for _ in range(count)]

    def _hint(self, name: str, schema: Mapping[str, Any]) -> Any:
        """The hint for property `name` if one is given and valid against its schema."""
        values = self._hints.get(_key(name))
        if not values:
            return _MISSING
        target = {**resolve(schema, self._root), "$defs": self._root.get("$defs", {})}
        validator = jsonschema.Draft202012Validator(target)
        for value in values:
            try:
                if validator.is_valid(value):
                    return value
            except (jsonschema.SchemaError, Unresolvable):
                return _MISSING
        return _MISSING

    def _known(self, schema: Mapping[str, Any]) -> Any:
        """A value the schema names: default, const, first enum value, first example.

        Looked up beside a `$ref` first (pydantic writes a field's default there), then in its target.
        """
        for candidate in (schema, resolve(schema, self._root)):
            value = _named_value(candidate)
            if value is not _MISSING:
                return value
        return _MISSING


def _key(name: str) -> str:
    return name.lower().replace("-", "_")


def _scalar(schema: Mapping[str, Any], kind: str) -> Any:
    if kind in ("integer", "number"):
        return _number(schema, integer=kind == "integer")
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return _string(schema)


def _number(schema: Mapping[str, Any], *, integer: bool) -> int | float:
    """The least allowed number from 1 up (or the bounds' own least), a multiple of `multipleOf`."""
    low = schema.get("minimum")
    if "exclusiveMinimum" in schema:
        step = 1 if integer else 0.5
        low = schema["exclusiveMinimum"] + step
    high = schema.get("maximum")
    if "exclusiveMaximum" in schema:
        high = schema["exclusiveMaximum"] - (1 if integer else 0.5)
    value = 1 if low is None else low
    if high is not None and value > high:
        value = high
    multiple = schema.get("multipleOf")
    if isinstance(multiple, int | float) and multiple > 0 and value % multiple:
        value = (value // multiple + 1) * multiple
    return int(value) if integer or float(value).is_integer() else value


def _string(schema: Mapping[str, Any]) -> str:
    text = _FORMATS.get(str(schema.get("format")), "example")
    least = schema.get("minLength")
    if isinstance(least, int) and len(text) < least:
        text = text + "x" * (least - len(text))
    most = schema.get("maxLength")
    if isinstance(most, int):
        text = text[:most]
    return text


def _named_value(schema: Mapping[str, Any]) -> Any:
    for key in ("default", "const"):
        if key in schema:
            return schema[key]
    for key in ("enum", "examples"):
        values = schema.get(key)
        if isinstance(values, list) and values:
            return values[0]
    return _MISSING


def _first_branch(schema: Mapping[str, Any]) -> Mapping[str, Any] | None:
    for key in ("anyOf", "oneOf", "allOf"):
        branches = schema.get(key)
        if isinstance(branches, list):
            usable = [b for b in branches if isinstance(b, Mapping) and b.get("type") != "null"]
            if usable:
                return usable[0]
    return None


def _type(schema: Mapping[str, Any]) -> str:
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None and "properties" in schema:
        return "object"
    return kind if isinstance(kind, str) else "string"
