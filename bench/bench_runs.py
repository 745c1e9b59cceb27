"""agent-runtime as a client in the scenarios of ``/work/shared/PERF-NOTES.md``, against a floor.

The server is ``bench/server.py`` in its own process pinned to core 0 (by default the raw canned
responder, about 12 µs of CPU per request, so it never limits a client here); every measurement
runs in a fresh client process pinned to core 1. Each figure is the median of ``--reps`` such
processes (3 by default; 1 for scenario e, which takes half a minute per process). The scenario
is the API page's: turn 1 asks for four tool calls in parallel, turn 2 answers.

- (a) 200 runs one after another (after 10 warm-up runs): client CPU per run
  (``time.process_time``, worker threads included) and wall time per run. Tools: the four
  ``builtin_tools.registry`` tools (three async, ``system_info`` in a worker thread), or four trivial async
  tools with the same names and parameters.
- (b) 16 async tools that each sleep 200 ms: the tool phase, from the turn-1 response
  (``on_model_response``) to the last ``on_tool_end``; median of 3 runs in each process.
- (c) the same with 16 sync tools (``time.sleep``), and the most threads seen alive at once.
- (d) 100 runs at once, the server answering each request after 50 ms: wall time and peak RSS
  (``ru_maxrss`` of the fresh process); then the RSS after imports and one warm-up run, the
  median run latency, and the client's CPU time.
- (e) 1,000 runs at once, as (d), plus the time in cyclic GC (``gc.callbacks``), and how many
  connections the server accepted (a pool that reconnects between turns shows there).

The floor is a hand-written loop on bare httpx 0.28 + json (no validation, no events, no
retries) with the trivial tools run by ``asyncio.gather``, and a pool of one connection per run.
The PERF-NOTES columns are that file's figures for the peers and its floor. A ``--transport``
other than httpx runs both clients over pydantic's httpx2 fork or over the prototype pool of
``agent/_pool.py`` (see ``bench/bench_pool.py``, which compares them).

Run (about 110 s; ``--only a,b`` for a part, ``--reps 1`` for a quick look)::

    /tmp/v/bin/python bench/bench_runs.py
    /tmp/v/bin/python bench/bench_runs.py --only a,b,c --server local   # against agent.localmodel
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import _common
import httpx
from _common import BENCH_DIR, CLIENT_CPU, FANOUT_CALLS, FANOUT_PREFIX, ServerKind, ServerProcess, Table

Scenario = Literal["sequential", "fanout_async", "fanout_sync", "concurrent", "after_burst"]
Client = Literal["agent", "httpx"]
ToolSet = Literal["builtin", "trivial"]
Transport = Literal["httpx", "httpx2", "fastpool"]
"""httpx 0.28 (for the agent: its own pool); pydantic's httpx2 fork (what openai uses); or httpx
over agent-runtime's own O(1) pool (``agent/_pool.py``)."""
JSON = dict[str, Any]
AsyncTool = Callable[..., Awaitable[Any]]
Operation = Literal["add", "subtract", "multiply", "divide", "power"]

PROMPT = "Do the four tasks in parallel."
SLEEP = 0.2
PEERS = {  # openai-agents, pydantic-ai, bare httpx floor: PERF-NOTES.md
    "a_cpu": ("17.9-18.6 ms", "17.6-19.0 ms", "1.4 ms"),
    "b_async": ("202 ms", "201 ms", "201 ms"),
    "c_sync": ("601 ms (6 threads)", "202 ms (up to 40 threads)", "—"),
    "d_100": ("1.97 s / 122 MB", "2.00 s / 107 MB", "0.36 s / 60 MB"),
    "e_1000": ("32.8 s / 225 MB", "25.4 s / 249 MB", "5.4 s / 121 MB"),
    "e_gc": ("5.8 s", "5.2 s", "0.75 s"),
}


@dataclass(frozen=True)
class Job:
    """One measurement, made in a fresh process."""

    scenario: Scenario
    client: Client
    tools: ToolSet = "trivial"
    runs: int = 200
    base_url: str = ""
    max_connections: int = 0
    """0: the client's default (agent-runtime: its 512; the floor: one connection per run)."""
    transport: Transport = "httpx"
    gc_freeze: bool = False
    """``gc.freeze()`` after the warm-up: objects that exist then are never traversed again."""
    gc_threshold0: int = 0
    """When not 0, ``gc.set_threshold(gc_threshold0)`` after the warm-up (Python's default: 700)."""


MAX_RUNS_VARIABLE = "BENCH_MAX_CONCURRENT_RUNS"
"""How ``--max-runs`` reaches the worker processes' agents."""


