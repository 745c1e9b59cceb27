"""The soak (``bench/soak.py``): runs through one agent against a server failing ~20 % of requests.

Slow: run with ``AGENT_SOAK_RUNS=200 python -m pytest -m slow tests/test_soak.py``. The soak runs
once, in its own process (so its leak checks see only the agent's threads, descriptors and
memory), and each test checks one of its promises on the report.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

from tests._support import REPO_ROOT

RUNS = int(os.environ.get("AGENT_SOAK_RUNS", "200"))
Report = dict[str, Any]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60 + RUNS)]


def _soak(*options: str) -> Report:
    command = [sys.executable, str(REPO_ROOT / "bench" / "soak.py"), "--json", *options]
    done = subprocess.run(command, capture_output=True, text=True, timeout=30 + RUNS, check=False)
    assert done.stdout, done.stderr[-2000:]
    document: Report = json.loads(done.stdout)
    return document


@pytest.fixture(scope="module")
def report() -> Report:
    """The soak's JSON report, for ``AGENT_SOAK_RUNS`` runs (default 200)."""
    return _soak("--runs", str(RUNS))


@pytest.fixture(scope="module")
def left_early() -> Report:
    """A soak of half the size in which every other streamed run is left at its first tool call."""
    return _soak("--runs", str(RUNS // 2), "--cancel-every", "2", "--no-tracemalloc")


def test_half_the_runs_stream(report: Report) -> None:
    """The soak streams half of its runs."""
    assert (report["runs"], report["streamed"]) == (RUNS, RUNS // 2)


def test_about_a_fifth_of_requests_get_a_fault(report: Report) -> None:
    """Faults were injected, several kinds of them, at about the configured rate."""
    injected = sum(report["faults"].values())
    assert injected >= RUNS * 2 * 0.1
    assert len(report["faults"]) >= 5


def test_every_run_ends_with_the_answer_or_a_typed_error(report: Report) -> None:
    """No run ends with an untyped error or a wrong answer; most get the right answer."""
    assert (report["untyped"], report["wrong_answers"]) == ([], 0)
    assert report["outcomes"].get("answer", 0) >= RUNS * 0.8


def test_every_executed_call_is_recorded_exactly_once(report: Report) -> None:
    """Each call id the tools executed appears once in the results; none ran twice or vanished."""
    accounting = {k: report[k] for k in ("ran_twice", "lost", "recorded_twice", "ok_without_execution")}
    assert accounting == {"ran_twice": [], "lost": [], "recorded_twice": [], "ok_without_execution": []}
    assert report["executed_calls"] > 0


def test_nothing_is_left_over_after_aclose(report: Report) -> None:
    """After aclose(): no extra thread, asyncio task, file descriptor or client socket."""
    assert report["leftovers"] == {"threads": 0, "tasks": 0, "fds": 0, "client_sockets": 0}


def test_no_socket_is_left_unclosed(report: Report) -> None:
    """No ResourceWarning (an unclosed socket or transport) is raised during the soak."""
    assert report["resource_warnings"] == []


def test_traced_memory_returns_near_its_start(report: Report) -> None:
    """Traced memory after the soak is within 2 MB of where it started."""
    assert report["memory_growth"] < 2 * 1024 * 1024


def test_runs_left_early_run_no_call_twice(left_early: Report) -> None:
    """Runs cancelled by leaving run_stream early run no call twice; finished runs lose none."""
    accounting = {k: left_early[k] for k in ("ran_twice", "lost", "recorded_twice", "ok_without_execution")}
    assert accounting == {"ran_twice": [], "lost": [], "recorded_twice": [], "ok_without_execution": []}
    assert (left_early["untyped"], left_early["outcomes"].get("left early", 0) > 0) == ([], True)


def test_runs_left_early_leave_no_socket_unclosed(left_early: Report) -> None:
    """Leaving run_stream early closes the run's connection: no ResourceWarning, nothing left over."""
    assert (left_early["resource_warnings"], left_early["leftovers"]) == (
        [],
        {"threads": 0, "tasks": 0, "fds": 0, "client_sockets": 0},
    )
