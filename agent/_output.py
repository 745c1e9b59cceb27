"""``output_type``: a type's JSON schema for ``text.format``, and the final answer parsed into it.

The schema goes out strict when OpenAI's strict mode can express it (the same conversion as tool
parameters, :func:`agent._schema.to_strict`): the model then cannot write anything else. An
optional field becomes a required, nullable one there, so a ``null`` the model writes for it is
dropped before validation and the field's default applies. A type strict mode cannot express
(a free-form ``dict``, ``Any``) goes out with ``strict: false`` and is only validated here.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, PydanticUserError, TypeAdapter, ValidationError
from pydantic_core import to_jsonable_python
from typing_extensions import is_typeddict  # knows typing's and typing_extensions' TypedDicts

from agent._errors import ToolDefinitionError, UsageError
from agent._result import JSONObject
from agent._schema import drop_null_defaults, model_schema, to_strict
from agent._wire import JSONRefused, load_json

__all__ = ["OutputSpec", "Parsed", "output_from_json", "output_spec", "output_to_json"]

_MAX_ERRORS = 10
"""Validation errors told to the model at most (a wholly wrong answer can have hundreds)."""
_NOT_A_NAME = re.compile(r"[^a-zA-Z0-9_-]")


@dataclass(frozen=True, slots=True)
class Parsed:
    """The final answer as ``output_type``, or what was wrong with it (``errors`` not empty)."""

    value: Any = None
    errors: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class OutputSpec:
    """One ``output_type``: its validator, the ``text.format`` sent, and how answers are read."""

    type: Any
    adapter: TypeAdapter[Any]
    name: str
    schema: JSONObject
    """The schema as sent (strict form when ``strict``)."""
    original: JSONObject
    """The tidy, non-strict schema: tells a strict ``null`` from a real one."""
    strict: bool

    def text_format(self) -> JSONObject:
        """The request's ``text`` field."""
        return {
            "format": {"type": "json_schema", "name": self.name, "schema": self.schema, "strict": self.strict}
        }

    def parse(self, text: str, *, max_depth: int) -> Parsed:
        """``text`` validated as this type, or the problems worded for the model."""
        try:
            data = load_json(text, max_depth=max_depth)
        except JSONRefused as exc:
            return Parsed(errors=(f"the answer is not JSON: {exc}",))
        if self.strict:
            data = drop_null_defaults(data, self.original)
        try:
            return Parsed(value=self.adapter.validate_python(data))
        except ValidationError as exc:
            return Parsed(errors=_problems(exc))

    def feedback(self, errors: tuple[str, ...]) -> JSONObject:
        """The input item that tells the model what was wrong and asks again."""
        problems = "\n".join(f"- {error}" for error in errors)
        text = (
            f"Your answer could not be used: it must be one JSON object that fits the "
            f"{self.name} schema given in text.format. Problems:\n{problems}\n"
            "Answer again with the corrected JSON object only."
        )
        return {"role": "user", "content": text}


def output_spec(output_type: Any) -> OutputSpec:
    """The spec of ``output_type`` (cached per type); :class:`UsageError` if it cannot be one."""
    try:
        return _cached_spec(output_type)
    except TypeError:  # unhashable: not a class at all
        raise UsageError(_unsupported(output_type)) from None


@functools.lru_cache(maxsize=256)  # bounded: types made at run time would pile up
def _cached_spec(output_type: Any) -> OutputSpec:
    if not _supported(output_type):
        raise UsageError(_unsupported(output_type))
    try:
        adapter: TypeAdapter[Any] = TypeAdapter(output_type)
        schema = model_schema(adapter.json_schema())
    except PydanticUserError as exc:  # no schema, or (Python < 3.12) a typing.TypedDict
        raise UsageError(f"output_type {output_type!r} cannot be used: {exc}") from None
    try:
        strict_schema, _ = to_strict(schema)
    except ToolDefinitionError:
        strict_schema = None
    return OutputSpec(
        type=output_type,
        adapter=adapter,
        name=_NOT_A_NAME.sub("_", output_type.__name__)[:64],
        schema=strict_schema or schema,
        original=schema,
        strict=strict_schema is not None,
    )


def _supported(output_type: Any) -> bool:
    if not isinstance(output_type, type):
        return False
    return (
        issubclass(output_type, BaseModel)
        or dataclasses.is_dataclass(output_type)
        or is_typeddict(output_type)
    )


def _unsupported(output_type: Any) -> str:
    return f"output_type must be a pydantic model, a dataclass or a TypedDict class, got {output_type!r}"


def _problems(exc: ValidationError) -> tuple[str, ...]:
    errors = exc.errors(include_url=False, include_input=False)
    problems = [f"{'.'.join(map(str, e['loc'])) or '(the whole answer)'}: {e['msg']}" for e in errors]
    if len(problems) > _MAX_ERRORS:
        problems[_MAX_ERRORS:] = [f"... and {len(problems) - _MAX_ERRORS} more"]
    return tuple(problems)


def output_to_json(value: Any) -> Any:
    """A parsed output as plain JSON data (what a durable run stores)."""
    return to_jsonable_python(value)


def output_from_json(data: Any, output_type: Any) -> Any:
    """The stored JSON back as ``output_type`` (``None`` type or data: the JSON as it is)."""
    if data is None or output_type is None:
        return data
    return output_spec(output_type).adapter.validate_python(data)