# ---------------------------------------------------------------- tools


async def _trivial_current_time(timezone: str | None = None) -> JSON:
    """Get the current date and time (a constant here).

    Args:
        timezone: An IANA time zone name; omit it for local time.
    """
    return {"timezone": timezone or "local", "local_time": "2025-06-01T14:30:00+02:00"}


async def _trivial_system_info() -> JSON:
    """Get basic facts about the computer (constants here)."""
    return {"os": "Linux", "cpu_count": 2}


async def _trivial_math(a: float, b: float, operation: Operation) -> JSON:
    """Calculate a + b (whatever the operation, here).

    Args:
        a: The first number.
        b: The second number.
        operation: One of add, subtract, multiply, divide, power.
    """
    return {"a": a, "b": b, "operation": operation, "result": a + b}


async def _trivial_random(min: int = 1, max: int = 100, count: int = 1) -> JSON:
    """Generate ``count`` integers (all equal to ``min``, here).

    Args:
        min: The smallest value.
        max: The largest value.
        count: How many numbers.
    """
    return {"numbers": [min] * count, "min": min, "max": max, "count": count}


TRIVIAL: dict[str, AsyncTool] = {
    "current_time": _trivial_current_time,
    "system_info": _trivial_system_info,
    "math_calculator": _trivial_math,
    "random_generator": _trivial_random,
}


class ThreadPeak:
    """The most threads seen alive at once by the sync sleepers."""

    peak = 0

    @classmethod
    def sample(cls) -> None:
        cls.peak = max(cls.peak, threading.active_count())


async def _async_sleeper() -> str:
    await asyncio.sleep(SLEEP)
    return "slept"


def _sync_sleeper() -> str:
    ThreadPeak.sample()
    time.sleep(SLEEP)
    return "slept"


def _agent_tools(job: Job) -> Any:
    """The job's tools as an agent-runtime registry (agent is imported only by agent jobs)."""
    from agent import ToolRegistry, tool

    if job.scenario in ("fanout_async", "fanout_sync"):
        sleeper: Callable[[], Any] = _async_sleeper if job.scenario == "fanout_async" else _sync_sleeper
        names = [f"{FANOUT_PREFIX}{i:02d}" for i in range(FANOUT_CALLS)]
        return ToolRegistry([tool(sleeper, name=name, description="Sleep.") for name in names])
    if job.tools == "builtin":
        from builtin_tools import registry

        return registry
    return ToolRegistry([tool(function, name=name) for name, function in TRIVIAL.items()])


# ---------------------------------------------------------------- HTTP clients


class Httpx2ForAgent:
    """Just enough of ``httpx.AsyncClient`` for agent-runtime's happy path, over httpx2.

    The agent's per-request ``auth`` (an ``httpx.Auth``) and ``headers`` are dropped: the httpx2
    client sends the benchmark's key itself. The ``httpx.Timeout`` becomes httpx2's.
    """

    def __init__(self, client: Any) -> None:
        self._client = client

    async def post(self, url: str, *, json: Any, **options: Any) -> Any:
        import httpx2

        timeout = httpx2.Timeout(**options["timeout"].as_dict())
        return await self._client.post(url, json=json, timeout=timeout)

    async def aclose(self) -> None:
        await self._client.aclose()


def http_client(transport: Transport, size: int, headers: dict[str, str]) -> Any:
    """An async HTTP client on ``transport`` with ``size`` connections, all kept alive."""
    if transport == "httpx2":
        import httpx2

        limits2 = httpx2.Limits(max_connections=size, max_keepalive_connections=size, keepalive_expiry=30)
        return httpx2.AsyncClient(limits=limits2, headers=headers, timeout=600)
    if transport == "fastpool":
        from agent._pool import PooledTransport  # imported late, like agent below (PYTHONPATH)

        pool = PooledTransport(max_connections=size)
        return httpx.AsyncClient(transport=pool, headers=headers, timeout=600)
    limits = httpx.Limits(max_connections=size, max_keepalive_connections=size, keepalive_expiry=30)
    return httpx.AsyncClient(limits=limits, headers=headers, timeout=600)


# ---------------------------------------------------------------- the two clients


