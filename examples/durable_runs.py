"""Durable runs: the same agent and tools, each model request and tool call checkpointed in a
database (SQLite here; PostgreSQL for many workers), so a run survives a crash of its process.

    python examples/durable_runs.py            # needs: pip install 'agent-runtime[dbos]'

Run it twice: the second time the run id is known, so its stored result comes back without a
single request or tool call. Kill it (Ctrl-C) while it runs and start it again: it resumes.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from agent import Agent, RunResult, ToolContext, tool
from agent.durable.dbos import DBOSAgent
from agent.localmodel import AutoPolicy, endpoint_or_local


@tool
async def charge_card(ctx: ToolContext[None], order: str, cents: int) -> str:
    """Charge the customer's card for an order.

    Args:
        order: The order id.
        cents: The amount, in cents.
    """
    # A payment API would dedupe on this key: a call in flight at a crash runs again with it.
    return f"charged {cents} cents for {order} (idempotency key {ctx.idempotency_key})"


async def main(database: Path, base_url: str | None = None, api_key: str | None = None) -> RunResult:
    """Run order-42 durably (or return its stored result); print the calls and the answer."""
    async with (
        Agent(model="gpt-4.1", tools=[charge_card], base_url=base_url, api_key=api_key) as agent,
        DBOSAgent(agent, database_url=f"sqlite:///{database}") as durable,
    ):
        result = await durable.run("Charge order 42.", run_id="order-42")
    for call in result.tool_calls:
        print(f"{call.name}({call.arguments}) -> {call.output}")
    print(result.output)
    return result


if __name__ == "__main__":
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "runs.sqlite")
    with endpoint_or_local(AutoPolicy()) as endpoint:
        asyncio.run(main(path, endpoint.base_url, endpoint.api_key))
