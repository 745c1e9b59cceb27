"""Issue 11's acceptance in real processes: ``examples/approvals.py`` pauses a run in one process,
writes its state to a file and exits; another process resumes it from the file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests._support import REPO_ROOT

EXAMPLE = REPO_ROOT / "examples" / "approvals.py"


def example(*args: str | Path, journal: Path) -> dict[str, Any]:
    """Run ``examples/approvals.py ARGS --json`` in a new process on the local model; its JSON."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    done = subprocess.run(
        [sys.executable, str(EXAMPLE), *map(str, args), "--journal", str(journal), "--json"],
        check=False,
        env=env,
        cwd=journal.parent,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    document: dict[str, Any] = json.loads(done.stdout)
    return document


def journal_lines(journal: Path) -> list[str]:
    """The tools that ran, sorted (calls of one turn run concurrently)."""
    return sorted(line.split()[0] for line in journal.read_text().splitlines())


def call_ids(paused: dict[str, Any]) -> dict[str, str]:
    return {waiting["tool_name"]: waiting["call_id"] for waiting in paused["pending_approvals"]}


@pytest.fixture
def paused(tmp_path: Path) -> dict[str, Any]:
    """The example's run, paused in a process that has exited, its state in ``run.json``."""
    return example("pause", tmp_path / "run.json", journal=tmp_path / "journal.txt")


def test_one_response_pauses_for_two_calls_after_running_the_other_two(
    paused: dict[str, Any], tmp_path: Path
) -> None:
    """The four calls come in one response: two ran, two wait, and the state is in the file."""
    assert paused["status"] == "awaiting_approval"
    assert sorted(call_ids(paused)) == ["pay", "send_mail"]
    assert [(c["name"], c["kind"], c["turn"]) for c in paused["tool_calls"]] == [
        ("find_invoice", "ok", 1),
        ("check_budget", "ok", 1),
    ]
    assert json.loads((tmp_path / "run.json").read_text())["turn"] == 1
    assert journal_lines(tmp_path / "journal.txt") == ["check_budget", "find_invoice"]


def test_resumed_in_a_new_process_runs_the_approved_call_once_and_never_the_denied(
    paused: dict[str, Any], tmp_path: Path
) -> None:
    """Resumed from the file: pay ran once, send_mail never, and the answer reports both outcomes."""
    ids = call_ids(paused)
    resumed = example(
        "resume",
        tmp_path / "run.json",
        "--approve",
        ids["pay"],
        "--deny",
        f"{ids['send_mail']}=not today",
        journal=tmp_path / "journal.txt",
    )
    assert resumed["status"] == "completed"
    assert journal_lines(tmp_path / "journal.txt") == ["check_budget", "find_invoice", "pay"]
    outcomes = {c["name"]: (c["kind"], c["call_id"]) for c in resumed["tool_calls"]}
    assert outcomes["pay"] == ("ok", ids["pay"])
    assert outcomes["send_mail"] == ("denied", ids["send_mail"])
    denied = "tool 'send_mail' was not run: denied by the user: not today"
    # The local model's answer quotes every output it was sent: it saw both outcomes.
    lines = resumed["output"].splitlines()
    assert "pay: paid 250 euros" in lines
    assert f'send_mail: {{"error": {{"type": "denied", "message": "{denied}"}}}}' in lines


def test_resuming_the_written_back_file_again_does_not_pay_twice(
    paused: dict[str, Any], tmp_path: Path
) -> None:
    """A second process resuming the same file reuses the recorded payment instead of paying again."""
    ids = call_ids(paused)
    journal = tmp_path / "journal.txt"
    first = example("resume", tmp_path / "run.json", "--approve", ids["pay"], journal=journal)
    second = example("resume", tmp_path / "run.json", "--approve", ids["pay"], journal=journal)
    assert journal_lines(journal).count("pay") == 1
    assert second["output"] == first["output"]


def test_a_call_the_resume_does_not_name_is_denied(paused: dict[str, Any], tmp_path: Path) -> None:
    """Only pay is approved: send_mail, named nowhere, is denied and never runs."""
    ids = call_ids(paused)
    resumed = example(
        "resume", tmp_path / "run.json", "--approve", ids["pay"], journal=tmp_path / "journal.txt"
    )
    kinds = {c["name"]: c["kind"] for c in resumed["tool_calls"]}
    assert (kinds["pay"], kinds["send_mail"]) == ("ok", "denied")
    assert "send_mail" not in journal_lines(tmp_path / "journal.txt")
