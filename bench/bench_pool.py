"""What the HTTP connection pool costs agent-runtime at high concurrency, and what a better one saves.

Same set-up as ``bench/bench_runs.py`` (the raw server pinned to core 0, answering after 50 ms;
each figure from a fresh client process pinned to core 1), with agent-runtime over three pools:

- ``httpx``: agent-runtime's own client (``agent._http``), which is now httpx over
  ``agent/_pool.py`` too; the bare httpx loop (``--floors``) shows httpx 0.28's own pool
  (httpcore 1.0);
- ``httpx2``: pydantic's httpx2 fork (what openai 3.x uses), through ``Agent(http_client=...)``;
- ``fastpool``: ``httpx.AsyncClient(transport=PooledTransport(...))`` (``agent/_pool.py``, the
  LIFO pool with O(1) work per request, an httpx transport), through ``Agent(http_client=...)``.

Columns: 100 and 1,000 runs at once (wall / peak RSS, GC time, connections the server
accepted), and the client CPU of one run, alone, before and after a burst of ``--burst`` runs
at once has filled the pool (a cost that stays until the idle connections expire, 30 s).
``--floors`` adds the bare-httpx-loop floor of ``bench_runs.py`` on each pool.

Run (about 80 s; ``--floors`` adds about 50 s)::

    /tmp/v/bin/python bench/bench_pool.py [--floors] [--reps 1] [--burst 300]
"""

from __future__ import annotations

import argparse
import sys
import time

from _common import ServerProcess, Table
from bench_runs import JSON, Client, Job, Transport, measure

TRANSPORTS: tuple[Transport, ...] = ("httpx", "httpx2", "fastpool")


def _row(client: Client, transport: Transport, reps: int, burst: int) -> list[str]:
    results: dict[str, JSON] = {}
    with ServerProcess("raw", delay=0.05) as server:
        for name, runs in (("d", 100), ("e", 1000)):
            job = Job("concurrent", client, "trivial", runs, server.base_url, transport=transport)
            results[name] = measure(job, server, reps)
            print(f"{client} {transport} {name}: {results[name]}", file=sys.stderr)
        if client == "agent":
            job = Job("after_burst", client, "trivial", burst, server.base_url, transport=transport)
            results["burst"] = measure(job, server, reps)
    d, e = results["d"], results["e"]
    burst_cells = ["—"]
    if "burst" in results:
        b = results["burst"]
        burst_cells = [f"{b['cpu_before_ms']:.1f} ms -> {b['cpu_after_ms']:.1f} ms"]
    return [
        f"{'agent-runtime' if client == 'agent' else 'bare httpx loop'}, {transport}",
        f"{d['wall_s']:.2f} s / {d['rss_mb']:.0f} MB",
        f"{e['wall_s']:.2f} s / {e['rss_mb']:.0f} MB",
        f"{e['cpu_s']:.2f} s",
        f"{e['gc_s']:.2f} s",
        f"{e['latency_median_s']:.2f} s",
        f"{e['connections']:.0f}",
        *burst_cells,
    ]


def main() -> None:
    """Parse the command line, measure, print the table."""
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--floors", action="store_true", help="also the bare httpx loop on each pool")
    parser.add_argument("--reps", type=int, default=1, help="fresh processes per figure (median)")
    parser.add_argument("--burst", type=int, default=300, help="runs at once before the after-burst run")
    args = parser.parse_args()
    started = time.perf_counter()
    table = Table(
        "client, pool",
        "100 at once: wall / RSS",
        "1,000 at once: wall / RSS",
        "1,000: client CPU",
        "1,000: GC",
        "1,000: median latency",
        "1,000: connections",
        f"CPU of one run, before -> after {args.burst} at once",
    )
    clients: tuple[Client, ...] = ("agent", "httpx") if args.floors else ("agent",)
    for client in clients:
        for transport in TRANSPORTS:
            table.add(*_row(client, transport, args.reps, args.burst))
    took = time.perf_counter() - started
    print(f"\n50 ms per response; medians of {args.reps} fresh client processes; {took:.0f} s in all\n")
    print(table.render())


if __name__ == "__main__":
    main()
