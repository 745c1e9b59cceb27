"""Where agent-runtime's client CPU goes in scenario (a): 200 sequential runs, under cProfile.

Starts ``bench/server.py``'s raw responder pinned to core 0, pins itself to core 1, does 10
warm-up runs, then profiles 200 runs of the API page's scenario (four parallel calls, then the
answer) with the four trivial async tools (``--tools builtin`` for ``builtin_tools.registry``).
``--client httpx`` profiles the bare httpx floor of ``bench_runs.py`` instead. cProfile sees the
event loop's thread only (not the worker threads that run sync tools), and its clock is wall
time, so the time blocked in ``epoll`` waiting for the server or for worker threads is taken
out of every table (it is printed apart). It prints:

1. the CPU per run without and with the profiler (cProfile roughly doubles pure-Python costs,
   so read the shares, not the absolute numbers);
2. own time per run by package (time in C functions is charged to the Python code calling them,
   so ``json.loads`` counts under the caller, pydantic-core under pydantic's caller...);
3. the top functions by own time, and agent-runtime's own functions by inclusive time ("calls"
   of a coroutine count each time it resumes).

Run (about 15 s)::

    /tmp/v/bin/python bench/profile_runs.py [--tools builtin] [--runs 200] [--top 25] [--dump out.prof]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import time
from collections import defaultdict
from typing import Any

import _common
from _common import CLIENT_CPU, ServerProcess, Table
from bench_runs import AgentRunner, Client, HttpxRunner, Job, Runner, ToolSet

# (filename, line, function) -> (primitive calls, calls, own time, inclusive time, callers)
FuncKey = tuple[str, int, str]
GROUPS = [
    ("/agent/", "agent-runtime (agent/)"),
    ("/builtin_tools/", "builtin_tools"),
    ("/httpx/", "httpx"),
    ("/httpcore/", "httpcore"),
    ("/h11/", "h11"),
    ("/anyio/", "anyio"),
    ("/sniffio/", "anyio"),
    ("/pydantic/", "pydantic"),
    ("/pydantic_core/", "pydantic"),
    ("/tenacity/", "tenacity"),
    ("/structlog/", "structlog"),
    ("/psutil/", "psutil"),
    ("/asyncio/", "asyncio (stdlib)"),
    ("/json/", "json (stdlib)"),
    ("/concurrent/", "threads (stdlib)"),
    ("threading.py", "threads (stdlib)"),
    ("/bench/", "the benchmark itself"),
]


def group_of(key: FuncKey) -> str | None:
    """The package a function belongs to; ``None`` for C functions (charged to their callers)."""
    filename = key[0]
    if filename == "~":
        return None
    for marker, name in GROUPS:
        if marker in filename:
            return name
    return "other stdlib" if "/lib/python3" in filename else "other"


def by_package(stats: dict[FuncKey, Any]) -> dict[str, float]:
    """Own time per package, C functions charged to their Python callers."""
    totals: dict[str, float] = defaultdict(float)
    for key, (_, _, own, _, callers) in stats.items():
        group = group_of(key)
        if group is not None:
            totals[group] += own
            continue
        charged = 0.0
        for caller, (_, _, own_from_caller, _) in callers.items():
            caller_group = group_of(caller) or "C called from C"
            totals[caller_group] += own_from_caller
            charged += own_from_caller
        totals["C called from C"] += own - charged
    return totals


def _label(key: FuncKey) -> str:
    filename, line, name = key
    if filename == "~":
        return name
    short = filename.split("site-packages/")[-1].split("/lib/python3.11/")[-1]
    for ours in ("/agent/", "/builtin_tools/", "/bench/"):
        if ours in short:
            short = ours[1:] + short.rsplit(ours, 1)[1]
    return f"{short}:{line}({name})"


async def _runs(runner: Runner, count: int) -> None:
    for _ in range(count):
        await runner.run()


async def profile(
    base_url: str, client: Client, tools: ToolSet, runs: int
) -> tuple[float, float, pstats.Stats]:
    """CPU per run without and with cProfile, and the profile."""
    job = Job("sequential", client, tools, runs, base_url)
    async with (AgentRunner if client == "agent" else HttpxRunner)(job) as runner:
        await _runs(runner, 10)
        started = time.process_time()
        await _runs(runner, runs)
        plain = (time.process_time() - started) / runs
        profiler = cProfile.Profile()
        started = time.process_time()
        profiler.enable()
        await _runs(runner, runs)
        profiler.disable()
        profiled = (time.process_time() - started) / runs
    return plain, profiled, pstats.Stats(profiler)


def _is_waiting(key: FuncKey) -> bool:
    return key[0] == "~" and "'poll' of 'select.epoll'" in key[2]


def waiting_per_run(stats: pstats.Stats, runs: int) -> float:
    """Seconds per run blocked in ``epoll`` (waiting, not working)."""
    raw: dict[FuncKey, Any] = stats.stats  # type: ignore[attr-defined]
    waiting: float = sum(v[2] for k, v in raw.items() if _is_waiting(k))
    return waiting / runs


def report(stats: pstats.Stats, runs: int, top: int) -> str:
    """The three tables, as text."""
    everything: dict[FuncKey, Any] = stats.stats  # type: ignore[attr-defined]
    raw = {key: value for key, value in everything.items() if not _is_waiting(key)}
    total = sum(entry[2] for entry in raw.values())
    packages = Table("package", "own time per run", "share")
    for name, seconds in sorted(by_package(raw).items(), key=lambda kv: -kv[1]):
        if seconds / total >= 0.003:
            packages.add(name, f"{seconds / runs * 1e6:,.0f} µs", f"{seconds / total:.1%}")
    functions = Table("function (own time)", "calls per run", "own per run", "share")
    for key, (_, calls, own, _, _) in sorted(raw.items(), key=lambda kv: -kv[1][2])[:top]:
        functions.add(_label(key), f"{calls / runs:g}", f"{own / runs * 1e6:,.1f} µs", f"{own / total:.1%}")
    ours = Table("agent-runtime function (inclusive time)", "calls per run", "inclusive per run", "of all")
    mine = [(k, v) for k, v in raw.items() if "/agent/" in k[0]]
    for key, (_, calls, _, inclusive, _) in sorted(mine, key=lambda kv: -kv[1][3])[:top]:
        ours.add(
            _label(key), f"{calls / runs:g}", f"{inclusive / runs * 1e6:,.1f} µs", f"{inclusive / total:.1%}"
        )
    return "\n\n".join(t.render() for t in (packages, functions, ours))


def main() -> None:
    """Parse the command line, profile, print."""
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--client", choices=["agent", "httpx"], default="agent")
    parser.add_argument("--tools", choices=["trivial", "builtin"], default="trivial")
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--dump", help="also write the raw profile here (for snakeviz, pstats)")
    args = parser.parse_args()
    with ServerProcess("raw") as server:
        _common.pin(CLIENT_CPU)
        plain, profiled, stats = asyncio.run(profile(server.base_url, args.client, args.tools, args.runs))
    if args.dump:
        stats.dump_stats(args.dump)
    waiting = waiting_per_run(stats, args.runs)
    print(
        f"client: {args.client}; tools: {args.tools}; {args.runs} sequential runs; client CPU per run "
        f"{plain * 1e3:.2f} ms without the profiler, {profiled * 1e3:.2f} ms with it; blocked in epoll "
        f"(left out below) {waiting * 1e3:.2f} ms per run\n"
    )
    print(report(stats, args.runs, args.top))


if __name__ == "__main__":
    main()
