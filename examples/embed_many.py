"""One Agent inside an application, serving 100 concurrent runs (an anyio task group).

The agent is built once and shared: its connection pool, tool schemas and limits are
read-only state, so every run costs the same however many are in flight.

    python examples/embed_many.py
"""

from __future__ import annotations

import statistics
import time

import anyio

from agent import Agent, RunResult
from agent.localmodel import demo_script, endpoint_or_local
from builtin_tools import registry

RUNS = 100


async def main(base_url: str | None = None, api_key: str | None = None, runs: int = RUNS) -> list[RunResult]:
    results: list[RunResult] = []
    latencies: list[float] = []

    async def one(agent: Agent, n: int) -> None:
        started = time.perf_counter()
        results.append(await agent.run(f"Request {n}: do the four things at once."))
        latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    async with (
        Agent(model="gpt-4.1", tools=registry, base_url=base_url, api_key=api_key) as agent,
        anyio.create_task_group() as tg,
    ):
        for n in range(runs):
            tg.start_soon(one, agent, n)
    wall = time.perf_counter() - started
    calls = sum(len(r.tool_calls) for r in results)
    print(
        f"{len(results)} runs, {calls} tool calls in {wall:.2f} s; "
        f"median run {statistics.median(latencies) * 1000:.0f} ms, "
        f"tokens {sum(r.usage.total_tokens for r in results)}"
    )
    return results


if __name__ == "__main__":
    with endpoint_or_local(demo_script()) as endpoint:
        anyio.run(main, endpoint.base_url, endpoint.api_key)
