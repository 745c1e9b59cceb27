"""The API page's scenario in Python: four tools requested at once, run at once.

Prints each call's start and end relative to the start of the tool phase, to show that
they overlapped, then the final answer. On the local model server unless OPENAI_* is set:

    python examples/parallel_tools.py
"""

from __future__ import annotations

import time

import anyio

from agent import Agent, Hooks, RunResult, ToolCallFinished, ToolCallStarted
from agent.localmodel import demo_script, endpoint_or_local
from builtin_tools import registry

PROMPT = (
    "Please help me do the following things simultaneously:\n1. Get the current system time\n"
    "2. Check system information (operating system, memory, etc.)\n3. Calculate the result of "
    "123.5 + 456.7\n4. Generate 3 random numbers between 1 and 100\n\n"
    "This is a parallel tool invocation test, please execute these tasks simultaneously."
)


class Timeline:
    """Collects (call, start, end) times from the run's hooks."""

    def __init__(self) -> None:
        self.origin: float | None = None
        self.spans: dict[str, list[float]] = {}

    def hooks(self) -> Hooks:
        return Hooks(on_tool_start=self.started, on_tool_end=self.finished)

    def started(self, event: ToolCallStarted) -> None:
        now = time.perf_counter()
        self.origin = self.origin or now
        self.spans[event.name] = [now - self.origin]

    def finished(self, event: ToolCallFinished) -> None:
        assert self.origin is not None
        self.spans[event.record.name].append(time.perf_counter() - self.origin)

    def overlapped(self) -> bool:
        """Whether every call started before the first one ended."""
        last_start = max(start for start, _ in self.spans.values())
        first_end = min(end for _, end in self.spans.values())
        return last_start <= first_end


async def main(base_url: str | None = None, api_key: str | None = None) -> tuple[RunResult, Timeline]:
    timeline = Timeline()
    async with Agent(
        model="gpt-4.1",
        tools=registry,
        base_url=base_url,
        api_key=api_key,
        metadata={"model_id": "32"},
    ) as agent:
        result = await agent.run(PROMPT, hooks=timeline.hooks())
    for name, (start, end) in timeline.spans.items():
        print(f"{name:<18} {start * 1000:7.2f} ms -> {end * 1000:7.2f} ms")
    print(f"overlapped: {timeline.overlapped()}\n\n{result.output}")
    return result, timeline


if __name__ == "__main__":
    with endpoint_or_local(demo_script()) as endpoint:
        anyio.run(main, endpoint.base_url, endpoint.api_key)
