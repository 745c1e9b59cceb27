"""Load: 100, 1,000 and 10,000 concurrent runs through one agent, 50 ms per model response.

The API page's scenario (turn 1: four parallel function calls; turn 2: the answer) with the four
trivial async tools of ``bench_runs.py``, all runs started at once (``asyncio.gather``) on one
``Agent`` with its defaults. The server is ``bench/server.py``'s raw responder in its own
process pinned to core 0, answering every request after 50 ms; each measurement runs in a fresh
client process pinned to core 1, after one warm-up run. Per run count it prints:

- runs/s (runs / wall time of the burst), and the p50 / p99 run latency, from the moment all
  runs were asked for (what a caller of ``gather`` sees);
- peak RSS of the client process (``ru_maxrss``), and memory per in-flight run: (peak RSS -
  RSS before the burst) / the most runs in flight at once;
- errors: runs that raised, or whose answer differs from the warm-up run's (must be 0);
- client CPU per run (``time.process_time``), and its ratio to the CPU per run at the smallest
  count measured that is at least 1,000 (cost must grow linearly with the work);
- time in cyclic GC (``gc.callbacks``) as a share of the wall time, and the objects the cyclic
  GC freed per run (reference cycles a run left behind for it; 0 when runs make none);
- how the event loop's thread spent the wall time (``/proc/thread-self/schedstat``): the share
  it slept with nothing to do ("loop idle": the client waited for the server although runs were
  waiting, which the request limit must not cause), and the share it was ready to run but other
  processes had the core ("waited": the machine was busy; runs/s and latency suffer from it,
  client CPU per run and the GC's seconds do not).

Process-wide GC settings are left as Python sets them: no ``gc.freeze``, no thresholds.

Run (about 1 min; ``--reps 1`` for a quick look)::

    .venv/bin/python bench/bench_load.py                         # 100, 1,000 and 10,000 runs
    .venv/bin/python bench/bench_load.py --runs 1000,10000 --reps 5
    .venv/bin/python bench/bench_load.py --max-connections 32    # fewer requests in flight
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
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import _common
from _common import BENCH_DIR, CLIENT_CPU, ServerProcess, Table
from bench_runs import AgentRunner, Job, ToolSet

JSON = dict[str, Any]
DELAY = 0.05
"""Seconds the server waits before each answer: the model's latency."""


@dataclass(frozen=True)
class LoadJob:
    """One burst of ``runs`` concurrent runs, measured in a fresh process."""

    runs: int
    base_url: str
    tools: ToolSet = "trivial"
    max_connections: int = 0
    """0: the agent's default (512)."""


@dataclass
class GcTimer:
    """Seconds in cyclic GC, collections per generation, and objects it freed (``gc.callbacks``)."""

    seconds: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    collections: list[int] = field(default_factory=lambda: [0, 0, 0])
    collected: int = 0
    _started: float = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        self.seconds[info["generation"]] += time.perf_counter() - self._started
        self.collections[info["generation"]] += 1
        self.collected += info["collected"]


