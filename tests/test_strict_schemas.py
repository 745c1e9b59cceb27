"""Strict schemas follow the rules the official SDK enforces, with its own code as the oracle.

``openai.lib._pydantic`` is what the official client runs on a pydantic model before it sends a
strict schema: every object closed (``additionalProperties: false``) with all its properties
required, and no ``$ref`` beside other keywords (the API refuses ``{"$ref", "description"}``).
Our strict schema must already be in that form (the SDK's pass changes nothing in it), obey the
rules checked independently here, and accept what the SDK's schema of the same model accepts.
"""

from __future__ import annotations

import copy
import enum
import inspect
import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openai.lib._pydantic import _ensure_strict_json_schema, to_strict_json_schema
from pydantic import BaseModel, Field, create_model
from typing_extensions import TypedDict

import builtin_tools
from agent import Tool, tool
from agent._result import JSONObject


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Point(BaseModel):
    """A point on the plane."""

    x: int
    y: int = 0


class Shape(BaseModel):
    points: list[Point] = Field(description="the corners")
    colour: Colour = Colour.RED
    origin: Point | None = None
    anchor: Point = Field(default_factory=lambda: Point(x=0), description="where it hangs")


class Node(BaseModel):
    """A tree: a recursive model."""

    value: int
    children: list[Node] = Field(default_factory=list, description="the subtrees")
    parent: Node | None = Field(None, description="one level up")


class Pair(TypedDict):
    left: int
    right: str


_counter = itertools.count()


def _tool(*, strict: bool = True, **params: tuple[Any, Any]) -> Tool[..., Any]:
    """A tool whose parameters are ``name=(annotation, default or ...)``."""

    def function(**kwargs: Any) -> str:
        return ""

    function.__name__ = f"t{next(_counter)}"
    function.__annotations__ = {name: annotation for name, (annotation, _) in params.items()}
    function.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [
            inspect.Parameter(
                name,
                inspect.Parameter.KEYWORD_ONLY,
                annotation=annotation,
                default=inspect.Parameter.empty if default is ... else default,
            )
            for name, (annotation, default) in params.items()
        ]
    )
    return tool(function, strict=strict)


def _sdk_schema(**params: tuple[Any, Any]) -> JSONObject:
    """What the official SDK would send for a model with these fields."""
    return to_strict_json_schema(create_model("Arguments", **params))  # type: ignore[call-overload]


def _nodes(schema: Any) -> Iterator[JSONObject]:
    """Every sub-schema of ``schema`` (definitions included): every dict not under a data keyword."""
    if isinstance(schema, list):
        for item in schema:
            yield from _nodes(item)
    elif isinstance(schema, dict):
        yield schema
        for key, value in schema.items():
            if key == "properties":
                for prop in value.values():
                    yield from _nodes(prop)
            elif key not in ("enum", "const", "default", "examples"):
                yield from _nodes(value)


def strict_violations(schema: JSONObject) -> list[str]:
    """Where ``schema`` breaks a rule of strict mode as the official SDK enforces it."""
    defs = schema.get("$defs", {})
    found = []
    for node in _nodes(schema):
        if node.get("type") == "object" and node.get("additionalProperties") is not False:
            found.append(f"object not closed: {node}")
        if "properties" in node and sorted(node.get("required", [])) != sorted(node["properties"]):
            found.append(f"not every property required: {node}")
        if "$ref" in node and len(node) > 1:
            found.append(f"$ref with siblings: {node}")
        if "$ref" in node and node["$ref"].removeprefix("#/$defs/") not in defs:
            found.append(f"$ref that resolves to nothing: {node}")
        if "allOf" in node:
            found.append(f"allOf: {node}")
    return found


def sdk_pass_changes(schema: JSONObject) -> bool:
    """Whether the SDK's own strict pass would still change ``schema``."""
    copied = copy.deepcopy(schema)
    return _ensure_strict_json_schema(copied, path=(), root=copied) != schema


def accepts(schema: JSONObject, instance: Any) -> bool:
    return jsonschema.Draft202012Validator(schema).is_valid(instance)


@dataclass(frozen=True)
class Case:
    """A tool parameter's type, a full value of it, and a value both schemas must refuse."""

    annotation: Any
    value: Any
    refused: Any
    default: Any = ...


