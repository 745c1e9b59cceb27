"""JSON-schema surgery for tool parameters: tidy for the wire, OpenAI strict mode, null defaults.

OpenAI's strict mode demands that every object lists all its properties as required and sets
``additionalProperties: false``, and refuses a ``$ref`` beside other keywords (pydantic writes
``{"$ref": ..., "description": ...}`` for a described model parameter): such a reference is
inlined, as the official SDK does. An optional parameter becomes *nullable* instead,
and a ``null`` the model sends for it must turn back into "use the default" before the
arguments are validated: :func:`drop_null_defaults` does that by walking the arguments
alongside the original (non-strict) schema.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any

from agent._errors import ToolDefinitionError
from agent._result import JSONObject

__all__ = ["drop_null_defaults", "model_schema", "to_strict"]

_SUBSCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_SUBSCHEMA_MAPS = ("properties", "$defs", "definitions", "patternProperties")
_SUBSCHEMA_ONE = ("items", "additionalProperties", "not", "contains")

Visitor = Callable[[JSONObject], None]


def _walk(schema: Any, visit: Visitor) -> None:
    """Call ``visit`` on ``schema`` and every sub-schema (never on a ``properties`` map itself)."""
    if not isinstance(schema, dict):
        return
    visit(schema)
    for sub in _subschemas(schema):
        _walk(sub, visit)


def _subschemas(schema: JSONObject, *, defs: bool = True) -> Iterator[Any]:
    """The sub-schemas directly under ``schema`` (its definitions too, unless ``defs`` is false)."""
    for key in _SUBSCHEMA_LISTS:
        yield from schema.get(key, ())
    for key in _SUBSCHEMA_MAPS:
        if defs or key not in ("$defs", "definitions"):
            yield from (schema.get(key) or {}).values()
    for key in _SUBSCHEMA_ONE:
        yield schema.get(key)


def model_schema(schema: JSONObject) -> JSONObject:
    """A pydantic model's schema tidied for the wire, in the official SDK's way.

    Pydantic's generated ``title`` keywords go (they cost tokens and tell the model nothing),
    and every object that does not say whether it takes more properties (a nested model, a
    ``TypedDict``) gets ``additionalProperties: false``; free-form dicts say ``true`` or give
    a schema, and keep it.
    """
    result = copy.deepcopy(schema)
    _walk(result, _tidy_node)
    return result


def _tidy_node(node: JSONObject) -> None:
    node.pop("title", None)
    if node.get("type") == "object" and "additionalProperties" not in node:
        node["additionalProperties"] = False


def to_strict(schema: JSONObject) -> tuple[JSONObject, bool]:
    """Return the strict-mode form of ``schema`` and whether making it strict changed its meaning.

    The meaning changes when an optional property had to become a required, nullable one.
    Raises :class:`ToolDefinitionError` for schemas strict mode cannot express (free-form
    objects such as ``dict[str, int]``, untyped ``Any`` values).
    """
    result = copy.deepcopy(schema)
    changed: list[str] = []
    _walk(result, lambda node: _strict_node(node, changed))
    defs = result.get("$defs")
    if isinstance(defs, dict) and defs:
        for name, definition in defs.items():
            _unravel(definition, defs, frozenset({name}))
        _unravel(result, defs, frozenset())
        _drop_unused_defs(result, defs)
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


_DEFS = "#/$defs/"


def _unravel(schema: Any, defs: JSONObject, expanding: frozenset[str]) -> None:
    """Inline every ``$ref`` that has sibling keywords, as the official SDK does.

    The API refuses ``{"$ref": ..., "description": ...}`` in strict mode. The definition (already
    strict) is copied in place of the reference, the siblings winning; a reference inside the
    copy back to a definition being inlined (a recursive model) keeps its ``$ref`` and loses its
    siblings instead, which ends the recursion.
    """
    if not isinstance(schema, dict):
        return
    name = _def_name(schema)
    if name is not None and len(schema) > 1:
        ref = schema["$ref"]
        siblings = {key: value for key, value in schema.items() if key != "$ref"}
        schema.clear()
        if name in expanding:
            schema["$ref"] = ref
            return
        schema.update({**copy.deepcopy(defs[name]), **siblings})
        expanding = expanding | {name}
    for sub in _subschemas(schema, defs=False):
        _unravel(sub, defs, expanding)


def _def_name(schema: JSONObject) -> str | None:
    """The name of the definition in ``$defs`` that ``schema`` refers to, if any."""
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith(_DEFS):
        return ref.removeprefix(_DEFS)
    return None


def _drop_unused_defs(schema: JSONObject, defs: JSONObject) -> None:
    """Remove the definitions no reference reaches any more (inlining left them behind)."""
    used: set[str] = set()
    pending: list[Any] = list(_subschemas(schema, defs=False))
    while pending:
        node = pending.pop()
        if not isinstance(node, dict):
            continue
        name = _def_name(node)
        if name is not None and name not in used:
            used.add(name)
            pending.append(defs.get(name))
        pending.extend(_subschemas(node, defs=False))
    for name in set(defs) - used:
        del defs[name]
    if not defs:
        del schema["$defs"]


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