def current_rss_mb() -> float:
    """This process's resident set size now (``VmRSS``), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def loop_thread_times() -> tuple[float, float]:
    """Seconds this (event loop's) thread ran, and waited to run behind other processes.

    From ``/proc/thread-self/schedstat``: whatever is neither is time the loop slept, waiting for
    the server with nothing to do.
    """
    ran, waited, _ = Path("/proc/thread-self/schedstat").read_text().split()
    return int(ran) / 1e9, int(waited) / 1e9


def peak_rss_mb() -> float:
    """The most this process has held so far (``ru_maxrss``), in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Burst:
    """Runs started together; counts those in flight and when each finished."""

    def __init__(self, runner: AgentRunner, expected: str) -> None:
        self._runner = runner
        self._expected = expected
        self.in_flight = 0
        self.peak_in_flight = 0
        self.errors = 0
        self.latencies: list[float] = []
        self.started = 0.0

    async def run(self, count: int) -> float:
        """Run ``count`` runs at once; the wall time."""
        self.started = time.perf_counter()
        await asyncio.gather(*(self._one() for _ in range(count)))
        return time.perf_counter() - self.started

    async def _one(self) -> None:
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            output = await self._runner.run()
        except Exception:
            self.errors += 1
        else:
            self.errors += output != self._expected
        finally:
            self.in_flight -= 1
            self.latencies.append(time.perf_counter() - self.started)


def percentile(values: list[float], share: float) -> float:
    """The value below which ``share`` of ``values`` lie (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))]


async def measure_burst(job: LoadJob) -> JSON:
    """The burst's figures, in this (fresh) process."""
    spec = Job("concurrent", "agent", job.tools, job.runs, job.base_url, job.max_connections)
    async with AgentRunner(spec) as runner:
        assert isinstance(runner, AgentRunner)
        burst = Burst(runner, await runner.run())
        gc.collect()
        rss_before = current_rss_mb()
        timer = GcTimer()
        gc.callbacks.append(timer)
        cpu = time.process_time()
        ran, waited = loop_thread_times()
        wall = await burst.run(job.runs)
        cpu = time.process_time() - cpu
        ran_after, waited_after = loop_thread_times()
        gc.callbacks.remove(timer)
    peak = peak_rss_mb()
    return {
        "runs": job.runs,
        "runs_per_s": job.runs / wall,
        "p50_s": percentile(burst.latencies, 0.5),
        "p99_s": percentile(burst.latencies, 0.99),
        "rss_before_mb": rss_before,
        "peak_rss_mb": peak,
        "peak_in_flight": burst.peak_in_flight,
        "kb_per_run": (peak - rss_before) * 1024 / burst.peak_in_flight,
        "errors": burst.errors,
        "cpu_ms_per_run": cpu / job.runs * 1e3,
        "wall_s": wall,
        "loop_idle_share": 1 - (ran_after - ran + waited_after - waited) / wall,
        "cpu_waited_share": (waited_after - waited) / wall,
        "gc_s": sum(timer.seconds),
        "gc_share": sum(timer.seconds) / wall,
        "gc_s_by_generation": timer.seconds,
        "gc_collections": timer.collections,
        "gc_freed_per_run": timer.collected / job.runs,
    }


def worker(spec: str) -> None:
    """Measure one burst in this fresh process, pinned to the client core; print its JSON."""
    _common.pin(CLIENT_CPU)
    print(json.dumps(asyncio.run(measure_burst(LoadJob(**json.loads(spec))))))


def measure(job: LoadJob, reps: int) -> JSON:
    """The burst in ``reps`` fresh processes: the median of each figure (errors: the sum)."""
    results: list[JSON] = []
    for _ in range(reps):
        command = [sys.executable, str(BENCH_DIR / "bench_load.py"), "--worker", json.dumps(asdict(job))]
        output = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True).stdout
        result: JSON = json.loads(output.strip().splitlines()[-1])
        print(f"{job.runs:>6} runs: {json.dumps(result)}", file=sys.stderr)
        results.append(result)
    merged: JSON = {"errors": sum(r["errors"] for r in results)}
    for key, value in results[0].items():
        if key not in merged:
            numeric = isinstance(value, int | float)
            merged[key] = statistics.median(r[key] for r in results) if numeric else value
    return merged


def render(results: list[JSON]) -> str:
    """The table, one row per run count."""
    base = next((r for r in results if r["runs"] >= 1000), results[0])
    table = Table(
        "concurrent runs",
        "runs/s",
        "p50 / p99 latency",
        "peak RSS",
        "per in-flight run",
        "errors",
        "client CPU per run",
        f"vs {base['runs']:,}",
        "cyclic GC (of wall)",
        "GC-freed objects per run",
        "loop idle / waited",
    )
    for r in results:
        table.add(
            f"{r['runs']:,}",
            f"{r['runs_per_s']:,.0f}",
            f"{r['p50_s']:.2f} s / {r['p99_s']:.2f} s",
            f"{r['peak_rss_mb']:.0f} MB",
            f"{r['kb_per_run']:.1f} KB",
            str(r["errors"]),
            f"{r['cpu_ms_per_run']:.2f} ms",
            f"{r['cpu_ms_per_run'] / base['cpu_ms_per_run']:.2f}x",
            f"{r['gc_s']:.2f} s ({r['gc_share']:.0%})",
            f"{r['gc_freed_per_run']:.0f}",
            f"{r['loop_idle_share']:.0%} / {r['cpu_waited_share']:.0%}",
        )
    return table.render()


def main() -> None:
    """Parse the command line; measure every run count (or be one worker)."""
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--runs", default="100,1000,10000", help="run counts, comma-separated")
    parser.add_argument("--reps", type=int, default=3, help="fresh client processes per count (median)")
    parser.add_argument("--tools", choices=["trivial", "builtin"], default="trivial")
    parser.add_argument("--max-connections", type=int, default=0, help="the agent's (default: its own, 512)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker)
        return
    counts = [int(n) for n in args.runs.split(",")]
    started = time.perf_counter()
    with ServerProcess("raw", script="demo", delay=DELAY) as server:
        jobs = [LoadJob(n, server.base_url, args.tools, args.max_connections) for n in counts]
        results = [measure(job, args.reps) for job in jobs]
    took = time.perf_counter() - started
    print(
        f"\n{args.tools} tools; max_connections {args.max_connections or 'default'}; server: raw, "
        f"{DELAY * 1e3:.0f} ms per response; medians of {args.reps} "
        f"fresh client processes; {took:.0f} s in all; python {sys.version.split()[0]}, pid {os.getpid()}"
        f"\n\n{render(results)}"
    )


if __name__ == "__main__":
    main()