CASES = {
    "model": Case(Point, {"x": 1, "y": 2}, {"x": 1, "y": 2, "z": 3}),
    "model-with-description": Case(
        Annotated[Point, Field(description="where")], {"x": 1, "y": 2}, {"x": "one", "y": 2}
    ),
    "nested-models": Case(
        Shape,
        {
            "points": [{"x": 1, "y": 1}],
            "colour": "blue",
            "origin": None,
            "anchor": {"x": 0, "y": 0},
        },
        {"points": [{"x": 1, "y": 1, "z": 0}], "colour": "red", "origin": None, "anchor": {"x": 0, "y": 0}},
    ),
    "list-of-models": Case(list[Point], [{"x": 1, "y": 2}], [{"x": 1}]),
    "optional-model": Case(Point | None, None, {"y": 1}, None),
    "optional-model-with-description": Case(
        Annotated[Point | None, Field(description="maybe")], {"x": 1, "y": 2}, {"x": None, "y": 2}, None
    ),
    "enum": Case(Colour, "red", "green"),
    "enum-with-description": Case(Annotated[Colour, Field(description="paint")], "blue", "green"),
    "enum-with-default": Case(Colour, "blue", "green", Colour.RED),
    "literal": Case(Literal["a", "b"], "a", "c"),
    "constrained-int": Case(Annotated[int, Field(ge=1, le=9, description="digit")], 5, "5"),
    "default-int": Case(int, 3, "3", 7),
    "typed-dict": Case(Pair, {"left": 1, "right": "r"}, {"left": 1, "right": "r", "extra": 0}),
    "recursive-model": Case(
        Annotated[Node, Field(description="the root")],
        {"value": 1, "children": [{"value": 2, "children": [], "parent": None}], "parent": None},
        {"value": 1, "children": [{"value": "two", "children": [], "parent": None}], "parent": None},
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_strict_schema_breaks_no_rule(case: Case) -> None:
    """The tool's strict schema obeys every rule of strict mode."""
    assert strict_violations(_tool(p=(case.annotation, case.default)).parameters) == []


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_the_sdks_strict_pass_changes_nothing(case: Case) -> None:
    """The official SDK's strict pass leaves our strict schema as it is."""
    assert not sdk_pass_changes(_tool(p=(case.annotation, case.default)).parameters)


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_our_schema_and_the_sdks_agree_on_values(case: Case) -> None:
    """A full value is accepted, and a bad one refused, by ours, by the SDK's, and by validation."""
    schema = _tool(p=(case.annotation, case.default)).parameters
    sdk = _sdk_schema(p=(case.annotation, case.default))
    good, bad = {"p": case.value}, {"p": case.refused}
    assert (accepts(schema, good), accepts(sdk, good)) == (True, True)
    assert (accepts(schema, bad), accepts(sdk, bad)) == (False, False)
    _tool(p=(case.annotation, case.default)).validate(json.dumps(good))


def test_a_described_model_parameter_is_inlined_with_its_description() -> None:
    """``{"$ref", "description"}`` becomes the model's schema with the parameter's description."""
    schema = _tool(p=(Annotated[Point, Field(description="where")], ...)).parameters
    assert schema["properties"]["p"]["description"] == "where"
    assert schema["properties"]["p"]["properties"].keys() == {"x", "y"}
    assert "$defs" not in schema  # inlined everywhere: the definition is dropped


def test_a_recursive_model_keeps_its_definition() -> None:
    """A recursive model inlined at the parameter still refers to its definition inside."""
    schema = _tool(p=(Annotated[Node, Field(description="the root")], ...)).parameters
    assert list(schema["$defs"]) == ["Node"]
    assert schema["properties"]["p"]["properties"]["children"]["anyOf"][0]["items"] == {
        "$ref": "#/$defs/Node"
    }


def test_nested_models_are_closed_in_non_strict_mode() -> None:
    """A non-strict schema closes nested models too (``additionalProperties: false``), as the SDK does."""
    defs = _tool(p=(Shape, ...), strict=False).parameters["$defs"]
    assert (defs["Shape"]["additionalProperties"], defs["Point"]["additionalProperties"]) == (False, False)


def test_free_form_dicts_stay_open_in_non_strict_mode() -> None:
    """``dict[str, int]`` keeps its value schema; only undeclared objects are closed."""
    counts = _tool(p=(dict[str, int], ...), strict=False)
    assert counts.parameters["properties"]["p"]["additionalProperties"] == {"type": "integer"}


# Generated types: leaves, lists, optionals and nested models with descriptions and defaults.
_LEAVES = st.sampled_from(
    [
        (int, 1),
        (str, "s"),
        (float, 1.5),
        (bool, True),
        (Literal["a", "b"], "b"),
        (Colour, "red"),
        (Annotated[int, Field(ge=0, le=10)], 3),
        (Annotated[str, Field(max_length=5)], "abc"),
    ]
)


def _wrap(children: st.SearchStrategy[tuple[Any, Any]]) -> st.SearchStrategy[tuple[Any, Any]]:
    lists = children.map(lambda c: (list[c[0]], [c[1]]))  # type: ignore[valid-type]
    optionals = children.map(lambda c: (c[0] | None, c[1]))
    described = st.tuples(children, st.text(min_size=1, max_size=8)).map(
        lambda t: (Annotated[t[0][0], Field(description=t[1])], t[0][1])
    )
    models = st.lists(st.tuples(children, st.booleans()), min_size=1, max_size=3).map(_model)
    return st.one_of(lists, optionals, described, models)


def _model(fields: list[tuple[tuple[Any, Any], bool]]) -> tuple[Any, Any]:
    """A nested model: each field required, or optional with a ``None`` default."""
    spec = {
        f"f{i}": ((annotation | None, None) if optional else (annotation, ...))
        for i, ((annotation, _), optional) in enumerate(fields)
    }
    value = {f"f{i}": example for i, ((_, example), _) in enumerate(fields)}
    return create_model(f"Model{next(_counter)}", **spec), value  # type: ignore[call-overload]


TYPES = st.recursive(_LEAVES, _wrap, max_leaves=6)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(TYPES, min_size=1, max_size=3))
def test_every_generated_strict_schema_is_strict_by_the_sdks_rules(types: list[tuple[Any, Any]]) -> None:
    """For generated parameter types, our strict schema breaks no rule and the SDK's pass keeps it."""
    params: dict[str, Any] = {f"p{i}": (annotation, ...) for i, (annotation, _) in enumerate(types)}
    made = _tool(**params)
    assert (strict_violations(made.parameters), sdk_pass_changes(made.parameters)) == ([], False)
    values = {f"p{i}": value for i, (_, value) in enumerate(types)}
    assert accepts(made.parameters, values)
    assert accepts(_sdk_schema(**params), values)


@pytest.mark.parametrize("builtin", list(builtin_tools.registry), ids=lambda t: t.name)
def test_every_builtin_strict_schema_is_strict_by_the_sdks_rules(builtin: Tool[..., Any]) -> None:
    """The builtin tools sent as strict break no rule, and the SDK's pass keeps their schemas."""
    made = tool(builtin.function, name=builtin.name, strict=True)
    assert (strict_violations(made.parameters), sdk_pass_changes(made.parameters)) == ([], False)
