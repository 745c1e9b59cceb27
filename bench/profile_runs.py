"""Where agent-runtime's client CPU and memory go: CPU under cProfile, cycles, what a run holds.

Three modes, each against ``bench/server.py``'s raw responder in its own process (core 0), the
client pinned to core 1, the API page's scenario with the four trivial async tools:

- ``cpu`` (the default): where the CPU of sequential runs goes, below;
- ``cycles``: the objects that runs leave in reference cycles, by type, per run (runs with the
  cyclic GC disabled, then ``gc.DEBUG_SAVEALL``); what ``bench/bench_load.py`` reports as
  "GC-freed objects per run", explained. 0 is the goal (``tests/test_cycles.py`` guards it);
- ``held``: what one in-flight run holds, by allocation site (``tracemalloc``) and by type of
  GC-tracked object (``gc.get_objects``): snapshots with N then 2N runs in flight, diffed and
  divided by N, so what every run shares (imports, caches, the pool) drops out. ``--state``
  picks where the runs wait: ``model`` for the turn-1 response (the server holds it back),
  ``answer`` for the turn-2 response (turn 1 answered at once), ``queued`` for a connection
  (``max_connections=1``, as most runs of a 10,000-run burst wait behind the pool's 512).

Run::

    .venv/bin/python bench/profile_runs.py cycles [--runs 20]
    .venv/bin/python bench/profile_runs.py held [--state model|answer|queued] [--runs 200] [--top 25]
    .venv/bin/python bench/profile_runs.py [cpu] [--tools builtin] [--runs 200] [--top 25] [--dump out.prof]

The ``cpu`` mode: where agent-runtime's client CPU goes in scenario (a), 200 sequential runs.

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

It takes about 15 s; ``held`` and ``cycles`` a few seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import pstats
import signal
import subprocess
import sys
import time
import tracemalloc
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any, Literal

import _common
from _common import CLIENT_CPU, SERVER_CPU, ServerProcess, Table
from bench_runs import PROMPT, AgentRunner, Client, HttpxRunner, Job, Runner, ToolSet, _agent_tools
from server import RawServer, exchange

from agent import Agent

State = Literal["model", "answer", "queued"]
HOLD = 120.0
"""Seconds the ``held`` mode's server holds back the answers the runs wait for."""

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


# ---------------------------------------------------------------- cycles


async def cycles(base_url: str, runs: int) -> Counter[str]:
    """The objects ``runs`` sequential runs left in reference cycles, by type (GC off meanwhile)."""
    async with AgentRunner(Job("sequential", "agent", "trivial", runs, base_url)) as runner:
        await _runs(runner, 3)
        gc.collect()
        gc.disable()
        try:
            await _runs(runner, runs)
            gc.set_debug(gc.DEBUG_SAVEALL)
            gc.collect()
        finally:
            gc.set_debug(0)
            gc.enable()
    found = Counter(_type_name(o) for o in gc.garbage)
    gc.garbage.clear()
    return found


def _type_name(obj: object) -> str:
    kind = type(obj)
    module = kind.__module__
    return kind.__qualname__ if module == "builtins" else f"{module}.{kind.__qualname__}"


def report_cycles(found: Counter[str], runs: int) -> str:
    """The cycles table, as text."""
    table = Table("type of object left in a reference cycle", "per run")
    for name, count in found.most_common():
        table.add(name, f"{count / runs:g}")
    total = sum(found.values())
    return f"{runs} sequential runs left {total / runs:g} objects per run in reference cycles\n\n" + (
        table.render() if found else "(none)"
    )


# ---------------------------------------------------------------- held


class TurnDelayServer(RawServer):
    """The raw responder, holding back turn-1 and turn-2 answers for different times."""

    def __init__(self, first: bytes, final: bytes, *, first_delay: float, final_delay: float) -> None:
        super().__init__(first, final)
        self._delays = {self.first: first_delay, self.final: final_delay}

    def reply(self, buffer: bytearray, start: int, end: int) -> bytes:
        answer = super().reply(buffer, start, end)
        self.delay = self._delays.get(answer, 0.0)
        return answer