class Runner:
    """Runs one conversation to its answer, and remembers when the last tool phase began and ended."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.turn_1_at = 0.0
        self.last_tool_end = 0.0

    async def __aenter__(self) -> Runner:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def run(self) -> str:
        """One whole run."""
        raise NotImplementedError

    @property
    def tool_phase(self) -> float:
        """Seconds from the turn-1 response to the end of its last tool call."""
        return self.last_tool_end - self.turn_1_at


class AgentRunner(Runner):
    """``Agent.run``, with hooks that timestamp the tool phase in the fan-out scenarios."""

    async def __aenter__(self) -> Runner:
        from agent import Agent, Hooks

        size = self.job.max_connections or 512
        self._http = None
        if self.job.transport == "fastpool":
            self._http = http_client("fastpool", size, {})
        elif self.job.transport == "httpx2":
            self._http = Httpx2ForAgent(http_client("httpx2", size, {"Authorization": "Bearer local"}))
        self._agent = Agent(
            "gpt-4.1",
            base_url=self.job.base_url,
            api_key="local",
            tools=_agent_tools(self.job),
            max_connections=size,
            max_concurrent_runs=int(os.environ.get(MAX_RUNS_VARIABLE, "0")) or None,
            http_client=self._http,
        )
        timing = self.job.scenario.startswith("fanout")
        self._hooks = Hooks(on_model_response=self._responded, on_tool_end=self._ended) if timing else None
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._agent.aclose()
        if self._http is not None:
            await self._http.aclose()

    def _responded(self, event: Any) -> None:
        if event.turn == 1:
            self.turn_1_at = time.perf_counter()

    def _ended(self, event: Any) -> None:
        self.last_tool_end = time.perf_counter()

    async def run(self) -> str:
        result = await self._agent.run(PROMPT, hooks=self._hooks)
        return str(result.output)


class HttpxRunner(Runner):
    """The floor: bare httpx + json, trivial tools, ``asyncio.gather`` for a turn's calls."""

    async def __aenter__(self) -> Runner:
        size = self.job.max_connections or max(self.job.runs, 10)
        self._client = http_client(self.job.transport, size, {"Authorization": "Bearer local"})
        self._url = self.job.base_url + "/responses"
        self._tools = TRIVIAL
        if self.job.scenario == "fanout_async":
            self._tools = {f"{FANOUT_PREFIX}{i:02d}": _async_sleeper for i in range(FANOUT_CALLS)}
        schema = {"type": "object", "properties": {}, "additionalProperties": True}
        self._wire = [
            {"type": "function", "name": name, "description": name, "parameters": schema, "strict": False}
            for name in self._tools
        ]
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._client.aclose()

    async def run(self) -> str:
        items: list[JSON] = [{"role": "user", "content": PROMPT}]
        for _ in range(10):
            body = {"model": "gpt-4.1", "input": items, "tools": self._wire, "parallel_tool_calls": True}
            reply = await self._client.post(self._url, content=json.dumps(body).encode())
            output: list[JSON] = json.loads(reply.content)["output"]
            items.extend(output)
            calls = [item for item in output if item.get("type") == "function_call"]
            if not calls:
                return str(output[-1]["content"][0]["text"])
            self.turn_1_at = time.perf_counter()
            results = await asyncio.gather(
                *(self._tools[call["name"]](**json.loads(call["arguments"])) for call in calls)
            )
            self.last_tool_end = time.perf_counter()
            items.extend(
                {"type": "function_call_output", "call_id": call["call_id"], "output": json.dumps(result)}
                for call, result in zip(calls, results, strict=True)
            )
        raise RuntimeError("too many turns")


# ---------------------------------------------------------------- worker: one job, one process


@dataclass
class GcTimer:
    """Seconds spent in cyclic GC, and collections, per generation, through ``gc.callbacks``."""

    collections: list[int] = field(default_factory=lambda: [0, 0, 0])
    seconds: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    _started: float = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        self.collections[info["generation"]] += 1
        self.seconds[info["generation"]] += time.perf_counter() - self._started


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def _sequential_cpu(runner: Runner, runs: int) -> tuple[float, float]:
    """CPU and wall seconds per run, over ``runs`` runs one after another."""
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(runs):
        await runner.run()
    return (time.process_time() - cpu) / runs, (time.perf_counter() - wall) / runs


async def _sequential(runner: Runner, job: Job) -> JSON:
    await _sequential_cpu(runner, 10)
    cpu, wall = await _sequential_cpu(runner, job.runs)
    return {"cpu_ms": cpu * 1e3, "wall_ms": wall * 1e3}


async def _fanout(runner: Runner, job: Job) -> JSON:
    await runner.run()
    phases = []
    for _ in range(3):
        await runner.run()
        phases.append(runner.tool_phase)
    return {"tool_phase_ms": statistics.median(phases) * 1e3, "threads": ThreadPeak.peak}


