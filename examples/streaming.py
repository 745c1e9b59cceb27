"""Watch a run as it happens: run_stream, eager tool starts, progress from a long tool.

The local model streams its calls 0.3 s apart; each tool starts as soon as its call is complete,
while the rest of the response is still arriving (timestamps are seconds since the start).

    python examples/streaming.py
"""

from __future__ import annotations

import time

import anyio

from agent import (
    Agent,
    RunResult,
    TextDelta,
    ToolCallFinished,
    ToolCallStarted,
    ToolContext,
    ToolProgress,
    TurnFinished,
    tool,
)
from agent.localmodel import AutoPolicy, endpoint_or_local


@tool
async def crawl(ctx: ToolContext[None], site: str = "example.org") -> str:
    """Crawl a site, reporting progress page by page.

    Args:
        site: The site to crawl.
    """
    for page in range(1, 4):
        await anyio.sleep(0.1)
        await ctx.report({"site": site, "pages": page})
    return f"{site}: 3 pages"


@tool
def checksum(text: str = "hello") -> int:
    """A slow sync tool: runs in a worker thread.

    Args:
        text: The text to sum.
    """
    time.sleep(0.2)
    return sum(text.encode())


async def main(base_url: str | None = None, api_key: str | None = None) -> list[str]:
    """One streamed run; returns (and prints) its timeline."""
    lines: list[str] = []
    started = time.perf_counter()
    async with (
        Agent("gpt-4.1", tools=[crawl, checksum], base_url=base_url, api_key=api_key) as agent,
        agent.run_stream("Crawl and checksum.") as events,
    ):
        async for event in events:
            at = f"{time.perf_counter() - started:5.2f}s"
            match event:
                case ToolCallStarted(name=name, arguments=arguments):
                    lines.append(f"{at} start  {name}({arguments})")
                case ToolProgress(name=name, data=data):
                    lines.append(f"{at} progress {name}: {data}")
                case ToolCallFinished(record=record):
                    lines.append(f"{at} done   {record.name} -> {record.output} ({record.kind})")
                case TurnFinished(turn=turn, usage=usage):
                    lines.append(f"{at} turn {turn} finished ({usage.total_tokens} tokens)")
                case TextDelta(delta=delta):
                    print(delta, end="", flush=True)
    result: RunResult | None = events.result
    print("\n" + "\n".join(lines))
    print(f"answer: {result.output if result else '-'}")
    return lines


if __name__ == "__main__":
    with endpoint_or_local(AutoPolicy(), stream_delay=0.3) as endpoint:
        anyio.run(main, endpoint.base_url, endpoint.api_key)
