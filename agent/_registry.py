"""``ToolRegistry``: a named set of tools, what an agent offers the model."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeAlias

from agent._errors import ToolDefinitionError
from agent._result import JSONObject
from agent._sources import ToolSource
from agent._tools import Tool, tool

__all__ = ["ToolLike", "ToolRegistry"]

ToolLike: TypeAlias = "Tool[..., Any] | Callable[..., Any] | ToolRegistry | ToolSource"


class ToolRegistry:
    """A named set of tools, built from tools, plain functions, other registries and tool sources.

    A :class:`ToolSource` (an MCP server) is kept as it is: its tools are listed when a run
    starts, and iterating, ``names`` and ``wire()`` show only the registry's own tools.
    """

    def __init__(self, tools: Iterable[ToolLike] = ()) -> None:
        self._tools: dict[str, Tool[..., Any]] = {}
        self._sources: list[ToolSource] = []
        for item in tools:
            self.add(item)

    def add(self, item: ToolLike) -> None:
        """Add a tool, a plain function (made a tool with defaults), a tool source, or everything
        a registry holds."""
        if isinstance(item, ToolRegistry):
            for existing in item:
                self.add(existing)
            for source in item.sources:
                self.add(source)
            return
        if isinstance(item, ToolSource):
            if item not in self._sources:
                self._sources.append(item)
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
    def sources(self) -> list[ToolSource]:
        """The tool sources (MCP servers), in the order they were added."""
        return list(self._sources)

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
        sources = f", sources={[source.name for source in self._sources]}" if self._sources else ""
        return f"ToolRegistry({self.names}{sources})"
