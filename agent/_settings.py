"""``ModelSettings``: the sampling and response options a request carries, checked once."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

from agent._errors import UsageError
from agent._result import JSONObject

__all__ = ["ModelSettings"]

ReasoningEffort = Literal["none", "minimal", "low", "medium", "high", "xhigh"]
ReasoningSummary = Literal["auto", "concise", "detailed"]
Truncation = Literal["auto", "disabled"]
ServiceTier = Literal["auto", "default", "flex", "scale", "priority"]

_CHOICES: dict[str, tuple[str, ...]] = {
    "reasoning_effort": get_args(ReasoningEffort),
    "reasoning_summary": get_args(ReasoningSummary),
    "truncation": get_args(Truncation),
    "service_tier": get_args(ServiceTier),
}


@dataclass(frozen=True, slots=True)
class ModelSettings:
    """Model options sent with every request of a run; ``None`` (the default) leaves one out.

    Give them to ``Agent(model_settings=...)`` and, per run, to ``run(model_settings=...)``: a
    run's field that is not ``None`` replaces the agent's. ``extra_body`` wins over both, and
    carries any option not named here. Values are checked when the settings are made
    (:class:`UsageError`), not by a 400 from the server mid-run.

    Args:
        temperature: Sampling temperature, 0 to 2.
        top_p: Nucleus sampling mass, 0 to 1.
        max_output_tokens: Most tokens a response may write, reasoning included (>= 1; past it
            the run ends with ``status="incomplete"``).
        reasoning_effort: Sent as ``reasoning.effort`` (reasoning models only).
        reasoning_summary: Sent as ``reasoning.summary``: ask for a summary of the reasoning.
        truncation: ``"auto"`` lets the server drop old input that no longer fits the context.
        store: Whether the server keeps the responses (``False``: reasoning is replayed encrypted).
        include: Extra output data to return, e.g. ``["reasoning.encrypted_content"]``.
        service_tier: The processing tier, e.g. ``"flex"`` or ``"priority"``.
    """

    temperature: float | None = None
    top_p: float | None = None
    max_output_tokens: int | None = None
    reasoning_effort: ReasoningEffort | None = None
    reasoning_summary: ReasoningSummary | None = None
    truncation: Truncation | None = None
    store: bool | None = None
    include: tuple[str, ...] | None = None
    service_tier: ServiceTier | None = None

    def __post_init__(self) -> None:
        if self.include is not None:
            # A tuple whatever sequence was given: the settings stay frozen and hashable.
            object.__setattr__(self, "include", _strings("include", self.include))
        _check_range("temperature", self.temperature, 0.0, 2.0)
        _check_range("top_p", self.top_p, 0.0, 1.0)
        _check_tokens(self.max_output_tokens)
        for name, allowed in _CHOICES.items():
            _check_choice(name, getattr(self, name), allowed)
        if self.store is not None and not isinstance(self.store, bool):
            raise UsageError(f"store must be True, False or None, got {self.store!r}")

    def merged(self, override: ModelSettings | None) -> ModelSettings:
        """These settings with every field ``override`` sets (not ``None``) replaced."""
        if override is None:
            return self
        changes = {
            f.name: value
            for f in dataclasses.fields(override)
            if (value := getattr(override, f.name)) is not None
        }
        return dataclasses.replace(self, **changes) if changes else self

    def to_body(self) -> JSONObject:
        """The request fields these settings add (``reasoning`` as one object)."""
        body: JSONObject = {}
        for name in ("temperature", "top_p", "max_output_tokens", "truncation", "store", "service_tier"):
            value = getattr(self, name)
            if value is not None:
                body[name] = value
        if self.include is not None:
            body["include"] = list(self.include)
        reasoning = {"effort": self.reasoning_effort, "summary": self.reasoning_summary}
        if any(v is not None for v in reasoning.values()):
            body["reasoning"] = {k: v for k, v in reasoning.items() if v is not None}
        return body


def _check_range(name: str, value: float | None, low: float, high: float) -> None:
    if value is None:
        return
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if not number or not math.isfinite(value) or not low <= value <= high:
        raise UsageError(f"{name} must be a number from {low:g} to {high:g}, got {value!r}")


def _check_tokens(value: int | None) -> None:
    if value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise UsageError(f"max_output_tokens must be an integer >= 1, got {value!r}")


def _check_choice(name: str, value: object, allowed: tuple[str, ...]) -> None:
    if value is not None and value not in allowed:
        shown = ", ".join(repr(choice) for choice in allowed)
        raise UsageError(f"{name} must be one of {shown} (or None), got {value!r}")


def _strings(name: str, values: Sequence[str]) -> tuple[str, ...]:
    if isinstance(values, str) or not all(isinstance(value, str) for value in values):
        raise UsageError(f"{name} must be a list of strings, got {values!r}")
    return tuple(values)


NO_SETTINGS = ModelSettings()
"""The default: nothing sent beyond what the loop needs."""
