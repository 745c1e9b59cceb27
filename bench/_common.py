"""Shared plumbing for the benchmark scripts: CPU pinning, server subprocesses, tables.

Not a benchmark itself. The scripts in ``bench/`` import it as ``_common`` (they run as
``python bench/NAME.py``, which puts ``bench/`` first on ``sys.path``). It imports nothing from
``agent``, so a client process measured for memory loads only what its client needs.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

__all__ = [
    "BENCH_DIR",
    "CLIENT_CPU",
    "FANOUT_CALLS",
    "FANOUT_PREFIX",
    "SERVER_CPU",
    "ServerKind",
    "ServerProcess",
    "Table",
    "free_port",
    "median",
    "pin",
    "process_cpu_seconds",
]

BENCH_DIR = Path(__file__).resolve().parent
SERVER_CPU = 0
CLIENT_CPU = 1
FANOUT_CALLS = 16
FANOUT_PREFIX = "sleeper_"
"""The fan-out script calls ``sleeper_00`` ... ``sleeper_15``, each with ``{}``."""

ServerKind = Literal["raw", "local"]


def pin(cpu: int) -> None:
    """Pin this process to one core (a no-op where the machine has fewer cores)."""
    if cpu < (os.cpu_count() or 1):
        os.sched_setaffinity(0, {cpu})


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads), from ``/proc/PID/stat``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of the line)
    return ticks / os.sysconf("SC_CLK_TCK")


def median(values: Iterable[float]) -> float:
    """The median (of an odd or even number of values)."""
    return statistics.median(list(values))


class ServerProcess:
    """``bench/server.py serve`` in a subprocess pinned to :data:`SERVER_CPU`, until closed."""

    def __init__(self, kind: ServerKind, *, script: str = "demo", delay: float = 0.0) -> None:
        self.kind = kind
        self.port = free_port()
        command = [
            sys.executable,
            str(BENCH_DIR / "server.py"),
            "serve",
            "--kind",
            kind,
            "--script",
            script,
            "--port",
            str(self.port),
            "--delay",
            str(delay),
        ]
        self._process = subprocess.Popen(command)
        self._wait_until_listening()

    @property
    def base_url(self) -> str:
        """The ``/v1`` root to hand to a client."""
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def pid(self) -> int:
        """The server's process id (for its CPU time)."""
        return self._process.pid

    def cpu_seconds(self) -> float:
        """CPU seconds the server process has used so far."""
        return process_cpu_seconds(self.pid)

    def stats(self) -> dict[str, Any]:
        """The raw server's counters (requests, accepted connections); empty for the local one."""
        if self.kind != "raw":
            return {}
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            connection.request("GET", "/stats")
            stats: dict[str, Any] = json.loads(connection.getresponse().read())
            return stats
        finally:
            connection.close()

    def _wait_until_listening(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"the {self.kind} server exited with {self._process.returncode}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
            except OSError:
                time.sleep(0.05)
            else:
                return
        self.close()
        raise RuntimeError(f"the {self.kind} server did not listen within {timeout} s")

    def close(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 5 s)."""
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class Table:
    """A plain-text table with a header row; the first column is left-aligned, the rest right."""

    def __init__(self, *header: str) -> None:
        self.header: Sequence[str] = header
        self.rows: list[Sequence[str]] = []

    def add(self, *cells: str) -> None:
        """Append a row (as many cells as the header)."""
        self.rows.append(cells)

    def render(self) -> str:
        """The table as Markdown-compatible text."""
        lines = [self.header, *self.rows]
        widths = [max(len(str(line[i])) for line in lines) for i in range(len(self.header))]

        def fmt(cells: Sequence[str]) -> str:
            first, *rest = cells
            parts = [first.ljust(widths[0])] + [c.rjust(w) for c, w in zip(rest, widths[1:], strict=True)]
            return "| " + " | ".join(parts) + " |"

        rule = "|" + "|".join("-" * (w + 1) + ("-" if i == 0 else ":") for i, w in enumerate(widths)) + "|"
        return "\n".join([fmt(self.header), rule, *(fmt(row) for row in self.rows)])
