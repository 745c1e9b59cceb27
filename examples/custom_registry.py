"""A registry mixing builtin tools, a sync tool, a tool with a context parameter, and a dynamic
tool registered from a JSON schema (as a gateway or an MCP server would describe it).

    python examples/custom_registry.py
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Any

import anyio

from agent import Agent, RunResult, ToolContext, ToolRegistry, tool
from agent.localmodel import AutoPolicy, endpoint_or_local
from builtin_tools import math_calculator, random_generator


@tool
def checksum(text: str) -> str:
    """SHA-256 of a text (a sync tool: it runs in a worker thread).

    Args:
        text: The text to hash.
    """
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Shop:
    """The application's own dependencies, handed to tools through their context."""

    name: str
    stock: dict[str, int]


@tool
async def stock_level(ctx: ToolContext[Shop], item: str) -> str:
    """How many of an item the shop has.

    Args:
        item: The item's name, e.g. "apple".
    """
    return f"{ctx.deps.name} has {ctx.deps.stock.get(item, 0)} x {item}"


def roll_dice(sides: int, times: int = 1) -> list[int]:
    """The function behind the dynamic tool: receives the validated arguments as keywords."""
    return [secrets.randbelow(sides) + 1 for _ in range(times)]


DICE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "sides": {"type": "integer", "minimum": 2, "maximum": 100, "description": "Faces per die."},
        "times": {"type": "integer", "minimum": 1, "maximum": 10, "description": "How many dice."},
    },
    "required": ["sides"],
    "additionalProperties": False,
}

dice = tool(roll_dice, name="dice", description="Roll dice.", parameters=DICE_SCHEMA)

registry = ToolRegistry([math_calculator, random_generator, checksum, stock_level, dice])


async def main(base_url: str | None = None, api_key: str | None = None) -> RunResult:
    shop = Shop(name="Corner Shop", stock={"example": 12})
    async with Agent(model="gpt-4.1", tools=registry, base_url=base_url, api_key=api_key) as agent:
        result = await agent.run("Use every tool once.", deps=shop)
    for call in result.tool_calls:
        print(f"{call.kind:>4} {call.name}({call.arguments}) -> {call.output}")
    print(result.output)
    return result


if __name__ == "__main__":
    with endpoint_or_local(AutoPolicy()) as endpoint:
        anyio.run(main, endpoint.base_url, endpoint.api_key)