def serve(port: int, first_delay: float, final_delay: float) -> None:
    """Run a :class:`TurnDelayServer` on 127.0.0.1:``port`` until SIGTERM or SIGINT."""
    played = exchange("demo")
    responder = TurnDelayServer(
        played.first_response, played.final_response, first_delay=first_delay, final_delay=final_delay
    )

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        async with await loop.create_server(responder.protocol, "127.0.0.1", port, backlog=4096):
            await stop.wait()

    _common.pin(SERVER_CPU)
    asyncio.run(main())


class DelayedServer(ServerProcess):
    """``profile_runs.py serve`` in a subprocess, until closed."""

    def __init__(self, first_delay: float, final_delay: float) -> None:
        self.kind = "raw"
        self.port = _common.free_port()
        delays = ["--first-delay", str(first_delay), "--final-delay", str(final_delay)]
        command = [sys.executable, __file__, "serve", "--port", str(self.port), *delays]
        self._process = subprocess.Popen(command)
        self._wait_until_listening()


async def _until_settled(server: ServerProcess, requests: int) -> None:
    """Wait until the server has seen ``requests`` requests and the client's memory stays put."""
    while server.stats()["requests"] < requests:  # noqa: ASYNC110 - another process: no event to wait on
        await asyncio.sleep(0.1)
    last = -1
    while abs((now := tracemalloc.get_traced_memory()[0]) - last) > 16 * 1024:
        last = now
        await asyncio.sleep(0.5)


def _tracked_types() -> Counter[str]:
    gc.collect()
    return Counter(_type_name(o) for o in gc.get_objects())


Snapshot = tuple[tracemalloc.Snapshot, Counter[str]]


async def held(server: ServerProcess, state: State, runs: int) -> tuple[Snapshot, Snapshot]:
    """Snapshots with ``runs`` then ``2 * runs`` runs in flight, waiting in ``state``."""
    size = 1 if state == "queued" else 2 * runs + 8
    job = Job("concurrent", "agent", "trivial", runs, server.base_url, max_connections=size)
    per_run = {"model": 1, "answer": 2, "queued": 0}[state]
    snapshots = []
    # Under tracemalloc the loop is slow: httpx's 10 s connect timeout would fire.
    agent = Agent(
        "gpt-4.1",
        base_url=server.base_url,
        api_key="local",
        tools=_agent_tools(job),
        max_connections=size,
        timeout=2 * HOLD,
    )
    async with agent, asyncio.TaskGroup() as group:
        if state == "answer":  # warm-up (the other states' server holds back turn 1)
            await agent.run(PROMPT)
        base = server.stats()["requests"]
        tracemalloc.start(25)
        for step in (1, 2):
            for _ in range(runs):
                group.create_task(agent.run(PROMPT))
            await _until_settled(server, base + max(step * runs * per_run, 1))
            types = _tracked_types()
            snapshots.append((tracemalloc.take_snapshot(), types))
        tracemalloc.stop()
        for task in group._tasks:  # no public way to cancel a TaskGroup
            task.cancel()
    return snapshots[0], snapshots[1]


def _site(trace: tracemalloc.Traceback, inside: Callable[[str], bool]) -> str:
    """The innermost frame of ``trace`` whose file ``inside`` accepts (else the innermost)."""
    frame = next((f for f in reversed(trace) if inside(f.filename)), trace[-1])  # oldest first
    short = frame.filename.split("site-packages/")[-1].split("/lib/python3.11/")[-1]
    for ours in ("/agent/", "/bench/"):
        if ours in short:
            short = ours[1:] + short.rsplit(ours, 1)[1]
    return f"{short}:{frame.lineno}"


