"""Approvals on the command line: ``agent run`` asks on a terminal, decides with --approve-all /
--deny-all, or pauses (exit 4) with its state in --state-file; ``agent resume`` goes on from it."""

from __future__ import annotations

import io
import json
import os
import pty
import select
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio
import pytest
from rich.console import Console
from typer.testing import CliRunner, Result

from agent import ApprovalRequested, ToolCallStarted, approve, deny
from agent import _cli as cli
from agent._cli_approvals import TerminalApprover, schema_check, shown
from agent._console import RunDisplay
from agent.localmodel import LocalModelServer, ScriptPolicy
from tests.test_cli import AGENT_SCRIPT, process_env

TOOLS_MODULE = '''"""Tools for the approval tests: each appends its name to $APPROVAL_JOURNAL when it runs."""
import os

from agent import tool


def _ran(name):
    with open(os.environ["APPROVAL_JOURNAL"], "a") as journal:
        journal.write(name + "\\n")


@tool(needs_approval=True)
def send_mail(to: str, body: str) -> str:
    """Send an e-mail."""
    _ran("send_mail")
    return f"mail sent to {to}"


@tool(needs_approval=lambda ctx, args: args["amount"] > 100)
def pay(amount: int) -> str:
    """Pay an amount; above 100 it needs approval."""
    _ran("pay")
    return f"paid {amount}"


@tool
def find_invoice(number: int) -> str:
    """Look an invoice up."""
    _ran("find_invoice")
    return f"invoice {number}: 250 euros"


@tool
def check_budget() -> str:
    """What is left of the budget."""
    _ran("check_budget")
    return "1000 euros left"


tools = [find_invoice, check_budget, pay, send_mail]
'''
TOOLS = "approval_cli_tools:tools"
PROMPT = 'Find invoice number 42, check the budget, pay amount 250 and send mail to "bob@example.com".'
UNASKED = ["check_budget", "find_invoice"]
DENIED_BY = "tool '{}' was not run: denied by the user: {}"

runner = CliRunner()


@pytest.fixture(scope="session")
def tools_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding the tools module (the command imports it from its working directory)."""
    directory = tmp_path_factory.mktemp("approval-tools")
    (directory / "approval_cli_tools.py").write_text(TOOLS_MODULE)
    return directory


@pytest.fixture(autouse=True)
def _tools_importable(tools_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The tools module importable by the commands run in this process."""
    monkeypatch.syspath_prepend(str(tools_dir))


@pytest.fixture
def journal(tmp_path: Path) -> Path:
    """The file the tools write to."""
    return tmp_path / "journal.txt"


def ran(journal: Path) -> list[str]:
    """The tools that ran, sorted (the calls of one turn run concurrently)."""
    return sorted(journal.read_text().split()) if journal.exists() else []


def invoke(*args: str, journal: Path, env: Mapping[str, str | None] | None = None) -> Result:
    """``agent ARGS`` in-process (no terminal), on the embedded local model unless ``env`` says."""
    base: dict[str, str | None] = {"OPENAI_BASE_URL": None, "OPENAI_API_KEY": None}
    environment = {**base, "APPROVAL_JOURNAL": str(journal), **(env or {})}
    return runner.invoke(cli.app, list(args), env=environment)


