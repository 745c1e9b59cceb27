"""Soak: many runs through ONE agent against the local model server failing ~20 % of its requests.

Every request the server gets draws from a seeded `FaultMix` (429 with Retry-After, 500, 503, a
connection dropped before the body and during it, a stall past the client's read timeout before
the headers and mid-body, a truncated JSON body, an HTML page, a stream ended early); half of the
runs stream. The scenario is the API page's: the model (AutoPolicy, not AI) calls three tools at
once (two async, one sync in a worker thread), then reports their outputs.

Checked, and printed as a table:

- every run ends with the right answer (the fault-free run's text) or a typed ``AgentError``;
- every tool call that ran is accounted for exactly once: the tools count their executions by
  call id, and each executed id appears once in ``result.tool_calls`` (or the error's
  ``partial_result.tool_calls``), none runs twice, and no ``ok`` record lacks an execution;
- after ``aclose()`` no thread, asyncio task, file descriptor or client socket is left over
  (compared with the start, after warm-up runs; the server runs in a child process, so what
  this process holds is the agent's alone);
- traced memory (tracemalloc) returns near its start (within 2 MB).

Run (about two minutes for 1,000 runs on 2 cores)::

    python bench/soak.py --runs 1000
    python bench/soak.py --runs 200 --json      # what tests/test_soak.py runs

The exit status is 0 when every check holds, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import tracemalloc
import warnings
from collections import Counter
from dataclasses import asdict, dataclass, field

import anyio
import anyio.lowlevel
import httpx
import psutil

from agent import (
    Agent,
    AgentError,
    RetryPolicy,
    RunResult,
    ToolCallRecord,
    ToolCallStarted,
    ToolContext,
    tool,
)
from agent.localmodel import DEFAULT_MIX, AutoPolicy, Fault, FaultMix, LocalModelServer

PROMPT = "Look up Paris, convert 12.5 and stamp 'soak', all at once."
MEMORY_SLACK = 2 * 1024 * 1024
"""Traced bytes the process may hold after the soak beyond its start (caches warmed by rare paths)."""
STALL = 4.0
"""Seconds a stall fault lasts: past the client's read timeout (`--read-timeout`, 2 s)."""
KINDS = tuple(
    Fault(stall=STALL) if kind.stall else Fault(delay=STALL) if kind.delay else kind for kind in DEFAULT_MIX
)
"""`DEFAULT_MIX`, its stalls outlasting the client's read timeout."""


Executions = Counter[str]


@tool
async def lookup(ctx: ToolContext[Executions], city: str) -> dict[str, object]:
    """Facts about a city.

    Args:
        city: The city's name.
    """
    ctx.deps[ctx.call_id] += 1
    await anyio.lowlevel.checkpoint()
    return {"city": city, "population": len(city) * 1_000_000}


@tool
def convert(ctx: ToolContext[Executions], amount: float) -> float:
    """Euros to dollars, in a worker thread.

    Args:
        amount: Euros.
    """
    ctx.deps[ctx.call_id] += 1  # Counter updates of distinct keys: one thread per call id
    return round(amount * 1.1, 2)


@tool
async def stamp(ctx: ToolContext[Executions], label: str) -> str:
    """A label, stamped.

    Args:
        label: What to stamp.
    """
    ctx.deps[ctx.call_id] += 1
    return f"[{label}]"


@dataclass(frozen=True, slots=True)
class Resources:
    """What the process holds at one moment."""

    threads: int
    tasks: int
    fds: int
    client_sockets: int
    rss: int
    traced: int

    @classmethod
    def now(cls, server_port: int | None) -> Resources:
        process = psutil.Process()
        sockets = process.net_connections(kind="tcp") if server_port else []
        tasks = len(asyncio.all_tasks()) if _in_asyncio() else 0
        return cls(
            threads=threading.active_count(),
            tasks=tasks,
            fds=process.num_fds(),
            client_sockets=sum(1 for s in sockets if s.raddr and s.raddr.port == server_port),
            rss=process.memory_info().rss,
            traced=tracemalloc.get_traced_memory()[0] if tracemalloc.is_tracing() else 0,
        )


def _in_asyncio() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


