"""``@tool``: schemas from signatures and docstrings, strict mode, validation, registries."""

from __future__ import annotations

import enum
from typing import Annotated, Any, Literal

import pytest
from pydantic import BaseModel, Field

from agent import ArgumentsError, Tool, ToolContext, ToolDefinitionError, ToolRegistry, tool


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Filter(BaseModel):
    field: str
    limit: int = 10


class Point(BaseModel):
    x: int
    y: int


def f_required(city: str, days: int) -> None:
    """Forecast."""


def f_literal(unit: Literal["c", "f"]) -> None:
    """Unit."""


def f_enum(color: Color) -> None:
    """Color."""


def f_optional(note: str | None) -> None:
    """Optional with no default is still required."""


def f_default(count: int = 1) -> None:
    """Default."""


def f_list(tags: list[str]) -> None:
    """List."""


def f_annotated(n: Annotated[int, Field(ge=1, le=10)]) -> None:
    """Annotated."""


def f_nested(point: Point) -> None:
    """Nested."""


SCHEMAS: list[tuple[Any, dict[str, Any]]] = [
    (f_required, {"city": {"type": "string"}, "days": {"type": "integer"}}),
    (f_literal, {"unit": {"type": "string", "enum": ["c", "f"]}}),
    (f_enum, {"color": {"$ref": "#/$defs/Color"}}),
    (f_optional, {"note": {"anyOf": [{"type": "string"}, {"type": "null"}]}}),
    (f_default, {"count": {"type": "integer", "default": 1}}),
    (f_list, {"tags": {"type": "array", "items": {"type": "string"}}}),
    (f_annotated, {"n": {"type": "integer", "minimum": 1, "maximum": 10}}),
    (f_nested, {"point": {"$ref": "#/$defs/Point"}}),
]


@pytest.mark.parametrize(("function", "properties"), SCHEMAS, ids=lambda v: getattr(v, "__name__", ""))
def test_schema_properties_from_signature(function: Any, properties: dict[str, Any]) -> None:
    """Each signature maps to the expected JSON-schema properties, without pydantic titles."""
    assert tool(function).parameters["properties"] == properties


def test_enum_and_nested_models_are_defined_once() -> None:
    """Enums and nested models land in $defs."""
    assert tool(f_enum).parameters["$defs"]["Color"] == {"type": "string", "enum": ["red", "blue"]}
    assert tool(f_nested).parameters["$defs"]["Point"]["required"] == ["x", "y"]


def test_required_lists_only_parameters_without_defaults() -> None:
    """Parameters with defaults are optional in the (non-strict) schema."""

    def f(a: int, b: int = 2, c: str | None = None) -> None:
        """F."""

    assert tool(f).parameters["required"] == ["a"]


def test_google_docstring_gives_descriptions() -> None:
    """The Google style docstring fills the tool and parameter descriptions."""

    def weather(city: str, unit: str = "c") -> None:
        """Current weather for a city.

        Args:
            city: City name, e.g. "Paris".
            unit: Temperature unit.
        """

    t = tool(weather)
    assert t.description == "Current weather for a city."
    props = t.parameters["properties"]
    assert (props["city"]["description"], props["unit"]["description"]) == (
        'City name, e.g. "Paris".',
        "Temperature unit.",
    )


def test_numpy_docstring_gives_descriptions() -> None:
    """NumPy style docstrings are understood too."""

    def area(width: float) -> None:
        """Area of a square.

        Parameters
        ----------
        width : float
            Side length in metres.
        """

    assert tool(area).parameters["properties"]["width"]["description"] == "Side length in metres."


def test_rest_docstring_gives_descriptions() -> None:
    """reST (Sphinx) style docstrings are understood too."""

    def area(width: float) -> None:
        """Area of a square.

        :param width: Side length in metres.
        """

    assert tool(area).parameters["properties"]["width"]["description"] == "Side length in metres."


def test_decorator_options_override_name_and_description() -> None:
    """@tool(name=..., description=...) wins over the function's own."""

    @tool(name="lookup_city", description="Find a city.", timeout=3.0)
    def f(q: str) -> str:
        """Ignored."""
        return q

    assert (f.name, f.description, f.timeout) == ("lookup_city", "Find a city.", 3.0)
    assert f.wire()["name"] == "lookup_city"


def test_tool_stays_callable_like_the_function() -> None:
    """A Tool calls through to the function, so it stays unit-testable."""

    @tool
    def add(a: int, b: int) -> int:
        """Add."""
        return a + b

    assert add(2, b=3) == 5


