"""Processes of the MCP fixture server for the tests: started, waited for, stopped by PID, found if leaked.

No pytest fixtures here (the tests build theirs); every wait polls with a deadline.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import anyio
import httpx
import psutil

FIXTURE_SERVER = Path(__file__).resolve().with_name("mcp_fixture_server.py")
START_TIMEOUT = 20.0
"""Seconds a fixture server may take to answer its first request (the machine is loaded)."""


def stdio_command(journal: Path | None = None, *, legacy: bool = False) -> list[str]:
    """The command line of the fixture server over stdio, for `mcp_stdio` (`legacy`: 2025 protocol only)."""
    return [sys.executable, str(FIXTURE_SERVER), "--transport", "stdio", *_options(journal, legacy)]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class HTTPServerProcess:
    """A fixture server over streamable HTTP in a child process."""

    process: subprocess.Popen[bytes]
    port: int
    journal: Path | None
    legacy: bool
    log: IO[bytes]

    @property
    def url(self) -> str:
        """The MCP endpoint, `http://127.0.0.1:PORT/mcp`."""
        return f"http://127.0.0.1:{self.port}/mcp"

    @property
    def pid(self) -> int:
        return self.process.pid

    def kill(self) -> None:
        """kill -9, and reap it."""
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        """SIGTERM by PID, SIGKILL if it is still there after 5 s; reaped either way."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.kill()
        self.log.close()

    def restart(self) -> HTTPServerProcess:
        """A new server process on the same port, once this one is stopped."""
        self.stop()
        return start_http_server(self.journal, port=self.port, legacy=self.legacy)

    def output(self) -> str:
        """What the server wrote on stdout and stderr so far."""
        self.log.flush()
        self.log.seek(0)
        return self.log.read().decode(errors="replace")


def start_http_server(
    journal: Path | None = None, *, port: int | None = None, legacy: bool = False
) -> HTTPServerProcess:
    """Start the fixture server over HTTP on 127.0.0.1 and return once it answers HTTP.

    Without `port` a free one is chosen (and another, should a race take it first); `legacy`: it
    speaks only the 2025 protocol.
    """
    attempts = 1 if port is not None else 3
    for _ in range(attempts):
        server = _spawn(journal, port if port is not None else free_port(), legacy)
        if _wait_until_answering(server):
            return server
        server.stop()
    raise RuntimeError(f"the MCP fixture server did not start:\n{server.output()}")


@contextmanager
def http_server(
    journal: Path | None = None, *, port: int | None = None, legacy: bool = False
) -> Iterator[HTTPServerProcess]:
    """`start_http_server`, stopped at exit."""
    server = start_http_server(journal, port=port, legacy=legacy)
    try:
        yield server
    finally:
        server.stop()


def _options(journal: Path | None, legacy: bool) -> list[str]:
    return [*(["--journal", str(journal)] if journal is not None else []), *(["--legacy"] if legacy else [])]


def _spawn(journal: Path | None, port: int, legacy: bool) -> HTTPServerProcess:
    log = tempfile.TemporaryFile()  # noqa: SIM115 - the process writes it until stop() closes it
    command = [sys.executable, str(FIXTURE_SERVER), "--transport", "http", "--port", str(port)]
    process = subprocess.Popen([*command, *_options(journal, legacy)], stdout=log, stderr=log)
    return HTTPServerProcess(process, port, journal, legacy, log)


def _wait_until_answering(server: HTTPServerProcess) -> bool:
    """Poll until any HTTP answer comes from the server; False if it exits first."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            return False
        try:
            httpx.get(server.url, timeout=1.0)
        except httpx.TransportError:
            time.sleep(0.05)
        else:
            return True
    raise RuntimeError(f"the MCP fixture server did not answer within {START_TIMEOUT} s:\n{server.output()}")


def fixture_processes() -> list[psutil.Process]:
    """The live fixture-server processes descending from this process (none once all is closed)."""
    return descendants_mentioning(str(FIXTURE_SERVER))


def descendants_mentioning(text: str) -> list[psutil.Process]:
    """The live (not zombie) descendants of this process with ``text`` in a word of their command line."""
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if child.status() != psutil.STATUS_ZOMBIE and any(text in word for word in child.cmdline()):
                found.append(child)
        except psutil.NoSuchProcess:
            continue
    return found


async def eventually(condition: Callable[[], bool], *, timeout: float, what: str) -> None:
    """Poll `condition` every 20 ms (without blocking the event loop) until it holds; fail naming
    `what` after `timeout` seconds."""
    with anyio.move_on_after(timeout):
        while not condition():
            await anyio.sleep(0.02)
        return
    raise AssertionError(f"not within {timeout} s: {what}")