@dataclass(slots=True)
class Report:
    """The soak's figures and the outcome of each check."""

    runs: int
    streamed: int
    concurrency: int
    fault_rate: float
    seed: int
    wall: float = 0.0
    latency_p50: float = 0.0
    latency_p99: float = 0.0
    memory_top: list[str] = field(default_factory=list)
    """The allocation sites that grew most over the soak (tracemalloc, by line)."""
    requests: int = 0
    faults: dict[str, int] = field(default_factory=dict)
    cancel_every: int = 0
    """Every n-th streamed run is left early (0: none), through ``run_stream``."""
    outcomes: dict[str, int] = field(default_factory=dict)
    errors_in_streamed_runs: int = 0
    """Typed errors of streamed runs: a stream that fails once a tool started is not retried."""
    untyped: list[str] = field(default_factory=list)
    resource_warnings: list[str] = field(default_factory=list)
    """``ResourceWarning``s seen during the soak (an unclosed socket or transport, say)."""
    wrong_answers: int = 0
    executed_calls: int = 0
    recorded_calls: int = 0
    ran_twice: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    recorded_twice: list[str] = field(default_factory=list)
    ok_without_execution: list[str] = field(default_factory=list)
    before: Resources | None = None
    after_aclose: Resources | None = None
    after_stop: Resources | None = None

    @property
    def leftovers(self) -> dict[str, int]:
        """What the process holds after the soak beyond its start (threads, tasks, fds, sockets)."""
        if self.before is None or self.after_aclose is None or self.after_stop is None:
            return {"unmeasured": 1}
        return {
            "threads": max(0, self.after_aclose.threads - self.before.threads),
            "tasks": max(0, self.after_aclose.tasks - self.before.tasks),
            "fds": max(0, self.after_aclose.fds - self.before.fds),
            "client_sockets": self.after_aclose.client_sockets,
        }

    @property
    def memory_growth(self) -> int:
        """Traced bytes held after ``aclose()`` beyond the start."""
        if self.before is None or self.after_aclose is None:
            return 0
        return self.after_aclose.traced - self.before.traced

    def failures(self) -> list[str]:
        """Every check that did not hold, in words (empty when the soak passed)."""
        problems = []
        if self.untyped:
            problems.append(f"{len(self.untyped)} runs ended with an untyped error: {self.untyped[:3]}")
        if self.wrong_answers:
            problems.append(f"{self.wrong_answers} runs completed with a wrong answer")
        for name in ("ran_twice", "lost", "recorded_twice", "ok_without_execution"):
            if ids := getattr(self, name):
                problems.append(f"{len(ids)} calls {name.replace('_', ' ')}: {ids[:3]}")
        if self.resource_warnings:
            problems.append(f"{len(self.resource_warnings)} ResourceWarnings: {self.resource_warnings[:3]}")
        if any(self.leftovers.values()):
            problems.append(f"left over after aclose(): {self.leftovers}")
        if self.before and self.before.traced and self.memory_growth > MEMORY_SLACK:
            problems.append(f"traced memory grew by {self.memory_growth:,} bytes")
        return problems

    def as_json(self) -> str:
        document = asdict(self)
        document.update(leftovers=self.leftovers, memory_growth=self.memory_growth, failures=self.failures())
        return json.dumps(document, indent=2)