async def _concurrent(runner: Runner, job: Job) -> JSON:
    await runner.run()
    if job.gc_freeze:
        gc.collect()
        gc.freeze()
    if job.gc_threshold0:
        gc.set_threshold(job.gc_threshold0)
    rss_before = _rss_mb()
    timer = GcTimer()
    gc.callbacks.append(timer)
    started, cpu = time.perf_counter(), time.process_time()
    latencies: list[float] = []

    async def one() -> None:
        await runner.run()
        latencies.append(time.perf_counter() - started)

    await asyncio.gather(*(one() for _ in range(job.runs)))
    wall = time.perf_counter() - started
    gc.callbacks.remove(timer)
    return {
        "wall_s": wall,
        "cpu_s": time.process_time() - cpu,
        "rss_mb": _rss_mb(),
        "rss_before_mb": rss_before,
        "gc_s": sum(timer.seconds),
        "gc_gen2_s": timer.seconds[2],
        "gc_collections": timer.collections,
        "latency_median_s": statistics.median(latencies),
    }


async def _after_burst(runner: Runner, job: Job) -> JSON:
    """CPU per sequential run before and after ``job.runs`` runs at once filled the pool."""
    await runner.run()
    before, _ = await _sequential_cpu(runner, 20)
    await asyncio.gather(*(runner.run() for _ in range(job.runs)))
    after, _ = await _sequential_cpu(runner, 20)
    return {"cpu_before_ms": before * 1e3, "cpu_after_ms": after * 1e3}


SCENARIOS: dict[Scenario, Callable[[Runner, Job], Coroutine[Any, Any, JSON]]] = {
    "sequential": _sequential,
    "fanout_async": _fanout,
    "fanout_sync": _fanout,
    "concurrent": _concurrent,
    "after_burst": _after_burst,
}


async def _work(job: Job) -> JSON:
    runner_class = AgentRunner if job.client == "agent" else HttpxRunner
    async with runner_class(job) as runner:
        return await SCENARIOS[job.scenario](runner, job)


def worker(spec: str) -> None:
    """Run one job in this (fresh) process, pinned to the client core; print its JSON result."""
    _common.pin(CLIENT_CPU)
    print(json.dumps(asyncio.run(_work(Job(**json.loads(spec))))))


# ---------------------------------------------------------------- orchestration


def measure(job: Job, server: ServerProcess, reps: int) -> JSON:
    """The job in ``reps`` fresh processes: each number's median, and the server's share."""
    results: list[JSON] = []
    for _ in range(reps):
        before, cpu_before = server.stats(), server.cpu_seconds()
        command = [sys.executable, str(BENCH_DIR / "bench_runs.py"), "--worker", json.dumps(asdict(job))]
        output = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True).stdout
        result: JSON = json.loads(output.strip().splitlines()[-1])
        result["server_cpu_s"] = server.cpu_seconds() - cpu_before
        if after := server.stats():  # minus the connection that asked for these stats
            result["connections"] = after["connections"] - before["connections"] - 1
        results.append(result)
    merged: JSON = {}
    for key, value in results[0].items():
        numeric = isinstance(value, int | float)
        merged[key] = statistics.median(r[key] for r in results) if numeric else value
    return merged


COLUMNS = ["agent builtin", "agent trivial", "bare httpx"]
ROWS = [
    ("a_cpu", "(a) client CPU per run, 200 sequential runs"),
    ("a_wall", "(a) wall per run, 200 sequential runs"),
    ("b_async", "(b) 16 async tools x 200 ms: tool phase"),
    ("c_sync", "(c) 16 sync tools x 200 ms: tool phase (threads)"),
    ("d_100", "(d) 100 concurrent runs, 50 ms/response: wall / peak RSS"),
    ("d_detail", "(d) RSS after warm-up; median run latency; client CPU"),
    ("e_1000", "(e) 1,000 concurrent runs, 50 ms/response: wall / peak RSS"),
    ("e_gc", "(e) time in cyclic GC (of which gen 2)"),
    ("e_detail", "(e) RSS after warm-up; median run latency; client CPU"),
    ("e_conn", "(e) connections the server accepted; server CPU busy"),
]


@dataclass(frozen=True)
class Plan:
    """One scenario: the server it needs and the clients it measures."""

    letter: str
    script: str
    delay: float
    scenario: Scenario
    runs: int
    columns: tuple[str, ...]
    reps: int | None = None
    """Fresh processes per figure; ``None``: the command line's ``--reps``."""


