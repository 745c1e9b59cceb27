"""Reading a prompt the way the local model does: which tools it names, which arguments it holds.

Plain word matching, not understanding. A tool is named by its name, by a word of its name, or by a
word of a topic its name (else its description's first sentence) belongs to: "calculator",
"calculate" or an arithmetic expression name a math tool, "time" or "clock" a time tool, "random" or
"dice" a random tool, "system" a system-information tool. Arguments found are JSON values taken from
the text (numbers, IANA time zones, quoted strings, enum values); nothing is ever evaluated.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import jsonschema
from referencing.exceptions import Unresolvable

from ._request import Item
from ._schema_values import kind_of, resolve

__all__ = ["found_arguments", "keep_valid", "named_tools", "stem", "words"]

_WORD = re.compile(r"[A-Za-z]+|\d+")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_SUFFIXES = (
    *("ations", "ation", "ators", "ator", "ings", "ing", "ate"),
    *("ers", "er", "ors", "or", "es", "s", "ed", "e"),
)
_GENERIC = frozenset(
    [
        "a",
        "an",
        "and",
        "api",
        "by",
        "check",
        "create",
        "current",
        "data",
        "do",
        "fetch",
        "find",
        "for",
        "from",
        "func",
        "function",
        "generate",
        "generator",
        "get",
        "in",
        "info",
        "list",
        "lookup",
        "make",
        "of",
        "on",
        "or",
        "query",
        "result",
        "run",
        "set",
        "the",
        "to",
        "tool",
        "tools",
        "value",
    ]
)
_TOPICS = (
    "calculator calculate calculation compute math maths arithmetic equation expression multiply divide "
    "subtract",
    "time clock date timezone hour today timestamp",
    "random dice roll lottery shuffle",
    "system os machine memory cpu platform hardware",
)
_MATH_TOPIC = 0
_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?![\w.])")
_RANGE = re.compile(r"\b(?:between|from)\s+(-?\d+(?:\.\d+)?)\s+(?:and|to)\s+(-?\d+(?:\.\d+)?)", re.IGNORECASE)
_ZONE = re.compile(r"\b(?:[A-Z][A-Za-z_+-]*/){1,2}[A-Za-z0-9_+-]+|\b(?:UTC|GMT)\b")
_QUOTED = re.compile(r"\"([^\"]+)\"|“([^”]+)”|(?<!\w)'([^']+)'(?!\w)")
_LOWER = frozenset({"min", "minimum", "low", "lower", "start", "from", "lo", "floor", "begin", "least"})
_UPPER = frozenset({"max", "maximum", "high", "upper", "end", "to", "hi", "ceiling", "stop", "most"})


def words(text: str) -> list[str]:
    """The lower-case words of `text`, camelCase and snake_case split."""
    return [word.lower() for word in _WORD.findall(_CAMEL.sub(" ", text))]


def stem(word: str) -> str:
    """A crude stem, enough to match "calculator" with "calculate" and "times" with "time"."""
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 4:
            return word[: -len(suffix)]
    return word


_TOPIC_STEMS = tuple(frozenset(stem(word) for word in topic.split()) for topic in _TOPICS)


def named_tools(prompt: str, tools: Sequence[Item], *, arithmetic: bool) -> list[Item]:
    """The tools `prompt` names, in offered order; `arithmetic`: it holds an arithmetic expression."""
    said = {stem(word) for word in words(prompt)}
    topics = {index for index, stems in enumerate(_TOPIC_STEMS) if said & stems}
    if arithmetic:
        topics.add(_MATH_TOPIC)
    lowered = prompt.lower()
    return [
        tool
        for tool in tools
        if _says_name(lowered, str(tool.get("name", "")).lower())
        or said & _name_stems(tool)
        or topics & _tool_topics(tool)
    ]


def found_arguments(tool: Item, prompt: str, *, skip: str = "") -> Iterator[tuple[str, Any]]:
    """(property, value) pairs for `tool` found in `prompt`, best guesses first; `skip`: text to ignore.

    Candidates only: the caller keeps those that leave the arguments valid against the schema.
    """
    schema = tool.get("parameters") or {}
    properties = schema.get("properties")
    if not isinstance(properties, Mapping):
        return
    text = prompt.replace(skip, " ") if skip else prompt
    kinds = {name: kind_of(prop, schema) for name, prop in properties.items() if isinstance(prop, Mapping)}
    yield from _enum_values(properties, schema, text)
    yield from _zones(properties, kinds, text)
    yield from _quoted(kinds, text)
    yield from _numbers([name for name, kind in kinds.items() if kind in ("integer", "number")], text)


def keep_valid(
    schema: Mapping[str, Any], base: dict[str, Any], candidates: Iterable[tuple[str, Any]]
) -> dict[str, Any]:
    """`base` with each candidate set in turn, kept when it adds no schema error (first one wins)."""
    validator = jsonschema.Draft202012Validator(schema)
    result, taken = dict(base), set()
    try:
        errors = len(list(validator.iter_errors(result)))
        for name, value in candidates:
            if name in taken:
                continue
            trial = {**result, name: value}
            found = list(validator.iter_errors(trial))
            if len(found) <= errors and not any(list(error.path)[:1] == [name] for error in found):
                result, errors = trial, len(found)
                taken.add(name)
    except (jsonschema.SchemaError, Unresolvable, re.error):
        return dict(base)
    return result


def _says_name(text: str, name: str) -> bool:
    """Whether `name` stands in `text` as a whole word (`add` is not in "padding")."""
    return bool(name) and re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text) is not None


def _name_stems(tool: Item) -> set[str]:
    return {stem(word) for word in words(str(tool.get("name", ""))) if word not in _GENERIC}


def _tool_topics(tool: Item) -> set[int]:
    """The topics of a tool's name words, else of its description's first sentence."""
    own = _name_stems(tool)
    topics = {index for index, stems in enumerate(_TOPIC_STEMS) if own & stems}
    if topics:
        return topics
    summary = str(tool.get("description") or "").split(".")[0]
    said = {stem(word) for word in words(summary)}
    return {index for index, stems in enumerate(_TOPIC_STEMS) if said & stems}


def _enum_values(
    properties: Mapping[str, Any], root: Mapping[str, Any], text: str
) -> Iterator[tuple[str, Any]]:
    said = {stem(word) for word in words(text)}
    for name, prop in properties.items():
        values = resolve(prop, root).get("enum") if isinstance(prop, Mapping) else None
        for value in values if isinstance(values, list) else []:
            if isinstance(value, str) and len(value) >= 3 and stem(value.lower()) in said:
                yield name, value


def _zones(properties: Mapping[str, Any], kinds: Mapping[str, str], text: str) -> Iterator[tuple[str, Any]]:
    zones = [zone for zone in _ZONE.findall(text) if _is_zone(zone)]
    for name, prop in properties.items():
        about = f"{name} {prop.get('description', '') if isinstance(prop, Mapping) else ''}".lower()
        if kinds.get(name) == "string" and ("zone" in about or "iana" in about or words(name) == ["tz"]):
            for zone in zones:
                yield name, zone


def _is_zone(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def _quoted(kinds: Mapping[str, str], text: str) -> Iterator[tuple[str, Any]]:
    quoted = ["".join(groups) for groups in _QUOTED.findall(text)]
    strings = [name for name, kind in kinds.items() if kind == "string"]
    yield from zip(strings, quoted, strict=False)


def _numbers(names: list[str], text: str) -> Iterator[tuple[str, Any]]:
    """Bounds from "between A and B", numbers right after a property's name, then the rest in order."""
    numbers = [_number(token) for token in _NUMBER.findall(text)]
    given: list[tuple[str, Any]] = []
    bounds = _RANGE.search(text)
    if bounds:
        low, high = _number(bounds.group(1)), _number(bounds.group(2))
        for name in names:
            parts = set(words(name))
            if parts & _LOWER:
                given.append((name, low))
            elif parts & _UPPER:
                given.append((name, high))
        numbers = [n for n in numbers if n not in (low, high)]
    for name in names:
        after = re.search(rf"\b{re.escape(name)}\b\s*(?:=|:|of|is)?\s*(-?\d+(?:\.\d+)?)", text, re.IGNORECASE)
        if after:
            given.append((name, _number(after.group(1))))
            numbers = [n for n in numbers if n != _number(after.group(1))]
    rest = [name for name in names if name not in {name for name, _ in given}]
    yield from given
    yield from zip(rest, numbers, strict=False)


def _number(token: str) -> int | float:
    return float(token) if "." in token else int(token)