def report_held(first: Snapshot, second: Snapshot, runs: int, top: int) -> str:
    """Bytes, blocks and objects per in-flight run; where they were allocated; their types."""
    diffs = second[0].compare_to(first[0], "traceback")
    total = sum(d.size_diff for d in diffs)
    blocks = sum(d.count_diff for d in diffs)
    objects = second[1] - first[1]
    head = (
        f"per in-flight run: {total / runs / 1024:.1f} KB in {blocks / runs:.0f} blocks (tracemalloc), "
        f"{sum(objects.values()) / runs:.0f} GC-tracked objects"
    )
    tables = [head]
    for title, inside in (
        ("allocation site (innermost frame)", lambda _: True),
        ("allocation site (innermost frame in agent/)", lambda name: "/agent/" in name),
    ):
        sites: defaultdict[str, list[int]] = defaultdict(lambda: [0, 0])
        for d in diffs:
            entry = sites[_site(d.traceback, inside)]
            entry[0] += d.size_diff
            entry[1] += d.count_diff
        table = Table(title, "bytes per run", "blocks per run", "share")
        for site, (size, count) in sorted(sites.items(), key=lambda kv: -kv[1][0])[:top]:
            table.add(site, f"{size / runs:,.0f}", f"{count / runs:.1f}", f"{size / total:.1%}")
        tables.append(table.render())
    types = Table("GC-tracked type", "objects per run")
    for name, count in objects.most_common(top):
        types.add(name, f"{count / runs:g}")
    tables.append(types.render())
    return "\n\n".join(tables)


# ---------------------------------------------------------------- command line


def main() -> None:
    """Parse the command line, profile, print."""
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("mode", nargs="?", choices=["cpu", "cycles", "held", "serve"], default="cpu")
    parser.add_argument("--client", choices=["agent", "httpx"], default="agent")
    parser.add_argument("--tools", choices=["trivial", "builtin"], default="trivial")
    parser.add_argument("--runs", type=int, help="runs (cpu: 200; cycles: 20; held: N of N and 2N)")
    parser.add_argument("--state", choices=["model", "answer", "queued"], default="model")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--dump", help="cpu: also write the raw profile here (for snakeviz, pstats)")
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--first-delay", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--final-delay", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode == "serve":
        serve(args.port, args.first_delay, args.final_delay)
    elif args.mode == "cycles":
        runs = args.runs or 20
        with ServerProcess("raw") as server:
            _common.pin(CLIENT_CPU)
            print(report_cycles(asyncio.run(cycles(server.base_url, runs)), runs))
    elif args.mode == "held":
        runs = args.runs or 100
        first_delay = 0.0 if args.state == "answer" else HOLD
        with DelayedServer(first_delay, HOLD) as delayed:
            _common.pin(CLIENT_CPU)
            first, second = asyncio.run(held(delayed, args.state, runs))
        print(f"{runs} then {2 * runs} runs in flight, waiting for {args.state!r}\n")
        print(report_held(first, second, runs, args.top))
    else:
        profile_cpu(args)


def profile_cpu(args: argparse.Namespace) -> None:
    """The ``cpu`` mode."""
    runs = args.runs or 200
    with ServerProcess("raw") as server:
        _common.pin(CLIENT_CPU)
        plain, profiled, stats = asyncio.run(profile(server.base_url, args.client, args.tools, runs))
    if args.dump:
        stats.dump_stats(args.dump)
    waiting = waiting_per_run(stats, runs)
    print(
        f"client: {args.client}; tools: {args.tools}; {runs} sequential runs; client CPU per run "
        f"{plain * 1e3:.2f} ms without the profiler, {profiled * 1e3:.2f} ms with it; blocked in epoll "
        f"(left out below) {waiting * 1e3:.2f} ms per run\n"
    )
    print(report(stats, runs, args.top))


if __name__ == "__main__":
    main()