def test_context_parameter_is_excluded_from_schema() -> None:
    """A ToolContext parameter is injected, not part of the schema."""

    @tool
    def f(ctx: ToolContext[None], q: str) -> str:
        """F."""
        return q

    assert (list(f.parameters["properties"]), f.context_param) == (["q"], "ctx")


# --- strict mode ---------------------------------------------------------------------------


def test_default_is_strict_when_all_parameters_are_required() -> None:
    """Strict by default where it changes nothing: every parameter required, no free-form values."""
    assert tool(f_required).wire()["strict"] is True


def test_default_is_not_strict_when_a_parameter_is_optional() -> None:
    """Optional parameters would become nullable in strict mode, so the default is non-strict."""
    wire = tool(f_default).wire()
    assert (wire["strict"], wire["parameters"].get("required", [])) == (False, [])


def test_strict_true_makes_optional_parameters_nullable_and_required() -> None:
    """strict=True: all properties required, optional ones nullable, no defaults, no extras."""

    def f(q: str, limit: int = 5) -> None:
        """F."""

    params = tool(f, strict=True).parameters
    assert params["required"] == ["q", "limit"]
    assert params["additionalProperties"] is False
    assert params["properties"]["limit"] == {"anyOf": [{"type": "integer"}, {"type": "null"}]}


def test_strict_null_means_use_the_default() -> None:
    """In strict mode the model sends null for an omitted optional parameter: the default applies."""

    def f(q: str, limit: int = 5) -> None:
        """F."""

    assert tool(f, strict=True).validate('{"q": "x", "limit": null}') == {"q": "x", "limit": 5}


def test_strict_null_inside_nested_model_uses_the_default() -> None:
    """Nulls for optional fields of nested models are dropped too."""

    def f(flt: Filter) -> None:
        """F."""

    args = tool(f, strict=True).validate('{"flt": {"field": "a", "limit": null}}')
    assert args["flt"] == Filter(field="a", limit=10)


def test_strict_keeps_null_for_parameters_that_accept_none() -> None:
    """A parameter typed ``X | None`` keeps an explicit null."""

    def f(note: str | None = "x") -> None:
        """F."""

    assert tool(f, strict=True).validate('{"note": null}') == {"note": None}


@pytest.mark.parametrize(
    "annotation",
    [dict[str, int], Any],
    ids=["free-form dict", "Any"],
)
def test_strict_is_refused_for_inexpressible_types(annotation: Any) -> None:
    """strict=True with a type strict mode cannot express is a clear definition error."""

    def f(value: Any) -> None:
        """F."""

    f.__annotations__["value"] = annotation
    with pytest.raises(ToolDefinitionError, match="cannot be strict"):
        tool(f, strict=True)


def test_inexpressible_types_default_to_non_strict() -> None:
    """Without strict=True such a tool is simply non-strict."""

    def f(value: dict[str, int]) -> None:
        """F."""

    assert tool(f).strict is False


# --- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ("{not json", "arguments are not valid JSON"),
        ("[1, 2]", "arguments must be a JSON object"),
        ('{"city": "x"}', "days: Field required"),
        ('{"city": "x", "days": "many"}', "days: Input should be a valid integer"),
        ('{"city": "x", "days": 1, "extra": 1}', "extra: Extra inputs are not permitted"),
        ('{"city": "x", "days": NaN}', "NaN is not a JSON number"),
    ],
)
def test_bad_arguments_are_described_for_the_model(arguments: str, message: str) -> None:
    """Broken JSON and schema violations raise ArgumentsError naming the location and problem."""
    with pytest.raises(ArgumentsError, match=message):
        tool(f_required).validate(arguments)


def test_non_finite_numbers_are_refused() -> None:
    """1e400 would parse as infinity in Python; it is refused while parsing, for every tool."""

    def scale(factor: float) -> None:
        """Scale."""

    with pytest.raises(ArgumentsError, match="1e400 is not a finite number"):
        tool(scale).validate('{"factor": 1e400}')


def test_parameterless_tool_is_strict() -> None:
    """A tool without parameters loses nothing in strict mode."""

    def now() -> None:
        """Now."""

    assert tool(now).strict is True


def test_empty_arguments_mean_no_arguments() -> None:
    """Some models send "" for a tool without parameters."""

    def now() -> None:
        """Now."""

    assert tool(now).validate("") == {}


def test_validated_arguments_are_converted_to_python_types() -> None:
    """Enums, nested models and constrained ints arrive as Python values."""
    assert tool(f_enum).validate('{"color": "red"}') == {"color": Color.RED}
    assert tool(f_nested).validate('{"point": {"x": 1, "y": 2}}') == {"point": Point(x=1, y=2)}