PLANS = [
    Plan("a", "demo", 0.0, "sequential", 200, ("agent builtin", "agent trivial", "bare httpx")),
    Plan("b", "fanout", 0.0, "fanout_async", 1, ("agent trivial", "bare httpx")),
    Plan("c", "fanout", 0.0, "fanout_sync", 1, ("agent trivial",)),
    Plan("d", "demo", 0.05, "concurrent", 100, ("agent builtin", "agent trivial", "bare httpx")),
    Plan("e", "demo", 0.05, "concurrent", 1000, ("agent trivial", "bare httpx"), reps=1),
]
CLIENTS: dict[str, tuple[Client, ToolSet]] = {
    "agent builtin": ("agent", "builtin"),
    "agent trivial": ("agent", "trivial"),
    "bare httpx": ("httpx", "trivial"),
}


def run_plan(plan: Plan, server_kind: ServerKind, reps: int, transport: Transport) -> dict[str, JSON]:
    """Every client of ``plan``, against one fresh server process."""
    results = {}
    with ServerProcess(server_kind, script=plan.script, delay=plan.delay) as server:
        for column in plan.columns:
            client, tools = CLIENTS[column]
            job = Job(plan.scenario, client, tools, plan.runs, server.base_url, transport=transport)
            started = time.perf_counter()
            results[column] = measure(job, server, plan.reps or reps)
            took = time.perf_counter() - started
            print(f"{plan.letter} {column:14} {took:5.1f} s  {json.dumps(results[column])}", file=sys.stderr)
    return results


def cells(letter: str, r: JSON) -> dict[str, str]:
    """The table cells that one result fills, by row key."""
    if letter == "a":
        return {"a_cpu": f"{r['cpu_ms']:.2f} ms", "a_wall": f"{r['wall_ms']:.2f} ms"}
    if letter == "b":
        return {"b_async": f"{r['tool_phase_ms']:.0f} ms"}
    if letter == "c":  # minus the main thread
        return {"c_sync": f"{r['tool_phase_ms']:.0f} ms ({r['threads'] - 1:.0f} threads)"}
    out = {
        "d_100" if letter == "d" else "e_1000": f"{r['wall_s']:.2f} s / {r['rss_mb']:.0f} MB",
        f"{letter}_detail": f"{r['rss_before_mb']:.0f} MB; {r['latency_median_s']:.2f} s; {r['cpu_s']:.2f} s",
        f"{letter}_gc": f"{r['gc_s']:.2f} s ({r['gc_gen2_s']:.2f} s)",
    }
    if "connections" in r:
        out[f"{letter}_conn"] = f"{r['connections']:.0f}; {r['server_cpu_s'] / r['wall_s']:.0%}"
    return out


def render(found: dict[tuple[str, str], str], letters: set[str]) -> str:
    """The result table, with the PERF-NOTES figures alongside."""
    table = Table(
        "",
        "agent-runtime, builtin tools",
        "agent-runtime, trivial tools",
        "bare httpx loop",
        "openai-agents (PERF-NOTES)",
        "pydantic-ai (PERF-NOTES)",
        "bare httpx floor (PERF-NOTES)",
    )
    for key, label in ROWS:
        if key[0] in letters:
            peers = PEERS.get(key, ("—", "—", "—"))
            table.add(label, *(found.get((key, column), "—") for column in COLUMNS), *peers)
    return table.render()


def main() -> None:
    """Parse the command line; run one worker job, or the whole benchmark."""
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--only", default="a,b,c,d,e", help="scenarios to run, e.g. a,b")
    parser.add_argument("--reps", type=int, default=3, help="fresh processes per figure (median)")
    parser.add_argument("--server", choices=["raw", "local"], default="raw")
    parser.add_argument("--transport", choices=["httpx", "httpx2", "fastpool"], default="httpx")
    parser.add_argument("--max-runs", type=int, default=0, help="agent-runtime's max_concurrent_runs")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.max_runs:
        os.environ[MAX_RUNS_VARIABLE] = str(args.max_runs)  # the worker processes inherit it
    if args.worker:
        worker(args.worker)
        return
    letters = set(args.only.split(","))
    if args.server == "local" and letters & {"d", "e"}:
        parser.error("the local model server cannot delay its answers: run d and e with --server raw")
    started = time.perf_counter()
    found: dict[tuple[str, str], str] = {}
    for plan in PLANS:
        if plan.letter in letters:
            for column, result in run_plan(plan, args.server, args.reps, args.transport).items():
                found.update(((key, column), text) for key, text in cells(plan.letter, result).items())
    took = time.perf_counter() - started
    print(
        f"\nserver: {args.server}; transport: {args.transport}; medians of {args.reps} fresh client "
        f"processes (scenario e: 1); {took:.0f} s in all\n\n{render(found, letters)}"
    )


if __name__ == "__main__":
    main()
