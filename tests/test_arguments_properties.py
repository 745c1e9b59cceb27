"""Property-based: whatever the model writes as a call's arguments, one documented outcome."""

from __future__ import annotations

import json
from typing import Any, get_args

import anyio
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from agent import ArgumentsError, Limits, tool
from agent._result import OutcomeKind
from tests.test_execution_limits import call_of, execute_call, make_scope

ANY_TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=40)
"""Any code points, lone surrogates and control characters included."""

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | ANY_TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(ANY_TEXT, inner, max_size=4),
    max_leaves=30,
)


class Place(BaseModel):
    name: str
    tags: list[str] = []


@tool
def plan(place: Place, days: int, budget: float | None = None, note: str = "") -> str:
    """Plan a trip."""
    return f"{place.name} {days} {budget} {note}"


@tool(
    parameters={"type": "object", "properties": {"n": {"type": "integer", "minimum": 0}}, "required": ["n"]}
)
def counted(**kwargs: Any) -> str:
    """Explicit schema."""
    return json.dumps(kwargs)


def arguments_texts() -> st.SearchStrategy[str]:
    documents = st.dictionaries(ANY_TEXT | st.sampled_from(["place", "days", "budget", "n"]), JSON_VALUES)
    return documents.map(json.dumps) | JSON_VALUES.map(json.dumps) | ANY_TEXT


SMALL = Limits(max_json_depth=4, max_argument_bytes=300)


@settings(max_examples=150, deadline=None)
@given(arguments=arguments_texts())
def test_validate_raises_only_arguments_error(arguments: str) -> None:
    """Tool.validate returns a dict or raises ArgumentsError, for any text and any limits."""
    for validator in (plan, counted):
        try:
            assert isinstance(validator.validate(arguments, SMALL), dict)
        except ArgumentsError as exc:
            str(exc).encode("utf-8", "surrogatepass")


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(["plan", "counted"]) | ANY_TEXT, arguments=arguments_texts())
def test_execute_call_ends_in_one_documented_outcome(name: str, arguments: str) -> None:
    """execute_call returns one record of a documented kind, with an output that can be sent."""

    async def one() -> None:
        record = await execute_call(call_of(name, arguments), make_scope([plan, counted], limits=SMALL))
        assert record.kind in get_args(OutcomeKind)
        record.output.encode("utf-8")  # no lone surrogate reaches the next request
        if record.kind != "ok":
            assert set(json.loads(record.output)["error"]) == {"type", "message"}

    anyio.run(one)
