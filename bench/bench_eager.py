"""Eager tool execution in streamed runs: when do tools start and finish, against the stream?

The local model server streams one response with four function calls ``--gap`` seconds apart
(its ``stream_delay``), then ``response.completed``; each tool sleeps ``--tool`` seconds.
Three ways to run the same turn are timed from the moment the request is sent:

- ``eager``: streamed, each call starts when its ``response.output_item.done`` arrives;
- ``after-completed``: streamed, tools marked ``eager=False`` (they wait for completion);
- ``one-by-one``: streamed, as the one peer with an eager mode does it: each tool awaited
  inside the stream reader, one at a time (emulated with a per-tool limit of 1).

Run by hand: ``python bench/bench_eager.py [--gap 0.3] [--tool 0.3] [--first-tool 0.3]``.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from typing import Any

import anyio

from agent import Agent, ModelResponded, RunEvent, Tool, ToolCallFinished, ToolCallStarted, tool
from agent._threads import LoopLocalLimiter
from agent.localmodel import LocalModelServer, ScriptPolicy


@dataclass
class Timeline:
    """Seconds since the request for each call's start and end, and for response.completed."""

    starts: dict[str, float] = field(default_factory=dict)
    ends: dict[str, float] = field(default_factory=dict)
    completed: float = 0.0

    def tool_phase_end(self) -> float:
        return max(self.ends.values())


def script(names: list[str]) -> ScriptPolicy:
    calls = [{"type": "function_call", "call_id": f"call_{n}", "name": n, "arguments": "{}"} for n in names]
    return ScriptPolicy([calls, [{"type": "message", "content": "done"}]])


def make_tools(
    names: list[str], seconds: list[float], *, eager: bool, one_at_a_time: bool
) -> list[Tool[..., Any]]:
    def make(name: str, delay: float) -> Tool[..., Any]:
        async def work() -> str:
            await anyio.sleep(delay)
            return name

        return tool(work, name=name, eager=eager)

    tools = [make(n, s) for n, s in zip(names, seconds, strict=True)]
    if one_at_a_time:
        shared = tools[0].limiter = LoopLocalLimiter(1)
        for t in tools:
            t.limiter = shared
    return tools


async def one_turn(base_url: str, tools: list[Tool[..., Any]]) -> Timeline:
    timeline = Timeline()
    agent = Agent("local", base_url=base_url, api_key="local", tools=tools, max_turns=2)
    async with agent:
        started = time.perf_counter()
        async with agent.run_stream("go") as events:
            async for event in events:
                _record(timeline, event, time.perf_counter() - started)
    return timeline


def _record(timeline: Timeline, event: RunEvent, now: float) -> None:
    if isinstance(event, ToolCallStarted):
        timeline.starts[event.name] = now
    elif isinstance(event, ToolCallFinished):
        timeline.ends[event.record.name] = now
    elif isinstance(event, ModelResponded) and not timeline.completed:
        timeline.completed = now


def show(label: str, timeline: Timeline) -> None:
    print(f"\n{label}: response.completed at {timeline.completed * 1000:.0f} ms")
    for name, start in timeline.starts.items():
        print(f"  {name:<8} start {start * 1000:6.0f} ms   end {timeline.ends[name] * 1000:6.0f} ms")
    end = timeline.tool_phase_end()
    print(
        f"  tool phase ends {end * 1000:.0f} ms ({(end - timeline.completed) * 1000:.0f} ms after completed)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gap", type=float, default=0.3, help="seconds between streamed calls")
    parser.add_argument("--tool", type=float, default=0.3, help="seconds each tool takes")
    parser.add_argument("--first-tool", type=float, default=None, help="seconds the first tool takes")
    args = parser.parse_args()
    names = ["t1", "t2", "t3", "t4"]
    seconds = [args.first_tool or args.tool] + [args.tool] * 3
    print(
        f"4 calls streamed {args.gap * 1000:.0f} ms apart; tools take {[int(s * 1000) for s in seconds]} ms"
    )
    modes = {
        "eager": {"eager": True, "one_at_a_time": False},
        "after-completed": {"eager": False, "one_at_a_time": False},
        "one-by-one": {"eager": True, "one_at_a_time": True},
    }
    with LocalModelServer(script(names), stream_delay=args.gap) as server:
        for label, options in modes.items():
            timeline = anyio.run(one_turn, server.base_url, make_tools(names, seconds, **options))
            show(label, timeline)


if __name__ == "__main__":
    main()