def agent(*args: str | Path, journal: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``agent ARGS`` as a real process without a terminal (stdin from /dev/null)."""
    return subprocess.run(
        [str(AGENT_SCRIPT), *map(str, args)],
        check=False,
        env=process_env(APPROVAL_JOURNAL=str(journal)),
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )


def waiting(state_file: Path) -> dict[str, str]:
    """Tool name -> call id of the calls a saved state waits for."""
    state = json.loads(state_file.read_text())
    return {entry["tool_name"]: entry["call_id"] for entry in state["awaiting"]}


@pytest.fixture
def paused_in_a_process(journal: Path, tools_dir: Path, tmp_path: Path) -> Path:
    """A run paused in a process that has exited, its state in ``run.json``."""
    state_file = tmp_path / "run.json"
    done = agent("run", PROMPT, "--tools", TOOLS, "--state-file", state_file, journal=journal, cwd=tools_dir)
    assert done.returncode == 4, done.stderr
    return state_file


@pytest.fixture
def paused(journal: Path, tmp_path: Path) -> Path:
    """A run paused by ``agent run`` in this process (quicker), its state in ``run.json``."""
    state_file = tmp_path / "run.json"
    result = invoke("run", PROMPT, "--tools", TOOLS, "--state-file", str(state_file), journal=journal)
    assert result.exit_code == 4, result.output
    return state_file


# --- agent run: deciding without asking ----------------------------------------------------


def test_approve_all_runs_every_call(journal: Path) -> None:
    """--approve-all: the calls that need approval run without a question, and the run completes."""
    result = invoke("run", PROMPT, "--tools", TOOLS, "--approve-all", journal=journal)
    assert result.exit_code == 0, result.output
    assert ran(journal) == [*UNASKED, "pay", "send_mail"]
    assert "pay: paid 250" in result.stdout.splitlines()


def test_deny_all_denies_every_call_that_needs_approval(journal: Path) -> None:
    """--deny-all: pay and send_mail never run; the model reads why; stderr names them."""
    result = invoke("run", PROMPT, "--tools", TOOLS, "--deny-all", journal=journal)
    assert result.exit_code == 0, result.output
    assert ran(journal) == UNASKED
    reason = "denied on the command line (--deny-all)"
    assert (
        f"pay: {json.dumps({'error': {'type': 'denied', 'message': DENIED_BY.format('pay', reason)}})}"
        in (result.stdout.splitlines())
    )
    assert "denied send_mail" in result.stderr


def test_approve_all_with_deny_all_exits_2(journal: Path) -> None:
    """Both flags at once are a caller mistake: exit 2, nothing runs."""
    result = invoke("run", PROMPT, "--tools", TOOLS, "--approve-all", "--deny-all", journal=journal)
    assert result.exit_code == 2
    assert "either --approve-all or --deny-all" in result.stderr
    assert ran(journal) == []


def test_a_state_file_in_a_missing_directory_exits_2_before_the_run(journal: Path, tmp_path: Path) -> None:
    """--state-file where no file can be written is refused before anything runs."""
    state_file = tmp_path / "missing" / "run.json"
    result = invoke("run", PROMPT, "--tools", TOOLS, "--state-file", str(state_file), journal=journal)
    assert result.exit_code == 2
    assert "no such directory" in result.stderr
    assert ran(journal) == []


def test_call_ids_from_the_model_reach_stderr_escaped(journal: Path, tmp_path: Path) -> None:
    """A call id holding an escape sequence is printed escaped in the pause's lines."""
    script = ScriptPolicy(
        [
            [
                {
                    "type": "function_call",
                    "call_id": "call_\x1b[2J",
                    "name": "pay",
                    "arguments": '{"amount": 500}',
                }
            ]
        ]
    )
    with LocalModelServer(script) as server:
        env = {"OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": "local"}
        result = invoke("run", "go", "--tools", TOOLS, journal=journal, env=env)
    assert result.exit_code == 4
    assert "pay (call_\\u001b[2J)" in result.stderr
    assert "\x1b" not in result.stderr


def test_approval_flags_with_durable_exit_2(journal: Path, tmp_path: Path) -> None:
    """--approve-all, --deny-all and --state-file are for runs in this process: with --durable, exit 2."""
    durable = f"sqlite:///{tmp_path / 'runs.sqlite'}"
    result = invoke("run", PROMPT, "--tools", TOOLS, "--approve-all", "--durable", durable, journal=journal)
    assert result.exit_code == 2
    assert "not --durable" in result.stderr


# --- agent run: pausing without a terminal --------------------------------------------------


def test_without_a_terminal_the_run_pauses_with_exit_4_and_its_state_file(
    paused_in_a_process: Path, journal: Path
) -> None:
    """No terminal, no flag: the other calls ran, pay and send_mail wait in the state file."""
    assert sorted(waiting(paused_in_a_process)) == ["pay", "send_mail"]
    assert ran(journal) == UNASKED


def test_a_paused_run_says_how_many_calls_wait_and_how_to_resume(journal: Path, tmp_path: Path) -> None:
    """stderr: the calls waiting, where the state is, the resume command; stdout: nothing."""
    state_file = tmp_path / "run.json"
    result = invoke("run", PROMPT, "--tools", TOOLS, "--state-file", str(state_file), journal=journal)
    ids = waiting(state_file)
    assert result.exit_code == 4
    assert f"paused: 2 calls wait for approval: pay ({ids['pay']}), send_mail ({ids['send_mail']})" in (
        result.stderr
    )
    assert f"agent resume {state_file} --tools {TOOLS} --approve CALL_ID" in result.stderr
    assert result.stdout == ""


def test_a_paused_run_without_state_file_says_the_state_was_not_saved(journal: Path) -> None:
    """Without --state-file (nor --json) the state is lost, and stderr says how to keep it."""
    result = invoke("run", PROMPT, "--tools", TOOLS, journal=journal)
    assert result.exit_code == 4
    assert "the state was not saved: run again with --state-file PATH" in result.stderr


def test_json_holds_the_pending_approvals_and_the_state(journal: Path, tmp_path: Path) -> None:
    """--json: the RunResult document, status awaiting_approval, with pending_approvals and state."""
    state_file = tmp_path / "run.json"
    result = invoke(
        "run", PROMPT, "--tools", TOOLS, "--json", "--state-file", str(state_file), journal=journal
    )
    document = json.loads(result.stdout)
    assert result.exit_code == 4
    assert document["status"] == "awaiting_approval"
    assert [(p["tool_name"], p["arguments"]) for p in document["pending_approvals"]] == [
        ("pay", '{"amount":250}'),
        ("send_mail", '{"to":"bob@example.com","body":"example"}'),
    ]
    assert document["state"] == json.loads(state_file.read_text())
    assert document["state"]["format"] == "agent-runtime/run-state"


# --- agent resume ------------------------------------------------------------------------------


def test_resume_in_a_new_process_runs_the_approved_call_once_and_never_the_denied(
    paused_in_a_process: Path, journal: Path, tools_dir: Path
) -> None:
    """agent resume --approve pay --deny send_mail=REASON: pay runs once, the answer has both outcomes."""
    ids = waiting(paused_in_a_process)
    args = ["--tools", TOOLS, "--approve", ids["pay"], "--deny", f"{ids['send_mail']}=not today"]
    done = agent("resume", paused_in_a_process, *args, journal=journal, cwd=tools_dir)
    assert done.returncode == 0, done.stderr
    assert ran(journal) == [*UNASKED, "pay"]
    lines = done.stdout.splitlines()
    assert "pay: paid 250" in lines
    denied = {"error": {"type": "denied", "message": DENIED_BY.format("send_mail", "not today")}}
    assert f"send_mail: {json.dumps(denied)}" in lines


def test_resume_denies_a_call_it_is_not_told_about_and_says_so(paused: Path, journal: Path) -> None:
    """Only pay is approved: send_mail is denied, never runs, and stderr says why."""
    ids = waiting(paused)
    result = invoke("resume", str(paused), "--tools", TOOLS, "--approve", ids["pay"], journal=journal)
    assert result.exit_code == 0, result.output
    assert ran(journal) == [*UNASKED, "pay"]
    assert f"denied send_mail ({ids['send_mail']}): not named by --approve or --deny" in result.stderr


def test_resuming_the_same_file_twice_runs_the_approved_call_once(paused: Path, journal: Path) -> None:
    """The resume writes what it ran back into the file: a second resume reuses the payment."""
    ids = waiting(paused)
    args = ("resume", str(paused), "--tools", TOOLS, "--approve", ids["pay"])
    first = invoke(*args, journal=journal)
    second = invoke(*args, journal=journal)
    assert (first.exit_code, second.exit_code) == (0, 0), second.output
    assert ran(journal) == [*UNASKED, "pay"]
    assert second.stdout == first.stdout
    assert f"pay ({ids['pay']}) ran when this state was resumed before: its result is reused" in second.stderr


def test_resume_json_prints_the_whole_run(paused: Path, journal: Path) -> None:
    """agent resume --json: the RunResult of the whole run, every call's outcome, status completed."""
    ids = waiting(paused)
    result = invoke("resume", str(paused), "--tools", TOOLS, "--approve-all", "--json", journal=journal)
    document = json.loads(result.stdout)
    assert result.exit_code == 0, result.output
    assert document["status"] == "completed"
    kinds = {call["call_id"]: call["kind"] for call in document["tool_calls"]}
    assert (kinds[ids["pay"]], kinds[ids["send_mail"]]) == ("ok", "ok")
    assert (document["pending_approvals"], document["state"]) == ([], None)


@pytest.mark.parametrize(
    ("decide", "mentions"),
    [
        (["--approve", "call_other_run"], "no call 'call_other_run' waits in this state"),
        (["--deny", "call_other_run=no"], "no call 'call_other_run' waits in this state"),
        (["--approve", "{pay}", "--deny", "{pay}"], "is both approved and denied"),
    ],
)
def test_resume_with_bad_call_ids_exits_2_and_runs_nothing(
    paused: Path, journal: Path, decide: list[str], mentions: str
) -> None:
    """A call id the state does not wait for, or one approved and denied at once: exit 2."""
    ids = waiting(paused)
    args = [part.format(**ids) for part in decide]
    result = invoke("resume", str(paused), "--tools", TOOLS, *args, journal=journal)
    assert result.exit_code == 2
    assert mentions in result.stderr
    assert ran(journal) == UNASKED


def tampered(state: dict[str, Any]) -> str:
    state["awaiting"][0]["arguments"] = '{"amount": 99999}'
    return json.dumps(state)


@pytest.mark.parametrize(
    ("content", "mentions"),
    [
        (None, "cannot read the state file"),
        (lambda state: "{not json", "is not JSON"),
        (lambda state: "[1, 2]", "does not hold a run state"),
        (lambda state: json.dumps({"format": "other"}), "not a run state saved by agent-runtime"),
        (tampered, "the run state was changed after it was saved"),
    ],
)
def test_resume_refuses_a_bad_state_file_with_exit_2(
    paused: Path, journal: Path, tmp_path: Path, content: Any, mentions: str
) -> None:
    """A missing, non-JSON, foreign or tampered state file: one error line, exit 2, nothing runs."""
    target = tmp_path / "bad.json"
    if content is not None:
        target.write_text(content(json.loads(paused.read_text())))
    result = invoke("resume", str(target), "--tools", TOOLS, "--approve-all", journal=journal)
    assert result.exit_code == 2
    assert mentions in result.stderr
    assert ran(journal) == UNASKED


def test_resume_without_the_paused_runs_tools_exits_2(paused: Path, journal: Path) -> None:
    """Resumed with the builtin tools, the waiting calls' tools are missing: exit 2, says --tools."""
    result = invoke("resume", str(paused), "--approve-all", journal=journal)
    assert result.exit_code == 2
    assert "resume with the paused run's --tools" in result.stderr


def test_a_resumed_run_that_pauses_again_exits_4_with_a_new_state(journal: Path, tmp_path: Path) -> None:
    """Turn 1 asks for pay, turn 2 for send_mail: resumed, the run pauses again (exit 4, new state)."""
    script = ScriptPolicy(
        [
            [{"type": "function_call", "call_id": "call_pay", "name": "pay", "arguments": '{"amount": 500}'}],
            [
                {
                    "type": "function_call",
                    "call_id": "call_mail",
                    "name": "send_mail",
                    "arguments": '{"to": "a", "body": "b"}',
                }
            ],
            [{"type": "message", "content": "done: {{outputs}}"}],
        ]
    )
    first, second = tmp_path / "first.json", tmp_path / "second.json"
    with LocalModelServer(script) as server:
        env = {"OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": "local"}
        paused = invoke("run", "go", "--tools", TOOLS, "--state-file", str(first), journal=journal, env=env)
        again = invoke(
            "resume",
            str(first),
            "--tools",
            TOOLS,
            "--approve",
            "call_pay",
            "--state-file",
            str(second),
            journal=journal,
            env=env,
        )
        done = invoke(
            "resume", str(second), "--tools", TOOLS, "--deny", "call_mail", journal=journal, env=env
        )
    assert (paused.exit_code, again.exit_code, done.exit_code) == (4, 4, 0), again.output
    assert (waiting(first), waiting(second)) == ({"pay": "call_pay"}, {"send_mail": "call_mail"})
    assert ran(journal) == ["pay"]
    assert done.stdout.startswith("done: paid 500")


# --- the terminal prompt, with injected streams ------------------------------------------------

PAY = ApprovalRequested(1, "call_pay", "pay", '{"amount": 250}')


def ask(*lines: str, event: ApprovalRequested = PAY) -> tuple[Any, str]:
    """The decision a person typing ``lines`` (then nothing: end of input) makes, and the screen."""
    output = io.StringIO()
    approver = TerminalApprover(io.StringIO("".join(f"{line}\n" for line in lines)), output)
    return approver.ask(event), output.getvalue()


@pytest.mark.parametrize("answer", ["y", "Y", "yes", " YES "])
def test_y_approves(answer: str) -> None:
    """y (or yes, any case, spaces around) approves with the model's arguments."""
    assert ask(answer)[0] == approve()


def test_n_denies_with_the_reason_typed() -> None:
    """n, then a reason: denied, and the model will read the reason."""
    assert ask("n", "over budget")[0] == deny("over budget")


def test_n_with_an_empty_reason_denies() -> None:
    """n, then an empty line: denied without a reason."""
    assert ask("no", "")[0] == deny("")


@pytest.mark.parametrize(
    "lines",
    [
        [],
        [""],
        ["   "],
        ["yess"],
        ["ye"],
        ["y y"],
        ["1"],
        ["true"],
        ["ok"],
        ["approve"],
        ["\x1b[A"],
        ["\x00"],
        ["e", ""],
        ["e", "{not json"],
        ["e", "[1, 2]"],
        ["e", "null"],
        ["e", '"y"'],
        ["e", '{"amount": "lots"}'],
    ],
)
def test_hostile_or_unclear_answers_never_approve(lines: list[str]) -> None:
    """An empty line, garbage, or edits that are not valid arguments, then the end of input: denied."""
    output = io.StringIO()
    validate = schema_check(cli.load_tools([TOOLS]))
    stream = io.StringIO("".join(f"{line}\n" for line in lines))
    decision = TerminalApprover(stream, output, validate=validate).ask(PAY)
    assert decision.approved is False
    assert "input ended" in decision.reason


def test_garbage_is_asked_again_until_a_clear_answer() -> None:
    """Unclear answers ask again (saying what is expected); a later y approves."""
    decision, screen = ask("", "maybe", "y")
    assert decision == approve()
    assert screen.count("please answer y, n or e") == 2


def test_edit_re_asks_on_invalid_json_then_approves_the_new_arguments() -> None:
    """e, bad JSON (said so), then a JSON object: approved with those arguments."""
    decision, screen = ask("e", "{amount: 5", '{"amount": 50}')
    assert decision == approve(arguments={"amount": 50})
    assert "not used: not JSON" in screen


def test_edit_validates_the_arguments_against_the_tools_schema() -> None:
    """Edited arguments that do not fit the tool's schema are refused, then valid ones approved."""
    output = io.StringIO()
    stream = io.StringIO('e\n{"amount": "lots"}\n{"amount": 7}\n')
    validate = schema_check(cli.load_tools([TOOLS]))
    decision = TerminalApprover(stream, output, validate=validate).ask(PAY)
    assert decision == approve(arguments={"amount": 7})
    assert "not used: invalid arguments: amount: Input should be a valid integer" in output.getvalue()


def test_edit_then_an_empty_line_goes_back_to_the_question() -> None:
    """e, then an empty line: back to y/n/e; n then denies."""
    assert ask("e", "", "n", "")[0] == deny("")


def test_the_question_shows_the_tool_the_call_and_the_arguments_whole() -> None:
    """The screen names the tool and call id, and shows every argument, indented JSON."""
    event = ApprovalRequested(
        1, "call_m", "send_mail", json.dumps({"to": "bob@example.com", "body": "x" * 300})
    )
    _, screen = ask("n", "", event=event)
    assert "send_mail needs your approval (call call_m)" in screen
    assert '"to": "bob@example.com"' in screen
    assert "x" * 300 in screen


@pytest.mark.parametrize("hostile", ["\x1b[2J\x1b[Hfine", "\u202etxt.exe", "\x9b31m", "a\rb"])
def test_the_arguments_are_shown_without_anything_a_terminal_would_act_on(hostile: str) -> None:
    """Escape sequences, C1 controls, bidirectional overrides and carriage returns are shown escaped."""
    assert all(c.isprintable() or c == "\n" for c in shown(json.dumps({"to": hostile}, ensure_ascii=False)))
    assert all(c.isprintable() or c == "\n" for c in shown('{"to": "' + hostile + '"'))  # not JSON


@pytest.mark.asyncio
async def test_the_question_does_not_block_the_event_loop() -> None:
    """While a person has not answered, the event loop goes on; the answer then decides."""
    read_end, write_end = os.pipe()
    with os.fdopen(read_end) as typed, io.StringIO() as output:
        approver = TerminalApprover(typed, output)
        ticks = 0
        async with anyio.create_task_group() as group:

            async def person() -> None:
                nonlocal ticks
                while ticks < 20:
                    ticks += 1
                    await anyio.sleep(0.001)
                os.write(write_end, b"y\n")

            group.start_soon(person)
            decision = await approver(PAY)
        os.close(write_end)
    assert (decision, ticks) == (approve(), 20)


def test_the_live_table_is_stopped_while_a_person_is_asked() -> None:
    """RunDisplay.paused(): the live table stops for the question and starts again after it."""
    console = Console(file=io.StringIO(), force_terminal=True)
    display = RunDisplay(console, io.StringIO(), stream_text=False)
    with display:
        display.handle(ToolCallStarted(1, "call_1", "check_budget", "{}"))
        live = display._live
        assert live is not None
        with display.paused():
            during = live.is_started
        after = live.is_started
    assert (during, after) == (False, True)


# --- the terminal prompt, in a pseudo-terminal -------------------------------------------------

_PROMPTS = (b"approve? [y]es", b"reason for the model", b"new arguments as a JSON object")


def on_a_terminal(args: list[str], answers: list[bytes], *, cwd: Path, journal: Path) -> tuple[int, str, str]:
    """Run ``agent ARGS`` with stdin and stderr on a pseudo-terminal, typing the next of
    ``answers`` at each question; its exit code, the terminal's text, and stdout."""
    primary, secondary = pty.openpty()
    env = process_env(APPROVAL_JOURNAL=str(journal), COLUMNS="120", LINES="50")
    process = subprocess.Popen(
        [str(AGENT_SCRIPT), *args],
        stdin=secondary,
        stdout=subprocess.PIPE,
        stderr=secondary,
        env=env,
        cwd=cwd,
    )
    os.close(secondary)
    screen, typed = b"", 0
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline and process.poll() is None:
            if select.select([primary], [], [], 0.1)[0]:
                try:
                    screen += os.read(primary, 65536)
                except OSError:
                    break
            if typed < len(answers) and sum(screen.count(p) for p in _PROMPTS) > typed:
                os.write(primary, answers[typed])
                typed += 1
        stdout, _ = process.communicate(timeout=30)
    finally:
        process.kill()
        os.close(primary)
    return process.returncode, screen.decode(errors="replace"), stdout.decode()


def test_on_a_terminal_each_call_is_asked_for(journal: Path, tools_dir: Path) -> None:
    """In a terminal: garbage and an empty line ask again, y approves pay, n denies send_mail."""
    answers = [b"garbage\n", b"\n", b"y\n", b"n\n", b"too risky\n"]
    code, screen, stdout = on_a_terminal(
        ["run", PROMPT, "--tools", TOOLS], answers, cwd=tools_dir, journal=journal
    )
    assert code == 0, screen
    assert "pay needs your approval" in screen
    assert "send_mail needs your approval" in screen
    assert screen.count("please answer y, n or e") == 2
    assert ran(journal) == [*UNASKED, "pay"]
    assert DENIED_BY.format("send_mail", "too risky") in stdout


def test_on_a_terminal_edited_arguments_are_the_ones_run(journal: Path, tools_dir: Path) -> None:
    """e with bad JSON asks again; valid arguments run the call with them."""
    answers = [b"e\n", b"{oops\n", b'{"amount": 120}\n', b"n\n", b"\n"]
    code, screen, stdout = on_a_terminal(
        ["run", PROMPT, "--tools", TOOLS], answers, cwd=tools_dir, journal=journal
    )
    assert code == 0, screen
    assert "not used: not JSON" in screen
    assert "pay: paid 120" in stdout.splitlines()


def test_ctrl_c_at_the_question_ends_the_command_at_once(journal: Path, tools_dir: Path) -> None:
    """Ctrl-C while a question waits: the command ends (130) without waiting for Enter; nothing runs."""
    primary, secondary = pty.openpty()
    process = subprocess.Popen(
        [str(AGENT_SCRIPT), "run", PROMPT, "--tools", TOOLS],
        stdin=secondary,
        stdout=subprocess.DEVNULL,
        stderr=secondary,
        env=process_env(APPROVAL_JOURNAL=str(journal)),
        cwd=tools_dir,
        start_new_session=True,
    )
    os.close(secondary)
    screen = b""
    try:
        deadline = time.monotonic() + 30
        while _PROMPTS[0] not in screen and time.monotonic() < deadline:
            if select.select([primary], [], [], 0.1)[0]:
                screen += os.read(primary, 65536)
        os.killpg(process.pid, 2)  # what the terminal does on Ctrl-C
        code = process.wait(timeout=10)
    finally:
        process.kill()
        os.close(primary)
    assert code in (1, 130)
    assert "pay" not in ran(journal)
