"""``ToolSource``: tools known only at run time (an MCP server's), and how a run sees them.

A registry's own tools are fixed when it is made; a source's tools are asked for when a run
starts (and cached by the source). Each run then works on one snapshot, a plain
:class:`ToolRegistry`, so nothing in the loop or the engines knows sources exist.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from agent._errors import ToolDefinitionError

if TYPE_CHECKING:
    from agent._registry import ToolRegistry
    from agent._tools import Tool

__all__ = ["Snapshots", "ToolSource", "close_unheld"]


class ToolSource(abc.ABC):
    """A set of tools listed at run time; what ``agent.mcp.mcp_stdio``/``mcp_http`` return.

    Put one in ``Agent(tools=[...])`` or a :class:`ToolRegistry`. ``async with source:`` holds
    it open for the block; otherwise it opens on first use and the agent's ``aclose()`` (or
    ``async with agent``) closes it.
    """

    name: str
    """Shown in errors and logs (which server a tool came from)."""

    def __init__(self) -> None:
        self._holders = 0

    @abc.abstractmethod
    async def list_tools(self) -> Sequence[Tool[..., Any]]:
        """The tools now, connecting if needed.

        Returns the *same* sequence object while the tools are unchanged: runs reuse their
        snapshot by identity, so a source must not build a new list per call.
        """

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Close the connection (idempotent); a later use opens a new one."""

    @property
    def held(self) -> bool:
        """Whether an ``async with source:`` holds it open (agents then leave it open)."""
        return self._holders > 0

    async def __aenter__(self) -> Self:
        await self.list_tools()
        self._holders += 1
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._holders -= 1
        if self._holders == 0:
            await self.aclose()


class Snapshots:
    """One registry per set of source listings: a run's tools, rebuilt only when a source's change."""

    def __init__(self, base: ToolRegistry, sources: Sequence[ToolSource]) -> None:
        self._base = base
        self._sources = tuple(sources)
        self._listings: tuple[Sequence[Tool[..., Any]], ...] = ()
        self._snapshot = base

    async def current(self) -> ToolRegistry:
        """The base tools plus every source's current tools; a name clash is a ToolDefinitionError."""
        listings = tuple([await source.list_tools() for source in self._sources])
        if len(listings) != len(self._listings) or any(
            new is not old for new, old in zip(listings, self._listings, strict=True)
        ):
            self._snapshot = _merged(self._base, self._sources, listings)
            self._listings = listings
        return self._snapshot


def _merged(
    base: ToolRegistry, sources: Sequence[ToolSource], listings: Sequence[Sequence[Tool[..., Any]]]
) -> ToolRegistry:
    from agent._registry import ToolRegistry

    owners = dict.fromkeys(base.names, "the agent's own tools")
    merged = ToolRegistry(list(base))  # its own tools; the sources' come next
    for source, tools in zip(sources, listings, strict=True):
        for each in tools:
            if each.name in owners:
                raise ToolDefinitionError(
                    f"two tools are named {each.name!r}: one from {source.name}, one from {owners[each.name]}"
                    " (give a source a prefix, e.g. mcp_stdio(..., prefix='fs'))"
                )
            owners[each.name] = source.name
            merged.add(each)
    return merged


async def close_unheld(sources: Sequence[ToolSource]) -> None:
    """Close the sources nobody holds with ``async with`` (what an agent's ``aclose`` does)."""
    for source in sources:
        if not source.held:
            await source.aclose()