class Soak:
    """One soak: a server with a fault mix, one agent, ``runs`` runs ``concurrency`` at a time."""

    def __init__(self, report: Report, server: ServerChild, read_timeout: float) -> None:
        self.report = report
        self.server = server
        self.read_timeout = read_timeout
        self.executions: Executions = Counter()
        self.abandoned: Executions = Counter()
        """Executions in runs left early: they may be unrecorded, never run twice."""
        self.records: list[ToolCallRecord] = []
        self.outcomes: Counter[str] = Counter()
        self.expected = ""
        self.latencies: list[float] = []
        self.snapshot: tracemalloc.Snapshot | None = None

    def agent(self) -> Agent:
        return Agent(
            "soak-model",
            base_url=self.server.base_url,
            api_key="sk-soak-not-a-secret",
            tools=[lookup, convert, stamp],
            timeout=httpx.Timeout(10.0, read=self.read_timeout),
            retry=RetryPolicy(max_retries=3, initial_delay=0.02, max_delay=0.2, jitter=0.02),
            tool_timeout=10.0,
        )

    async def main(self) -> None:
        # Warm-up on a throwaway agent: what the first runs initialise once per process (imports,
        # caches, validators, error paths) is not a leak of the soak's. Its first answer that got
        # through the faults is the right answer (the tools and the policy are deterministic).
        async with self.agent() as warm:
            for index in range(20):
                try:
                    reference = await warm.run(PROMPT, deps=Counter[str](), stream=index % 2 == 1)
                except AgentError:
                    continue
                self.expected = self.expected or reference.output
        if not self.expected:
            raise RuntimeError("no warm-up run got through the faults")
        gc.collect()
        report = self.report
        report.before = Resources.now(self.server.port)
        self.snapshot = tracemalloc.take_snapshot() if tracemalloc.is_tracing() else None
        started = time.perf_counter()
        limiter = anyio.CapacityLimiter(report.concurrency)
        agent = self.agent()
        async with agent, anyio.create_task_group() as group:
            for index in range(report.runs):
                group.start_soon(self.one_run, agent, index, limiter)
        report.wall = time.perf_counter() - started
        # The harness's own bookkeeping (every record, every execution count) is not the agent's
        # memory: account, let go of it, then measure.
        self.account()
        self.records.clear()
        self.executions.clear()
        self.abandoned.clear()
        self.latencies.clear()
        gc.collect()
        report.after_aclose = Resources.now(self.server.port)
        report.memory_top = self.memory_top()

    async def one_run(self, agent: Agent, index: int, limiter: anyio.CapacityLimiter) -> None:
        async with limiter:
            stream = index < self.report.streamed
            every = self.report.cancel_every
            started = time.perf_counter()
            try:
                with anyio.fail_after(120):
                    if stream and every and index % every == 0:
                        await self.leave_early(agent)
                        return
                    result = await agent.run(PROMPT, deps=self.executions, stream=stream)
            except AgentError as exc:
                self.latencies.append(time.perf_counter() - started)
                self.outcomes[type(exc).__name__] += 1
                self.report.errors_in_streamed_runs += stream
                if exc.partial_result is not None:
                    self.records.extend(exc.partial_result.tool_calls)
                return
            except Exception as exc:  # the soak's point: anything untyped is a finding
                self.outcomes["untyped"] += 1
                self.report.untyped.append(f"{type(exc).__name__}: {exc}"[:300])
                return
            self.latencies.append(time.perf_counter() - started)
            self.accept(result)

    async def leave_early(self, agent: Agent) -> None:
        """A streamed run whose consumer leaves at the first tool call started (cancelling the run)."""
        async with agent.run_stream(PROMPT, deps=self.abandoned) as events:
            async for event in events:
                if isinstance(event, ToolCallStarted):
                    break
        self.outcomes["left early"] += 1

    def accept(self, result: RunResult) -> None:
        self.records.extend(result.tool_calls)
        right = result.status == "completed" and result.output == self.expected
        self.outcomes["answer" if right else "wrong answer"] += 1
        self.report.wrong_answers += not right

    def account(self) -> None:
        """Compare the tools' own execution counts with the records the runs gave back."""
        report = self.report
        recorded = Counter(record.call_id for record in self.records)
        ok = {record.call_id for record in self.records if record.kind == "ok"}
        report.executed_calls = sum(self.executions.values())
        report.recorded_calls = len(self.records)
        everything = self.executions + self.abandoned
        report.ran_twice = sorted(cid for cid, n in everything.items() if n > 1)
        report.lost = sorted(cid for cid in self.executions if recorded[cid] == 0)
        report.recorded_twice = sorted(cid for cid, n in recorded.items() if n > 1)
        report.ok_without_execution = sorted(ok - set(everything))
        report.outcomes = dict(self.outcomes.most_common())
        if self.latencies:
            quantiles = statistics.quantiles(self.latencies, n=100)
            report.latency_p50, report.latency_p99 = quantiles[49], quantiles[98]

    def memory_top(self, count: int = 5) -> list[str]:
        """Where traced memory grew most since the start (call before tracing stops)."""
        if self.snapshot is None or not tracemalloc.is_tracing():
            return []
        stats = tracemalloc.take_snapshot().compare_to(self.snapshot, "lineno")
        return [str(stat) for stat in stats[:count]]


class ServerChild:
    """The local model server with the fault mix, in a child process (``soak.py --serve``).

    Its own process: the client's threads, descriptors and memory are then the agent's alone,
    and the server's CPU does not slow the client's reads into spurious timeouts.
    """

    def __init__(self, fault_rate: float, seed: int) -> None:
        command = [sys.executable, __file__, "--serve", "--fault-rate", str(fault_rate), "--seed", str(seed)]
        self._process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self._process.stdout is not None
        self.base_url = self._process.stdout.readline().strip()
        if not self.base_url:
            raise RuntimeError("the soak server did not start")
        self.port = httpx.URL(self.base_url).port or 80

    def stop(self) -> dict[str, int]:
        """Stop the server; the faults it injected, by kind."""
        output, _ = self._process.communicate(timeout=30)
        faults: dict[str, int] = json.loads(output)
        return faults


