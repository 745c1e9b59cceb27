"""``ToolRegistry``: a named set of tools, what an agent offers the model."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeAlias

from agent._errors import ToolDefinitionError
from agent._result import JSONObject
from agent._tools import Tool, tool

__all__ = ["ToolLike", "ToolRegistry"]

ToolLike: TypeAlias = "Tool[..., Any] | Callable[..., Any] | ToolRegistry"


class ToolRegistry:
    """A named set of tools, built from tools, plain functions and other registries."""

    def __init__(self, tools: Iterable[ToolLike] = ()) -> None:
        self._tools: dict[str, Tool[..., Any]] = {}
        for item in tools:
            self.add(item)

    def add(self, item: ToolLike) -> None:
        """Add a tool, a plain function (made a tool with defaults) or every tool of a registry."""
        if isinstance(item, ToolRegistry):
            for existing in item:
                self.add(existing)
            return
        new = item if isinstance(item, Tool) else tool(item)
        if self._tools.get(new.name, new) is not new:
            raise ToolDefinitionError(f"two different tools are named {new.name!r}")
        self._tools[new.name] = new

    def merge(self, other: ToolRegistry) -> ToolRegistry:
        """A new registry with the tools of both (names must not clash)."""
        return ToolRegistry([self, other])

    __or__ = merge

    def get(self, name: str) -> Tool[..., Any] | None:
        """The tool called ``name``, or ``None``."""
        return self._tools.get(name)

    @property
    def names(self) -> list[str]:
        """The tool names, in registration order."""
        return list(self._tools)

    def wire(self) -> list[JSONObject]:
        """The request's ``tools`` list."""
        return [t.wire() for t in self._tools.values()]

    def __iter__(self) -> Iterator[Tool[..., Any]]:
        return iter(self._tools.values())

    def __len__(self) -> int:
        return len(self._tools)

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __repr__(self) -> str:
        return f"ToolRegistry({self.names})"