@pytest.mark.parametrize(
    ("signature", "message"),
    [
        ("def f(*args: int) -> None: ...", "keyword"),
        ("def f(**kw: int) -> None: ...", "keyword"),
        ("def f(x) -> None: ...", "no type hint"),
    ],
)
def test_unusable_signatures_are_refused(signature: str, message: str) -> None:
    """*args, **kwargs and missing hints cannot be described to a model."""
    namespace: dict[str, Any] = {}
    exec(signature, namespace)  # test-only: builds a function from a fixed literal
    with pytest.raises(ToolDefinitionError, match=message):
        tool(namespace["f"])


@pytest.mark.parametrize(
    "name",
    [
        *("has space", "", "météo", "工具", "x²", "\uff41\uff42", "a.b", "a/b", "tab\t", "end\n"),
        *("\ud800", "\x00", "x" * 65),
    ],
    ids=repr,
)
def test_invalid_tool_name_is_refused(name: str) -> None:
    """Names must match the API's ^[a-zA-Z0-9_-]{1,64}$ exactly (ASCII only, not str.isalnum)."""
    with pytest.raises(ToolDefinitionError, match="must match"):
        tool(f_required, name=name)


@pytest.mark.parametrize("name", ["a", "get_weather", "get-weather", "A1_b-2", "x" * 64])
def test_valid_tool_names_are_accepted(name: str) -> None:
    """Every name the API accepts is accepted as is."""
    assert tool(f_required, name=name).name == name


def test_function_name_that_the_api_refuses_is_refused() -> None:
    """A function whose own name does not fit (a lambda) needs an explicit name."""
    with pytest.raises(ToolDefinitionError, match="must match"):
        tool(lambda: None)


# --- explicit JSON schema (dynamic tools) ------------------------------------------------------

DICE_SCHEMA = {
    "type": "object",
    "properties": {"sides": {"type": "integer", "minimum": 2}, "times": {"type": "integer"}},
    "required": ["sides"],
    "additionalProperties": False,
}


def roll(**kwargs: Any) -> dict[str, Any]:
    return kwargs


def test_explicit_schema_is_sent_as_given() -> None:
    """tool(fn, parameters=...) sends the schema untouched, non-strict unless already strict."""
    dice = tool(roll, name="dice", description="Roll dice.", parameters=DICE_SCHEMA)
    assert dice.wire() == {
        "type": "function",
        "name": "dice",
        "description": "Roll dice.",
        "parameters": DICE_SCHEMA,
        "strict": False,
    }


def test_explicit_schema_validates_arguments() -> None:
    """Arguments are checked against the explicit schema before the call."""
    dice = tool(roll, name="dice", description="Roll dice.", parameters=DICE_SCHEMA)
    assert dice.validate('{"sides": 6}') == {"sides": 6}
    with pytest.raises(ArgumentsError, match="sides: 1 is less than the minimum of 2"):
        dice.validate('{"sides": 1}')


def test_explicit_strict_schema_stays_strict() -> None:
    """An already strict-compatible schema is strict by default."""
    schema = {**DICE_SCHEMA, "required": ["sides", "times"]}
    assert tool(roll, name="dice", parameters=schema).strict is True


def test_invalid_explicit_schema_is_refused() -> None:
    """A schema that is not valid JSON schema is a definition error."""
    with pytest.raises(ToolDefinitionError):
        tool(roll, name="dice", parameters={"type": "object", "properties": {"a": {"type": 3}}})


# --- registry --------------------------------------------------------------------------------


def test_registry_collects_tools_functions_and_registries() -> None:
    """A registry takes tools, plain functions and other registries, keeping order."""
    inner = ToolRegistry([tool(f_literal)])
    registry = ToolRegistry([tool(f_required), f_enum, inner])
    assert registry.names == ["f_required", "f_enum", "f_literal"]
    assert isinstance(registry.get("f_enum"), Tool)
    assert "f_literal" in registry
    assert len(registry) == 3


def test_registries_merge_and_refuse_name_clashes() -> None:
    """merge / | combine registries; two different tools with one name are refused."""
    a, b = ToolRegistry([f_required]), ToolRegistry([f_literal])
    assert (a | b).names == ["f_required", "f_literal"]
    with pytest.raises(ToolDefinitionError, match="f_required"):
        a.merge(ToolRegistry([tool(f_enum, name="f_required")]))