def serve(fault_rate: float, seed: int) -> None:
    """The child's side: serve until stdin closes, then print the injected faults as JSON."""
    mix = FaultMix(rate=fault_rate, seed=seed, kinds=KINDS)
    with LocalModelServer(AutoPolicy(), fault_mix=mix, max_stored=16, max_requests=0) as server:
        print(server.base_url, flush=True)
        sys.stdin.read()
        faults = server.injected_faults
    print(json.dumps(faults), flush=True)


def run_soak(
    runs: int,
    *,
    concurrency: int = 20,
    fault_rate: float = 0.2,
    seed: int = 1,
    read_timeout: float = 2.0,
    trace_memory: bool = True,
    cancel_every: int = 0,
) -> Report:
    """Run the soak and return its report (see the module docstring)."""
    report = Report(
        runs=runs,
        streamed=runs // 2,
        concurrency=concurrency,
        fault_rate=fault_rate,
        seed=seed,
        cancel_every=cancel_every,
    )
    if trace_memory:
        tracemalloc.start()
    server = ServerChild(fault_rate, seed)
    try:
        soak = Soak(report, server, read_timeout)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ResourceWarning)
            anyio.run(soak.main)
            gc.collect()
        report.resource_warnings = [
            str(w.message)[:200] for w in caught if issubclass(w.category, ResourceWarning)
        ]
    finally:
        # The counts include the warm-up runs' requests, which drew from the mix too.
        faults = server.stop()
    report.faults = dict(sorted(faults.items(), key=lambda kv: -kv[1]))
    gc.collect()
    report.after_stop = Resources.now(None)
    if trace_memory:
        tracemalloc.stop()
    return report


def print_table(report: Report) -> None:
    def row(name: str, value: object) -> None:
        print(f"  {name:<34} {value}")

    print(
        f"soak: {report.runs} runs ({report.streamed} streamed), {report.concurrency} at a time, "
        f"fault rate {report.fault_rate:.0%}, seed {report.seed}"
    )
    row("wall time", f"{report.wall:.1f} s ({report.runs / max(report.wall, 1e-9):.0f} runs/s)")
    row("run latency p50 / p99", f"{report.latency_p50:.2f} s / {report.latency_p99:.2f} s")
    row("faults injected", sum(report.faults.values()))
    for kind, count in report.faults.items():
        row(f"  {kind}", count)
    row("outcomes", "")
    for kind, count in report.outcomes.items():
        row(f"  {kind}", count)
    row("  of which in streamed runs", report.errors_in_streamed_runs)
    row("tool calls executed / recorded", f"{report.executed_calls} / {report.recorded_calls}")
    row(
        "ran twice / lost / recorded twice",
        f"{len(report.ran_twice)} / {len(report.lost)} / {len(report.recorded_twice)}",
    )
    b, a, s = report.before, report.after_aclose, report.after_stop
    if b and a and s:
        row("threads before / after aclose", f"{b.threads} / {a.threads}")
        row("asyncio tasks before / after aclose", f"{b.tasks} / {a.tasks}")
        row("fds before / after aclose", f"{b.fds} / {a.fds}")
        row("client sockets after aclose", a.client_sockets)
        row("RSS before / after (MB)", f"{b.rss / 2**20:.1f} / {s.rss / 2**20:.1f}")
        if b.traced:
            row(
                "traced memory before / after aclose (MB)", f"{b.traced / 2**20:.2f} / {a.traced / 2**20:.2f}"
            )
    for line in report.memory_top:
        print(f"    {line}")
    failures = report.failures()
    print("result: " + ("PASS" if not failures else "FAIL\n  " + "\n  ".join(failures)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=int(os.environ.get("AGENT_SOAK_RUNS", "1000")))
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--fault-rate", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--read-timeout", type=float, default=2.0)
    parser.add_argument(
        "--cancel-every", type=int, default=0, help="leave every n-th streamed run early (run_stream)"
    )
    parser.add_argument("--no-tracemalloc", action="store_true", help="faster; no memory check")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.fault_rate, args.seed)
        return
    report = run_soak(
        args.runs,
        concurrency=args.concurrency,
        fault_rate=args.fault_rate,
        seed=args.seed,
        read_timeout=args.read_timeout,
        trace_memory=not args.no_tracemalloc,
        cancel_every=args.cancel_every,
    )
    if args.json:
        print(report.as_json())
    else:
        print_table(report)
    sys.exit(1 if report.failures() else 0)


if __name__ == "__main__":
    main()
