"""Quick start: write a tool, hand it to an Agent, run it.

Runs on the embedded local model server (a deterministic stand-in, not AI) unless
OPENAI_BASE_URL / OPENAI_API_KEY are set, in which case it talks to that endpoint:

    python examples/quickstart.py
"""

from __future__ import annotations

from typing import Literal

import anyio

from agent import Agent, RunResult, tool
from agent.localmodel import AutoPolicy, endpoint_or_local


@tool
async def get_weather(city: str, unit: Literal["c", "f"] = "c") -> dict[str, str | int]:
    """Current weather for a city.

    Args:
        city: City name, e.g. "Paris".
        unit: Temperature unit.
    """
    celsius = 18
    return {"city": city, "temperature": celsius if unit == "c" else celsius * 9 // 5 + 32, "unit": unit}


async def main(base_url: str | None = None, api_key: str | None = None) -> RunResult:
    """One run; prints the tool call and the answer."""
    async with Agent(
        model="gpt-4.1",
        tools=[get_weather],
        instructions="Be brief.",
        base_url=base_url,
        api_key=api_key,
    ) as agent:
        result = await agent.run("Weather in Paris?")
    for call in result.tool_calls:
        print(f"{call.name}({call.arguments}) -> {call.output}")
    print(result.output)
    return result


if __name__ == "__main__":
    with endpoint_or_local(AutoPolicy()) as endpoint:
        anyio.run(main, endpoint.base_url, endpoint.api_key)
