"""JSON-schema surgery for tool parameters: tidy for the wire, OpenAI strict mode, null defaults.

OpenAI's strict mode demands that every object lists all its properties as required and sets
``additionalProperties: false``. An optional parameter therefore becomes *nullable* instead,
and a ``null`` the model sends for it must turn back into "use the default" before the
arguments are validated: :func:`drop_null_defaults` does that by walking the arguments
alongside the original (non-strict) schema.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from agent._errors import ToolDefinitionError
from agent._result import JSONObject

__all__ = ["drop_null_defaults", "strip_titles", "to_strict"]

_SUBSCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_SUBSCHEMA_MAPS = ("properties", "$defs", "definitions", "patternProperties")
_SUBSCHEMA_ONE = ("items", "additionalProperties", "not", "contains")

Visitor = Callable[[JSONObject], None]


def _walk(schema: Any, visit: Visitor) -> None:
    """Call ``visit`` on ``schema`` and every sub-schema (never on a ``properties`` map itself)."""
    if not isinstance(schema, dict):
        return
    visit(schema)
    for key in _SUBSCHEMA_LISTS:
        for sub in schema.get(key, ()):
            _walk(sub, visit)
    for key in _SUBSCHEMA_MAPS:
        for sub in (schema.get(key) or {}).values():
            _walk(sub, visit)
    for key in _SUBSCHEMA_ONE:
        _walk(schema.get(key), visit)


def strip_titles(schema: JSONObject) -> JSONObject:
    """Drop pydantic's generated ``title`` keywords: they cost tokens and tell the model nothing."""
    result = copy.deepcopy(schema)
    _walk(result, lambda node: node.pop("title", None))
    return result


def to_strict(schema: JSONObject) -> tuple[JSONObject, bool]:
    """Return the strict-mode form of ``schema`` and whether making it strict changed its meaning.

    The meaning changes when an optional property had to become a required, nullable one.
    Raises :class:`ToolDefinitionError` for schemas strict mode cannot express (free-form
    objects such as ``dict[str, int]``, untyped ``Any`` values).
    """
    result = copy.deepcopy(schema)
    changed: list[str] = []
    _walk(result, lambda node: _strict_node(node, changed))
    return result, bool(changed)


def _strict_node(node: JSONObject, changed: list[str]) -> None:
    if not node or node.keys() <= {"description", "default", "examples"}:
        raise ToolDefinitionError("strict mode cannot express an untyped value (Any)")
    node.pop("default", None)
    if node.get("type") != "object" and "properties" not in node:
        return
    extra = node.get("additionalProperties", False)
    if extra is not False or ("properties" not in node and "$ref" not in node):
        raise ToolDefinitionError(
            "strict mode cannot express a free-form object (e.g. dict[str, X]); "
            "use a pydantic model with named fields"
        )
    node["additionalProperties"] = False
    properties: JSONObject = node.get("properties", {})
    required = set(node.get("required", ()))
    for name, prop in properties.items():
        if name not in required:
            properties[name] = _nullable(prop)
            changed.append(name)
    node["required"] = list(properties)


def _nullable(prop: JSONObject) -> JSONObject:
    if _allows_null(prop):
        return prop
    description = prop.pop("description", None)
    result: JSONObject = {"anyOf": [prop, {"type": "null"}]}
    if description is not None:
        result["description"] = description
    return result


def _allows_null(schema: Any) -> bool:
    if not isinstance(schema, dict):
        return False
    kind = schema.get("type")
    if kind == "null" or (isinstance(kind, list) and "null" in kind):
        return True
    return any(_allows_null(sub) for sub in [*schema.get("anyOf", ()), *schema.get("oneOf", ())])


def drop_null_defaults(arguments: Any, schema: JSONObject) -> Any:
    """Remove ``null`` values the original schema does not allow for optional properties.

    A strict-mode model must send every property, so it sends ``null`` for "not given";
    dropping the key lets the parameter's default apply.
    """
    return _drop(arguments, schema, schema.get("$defs", {}))


def _drop(value: Any, schema: Any, defs: JSONObject) -> Any:
    if not isinstance(schema, dict):
        return value
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        schema = defs.get(ref.removeprefix("#/$defs/"), {})
    if isinstance(value, list):
        return [_drop(v, schema.get("items"), defs) for v in value]
    if not isinstance(value, dict) or "properties" not in schema:
        return value
    properties: JSONObject = schema["properties"]
    required = set(schema.get("required", ()))
    return {
        key: _drop(v, properties.get(key), defs)
        for key, v in value.items()
        if not (v is None and key not in required and not _allows_null(properties.get(key)))
    }
