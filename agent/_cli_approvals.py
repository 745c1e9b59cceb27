"""Approvals on the command line: the terminal prompt, ``--approve-all`` / ``--deny-all``, a run
that pauses (exit code 4, its state to ``--state-file``), and ``agent resume``'s decisions.

On a terminal (stdin and stderr both are) each call that needs approval is asked for, one at a
time: ``y`` runs it, ``n`` denies it (with an optional reason), ``e`` runs it with arguments
typed anew (JSON, validated like the model's). Only ``y`` (or ``yes``), or valid edited
arguments, approve: an empty line or anything else asks again, and the end of the input denies.
The question is asked in a daemon thread, so the run's other calls go on meanwhile (and Ctrl-C
ends the command at once).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
import tempfile
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, NoReturn, TextIO

import anyio
import anyio.from_thread
import anyio.lowlevel
import typer
from rich.console import Console
from rich.text import Text

from agent._agent import Agent
from agent._approvals import Decision, approve, deny
from agent._arguments import ArgumentsError
from agent._console import RunDisplay
from agent._errors import UsageError
from agent._events import ApprovalRequested, OnApproval
from agent._registry import ToolRegistry
from agent._result import JSONObject, RunResult
from agent._resume import resumption

__all__ = [
    "PAUSED_EXIT",
    "Approvals",
    "ApproveAllOption",
    "DenyAllOption",
    "StateFileOption",
    "TerminalApprover",
    "read_state",
    "resume_decisions",
    "resume_decisions_for",
    "resume_runner",
    "waiting_calls",
    "write_state",
]

PAUSED_EXIT = 4
"""Exit code of a run that paused for approvals (``status: awaiting_approval``)."""

DENIED_ALL = "denied on the command line (--deny-all)"
"""The reason the model reads for a call ``--deny-all`` denied."""

NOT_NAMED = "not approved when the run was resumed"
"""The reason the model reads for a waiting call ``agent resume`` was not told to approve."""

ApproveAllOption = Annotated[
    bool, typer.Option("--approve-all", help="Approve every call that needs approval, without asking.")
]
DenyAllOption = Annotated[
    bool, typer.Option("--deny-all", help="Deny every call that needs approval, without asking.")
]
StateFileOption = Annotated[
    Path | None,
    typer.Option(
        "--state-file",
        help="Where to write the run's state if it pauses for approvals (for agent resume).",
        show_default=False,
    ),
]

_stderr = Console(stderr=True)

Validate = Callable[[str, str], str | None]
"""``validate(tool_name, arguments_json)``: why edited arguments are refused, or ``None``."""


class TerminalApprover:
    """An ``on_approval`` policy that asks a person, on ``output``, reading answers from ``input``.

    ``pause`` is entered around each question (the CLI stops its live table then);
    ``validate`` checks edited arguments against the tool's schema.
    """

    def __init__(
        self,
        input: TextIO,
        output: TextIO,
        *,
        pause: Callable[[], AbstractContextManager[Any]] = nullcontext,
        validate: Validate | None = None,
    ) -> None:
        self._input = input
        self._output = output
        self._pause = pause
        self._validate = validate

    async def __call__(self, event: ApprovalRequested) -> Decision:
        """Ask about ``event``'s call without blocking the event loop."""
        with self._pause():
            return await in_daemon_thread(self.ask, event)

    def ask(self, event: ApprovalRequested) -> Decision:
        """Ask about one call until the answer is clear (blocking); the end of the input denies."""
        name, call_id = _printable(event.tool_name), _printable(event.call_id)
        self._say(
            f"\n{name} needs your approval (call {call_id}), with the arguments:\n{shown(event.arguments)}"
        )
        while True:
            answer = self._line("approve? [y]es / [n]o / [e]dit the arguments: ")
            if answer is None:
                return deny("no answer: the input ended")
            choice = answer.strip().lower()
            if choice in ("y", "yes"):
                return approve()
            if choice in ("n", "no"):
                reason = self._line("reason for the model (optional): ")
                return deny((reason or "").strip())
            if choice in ("e", "edit"):
                edited = self._edited(event)
                if edited is not None:
                    return approve(arguments=edited)
                continue
            self._say("please answer y, n or e")

    def _edited(self, event: ApprovalRequested) -> dict[str, Any] | None:
        """Arguments typed anew, once valid; ``None`` (back to the question) on an empty line."""
        while True:
            text = self._line("new arguments as a JSON object (empty line: back): ")
            if text is None or not text.strip():
                return None
            problem, arguments = self._checked(event.tool_name, text)
            if problem is None and arguments is not None:
                return arguments
            self._say(f"not used: {problem}")

    def _checked(self, tool_name: str, text: str) -> tuple[str | None, dict[str, Any] | None]:
        try:
            arguments = json.loads(text)
        except ValueError as exc:
            return f"not JSON ({exc})", None
        if not isinstance(arguments, dict):
            return "the arguments must be a JSON object", None
        problem = self._validate(tool_name, text) if self._validate else None
        return problem, None if problem else arguments

    def _line(self, prompt: str) -> str | None:
        self._output.write(prompt)
        self._output.flush()
        line = self._input.readline()
        return line.rstrip("\r\n") if line else None

    def _say(self, line: str) -> None:
        self._output.write(line + "\n")
        self._output.flush()


async def in_daemon_thread(
    function: Callable[[ApprovalRequested], Decision], event: ApprovalRequested
) -> Decision:
    """``function(event)`` in a daemon thread, awaited without blocking the event loop.

    Not ``anyio.to_thread``: its threads are not daemons, and one blocked reading a terminal
    would keep the process alive after Ctrl-C until the person pressed Enter. Abandoned when
    the waiting task is cancelled (the thread then ends with the process).
    """
    token = anyio.lowlevel.current_token()
    done = anyio.Event()
    outcome: list[Decision | BaseException] = []

    def work() -> None:
        try:
            outcome.append(function(event))
        except BaseException as exc:  # handed to the waiting task, raised there
            outcome.append(exc)
        with contextlib.suppress(RuntimeError):  # the event loop is gone: nobody waits any more
            anyio.from_thread.run_sync(done.set, token=token)

    threading.Thread(target=work, name="approval prompt", daemon=True).start()
    await done.wait()
    [result] = outcome
    if isinstance(result, BaseException):
        raise result
    return result


def shown(arguments: str) -> str:
    """The model's arguments for a person to judge: whole, indented JSON, and nothing a terminal
    would act on (escape sequences, bidirectional overrides) -- those are shown escaped."""
    try:
        text = json.dumps(json.loads(arguments), indent=2, ensure_ascii=False)
    except ValueError:
        text = f"(not JSON) {arguments}"
    return _printable(text, keep="\n")


def _printable(text: str, keep: str = "") -> str:
    return "".join(c if c.isprintable() or c in keep else f"\\u{ord(c):04x}" for c in text)


def schema_check(registry: ToolRegistry) -> Validate:
    """Validates edited arguments as the model's are validated (a tool not in ``registry``: any)."""

    def validate(tool_name: str, arguments: str) -> str | None:
        tool = registry.get(tool_name)
        if tool is None:
            return None
        try:
            tool.validate(arguments)
        except ArgumentsError as exc:
            return str(exc)
        return None

    return validate


def interactive() -> bool:
    """Whether a person can be asked: stdin and stderr are terminals."""
    return sys.stdin.isatty() and sys.stderr.isatty()


@dataclass(frozen=True, slots=True)
class Approvals:
    """How a run command decides calls that need approval, and where a paused run's state goes."""

    approve_all: bool = False
    deny_all: bool = False
    state_file: Path | None = None
    tools: Sequence[str] = ()
    """The ``--tools`` values, repeated in the command that resumes."""

    def __post_init__(self) -> None:
        if self.approve_all and self.deny_all:
            fail("use either --approve-all or --deny-all, not both", code=2)
        if self.state_file is not None and not self.state_file.absolute().parent.is_dir():
            fail(f"--state-file {self.state_file}: no such directory", code=2)

    @property
    def given(self) -> bool:
        """Whether any of ``--approve-all``, ``--deny-all``, ``--state-file`` was given."""
        return self.approve_all or self.deny_all or self.state_file is not None

    def policy(
        self, registry: ToolRegistry, pause: Callable[[], AbstractContextManager[Any]]
    ) -> OnApproval | None:
        """The ``on_approval`` hook: all approved, all denied, asked on a terminal, or none (pause)."""
        if self.approve_all:
            return _approve_all
        if self.deny_all:
            return _deny_all
        if interactive():
            return TerminalApprover(sys.stdin, sys.stderr, pause=pause, validate=schema_check(registry))
        return None

    def asker(self, registry: ToolRegistry) -> Callable[[ApprovalRequested], Decision] | None:
        """A blocking question per call on the terminal (outside a run), if one is there."""
        if not interactive():
            return None
        return TerminalApprover(sys.stdin, sys.stderr, validate=schema_check(registry)).ask

    def paused(self, result: RunResult, display: RunDisplay, as_json: str | None) -> NoReturn:
        """Report a run that paused: the JSON document (``as_json``) on stdout, its state saved
        (with ``--state-file``), the calls waiting and how to resume on stderr; exit 4."""
        if as_json is not None:
            display.finish(result, as_json=as_json)
        waiting = result.pending_approvals
        calls = ", ".join(f"{call.tool_name} ({call.call_id})" for call in waiting)
        note(f"paused: {len(waiting)} call{'s' if len(waiting) != 1 else ''} wait for approval: {calls}")
        if self.state_file is not None and result.state is not None:
            write_state(self.state_file, result.state)
            note(f"state written to {self.state_file}; resume with:")
            note("  " + self.resume_command(str(self.state_file)))
        elif as_json is not None:
            note(
                'the state is in the JSON on stdout ("state"): save it to a file, then: agent resume FILE ...'
            )
        else:
            note("the state was not saved: run again with --state-file PATH (or --json) to resume it later")
        raise typer.Exit(PAUSED_EXIT)

    def resume_command(self, path: str) -> str:
        """How to resume the state saved in ``path`` (with the same ``--tools``)."""
        tools = "".join(f" --tools {target}" for target in self.tools)
        return f"agent resume {path}{tools} --approve CALL_ID --deny CALL_ID[=REASON]"


def _approve_all(event: ApprovalRequested) -> Decision:
    return approve()


def _deny_all(event: ApprovalRequested) -> Decision:
    note(f"denied {event.tool_name} ({event.call_id}): --deny-all")
    return deny(DENIED_ALL)


def read_state(path: Path) -> JSONObject:
    """The state saved in ``path``; exits 2 when it cannot be read or is not a JSON object."""
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        fail(f"cannot read the state file {path}: {exc.strerror or exc}", code=2)
    except ValueError as exc:
        fail(f"the state file {path} is not JSON: {exc}", code=2)
    if not isinstance(state, dict):
        fail(f"the state file {path} does not hold a run state (a JSON object)", code=2)
    return state


def write_state(path: Path, state: Mapping[str, Any]) -> None:
    """Write ``state`` to ``path`` whole or not at all; exits 2 when it cannot."""
    try:
        _replace(path, state)
    except OSError as exc:
        fail(f"cannot write the state file {path}: {exc.strerror or exc}", code=2)


def _replace(path: Path, state: Mapping[str, Any]) -> None:
    """``state`` as JSON in a temporary file beside ``path``, renamed over it."""
    with tempfile.NamedTemporaryFile(
        "w", encoding="utf-8", dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False
    ) as file:
        json.dump(state, file)
    try:
        os.replace(file.name, path)
    except OSError:
        os.unlink(file.name)
        raise


def resume_decisions_for(
    state: JSONObject,
    registry: ToolRegistry,
    approved: Sequence[str],
    denied: Sequence[str],
    approvals: Approvals,
) -> dict[str, Decision]:
    """``agent resume``'s decisions for the calls ``state`` waits for (see :func:`resume_decisions`)."""
    waiting, ran = waiting_calls(state, registry)
    ask = approvals.asker(registry)
    return resume_decisions(waiting, approved, denied, ask=ask, approvals=approvals, ran=ran)


def waiting_calls(state: JSONObject, registry: ToolRegistry) -> tuple[list[ApprovalRequested], list[str]]:
    """The calls ``state`` waits for that no earlier resume of it ran, and the ids of those that
    ran (reused, and said so), checked as :meth:`Agent.resume` checks them; exits 2 if it cannot
    be resumed with ``registry``."""
    try:
        saved = resumption(state, None)
    except UsageError as exc:
        fail(str(exc), code=2)
    missing = sorted({call.name for call in saved.waiting if call.name not in registry})
    if missing and not registry.sources:
        why = "resume with the paused run's --tools"
        fail(
            f"the state waits for calls of {', '.join(map(repr, missing))}, not among the tools: {why}",
            code=2,
        )
    for call in saved.waiting:
        if call.call_id in saved.done:
            note(f"{call.name} ({call.call_id}) ran when this state was resumed before: its result is reused")
    waiting = [
        ApprovalRequested(saved.turn, call.call_id, call.name, call.arguments)
        for call in saved.waiting
        if call.call_id not in saved.done
    ]
    return waiting, list(saved.done)


def resume_runner(
    state_file: Path,
    state: JSONObject,
    decisions: Mapping[str, Decision],
    approvals: Approvals,
    *,
    stream: bool,
) -> Callable[[Agent, RunDisplay], Awaitable[RunResult]]:
    """Resumes ``state`` with ``decisions``; what the resume ran is written back to ``state_file``
    (so resuming the file again reuses it instead of running it twice)."""

    async def runner(agent: Agent, display: RunDisplay) -> RunResult:
        hooks = dataclasses.replace(
            display.hooks(), on_approval=approvals.policy(agent.tools, display.paused)
        )
        digest = state.get("digest")
        try:
            return await agent.resume(state, decisions, hooks=hooks, stream=stream)
        finally:
            if state.get("digest") != digest:
                await anyio.to_thread.run_sync(_record_back, state_file, state)

    return runner


def _record_back(path: Path, state: JSONObject) -> None:
    try:
        _replace(path, state)
    except OSError as exc:
        note(f"could not record what ran in {path} ({exc.strerror or exc}): resuming it again runs it again")


def resume_decisions(
    waiting: Sequence[ApprovalRequested],
    approved: Sequence[str],
    denied: Sequence[str],
    *,
    ask: Callable[[ApprovalRequested], Decision] | None,
    approvals: Approvals,
    ran: Sequence[str] = (),
) -> dict[str, Decision]:
    """The decisions for a paused run's ``waiting`` calls: ``--approve ID``, ``--deny ID[=REASON]``,
    then ``--approve-all``/``--deny-all`` for the others, else ``ask`` (a terminal), else denied.

    A call id the state does not wait for, or one both approved and denied, exits 2; one that
    ran when the state was resumed before (not in ``waiting``, in ``ran``) is not asked again.
    """
    denials = dict(_reason(entry) for entry in denied)
    known = {call.call_id for call in waiting}
    for call_id in [*approved, *denials]:
        if call_id not in known and call_id not in ran:
            waits = ", ".join(sorted(known)) or "nothing that has not run"
            fail(f"no call {call_id!r} waits in this state (it waits for: {waits})", code=2)
    both = set(approved) & set(denials)
    if both:
        fail(f"call {sorted(both)[0]!r} is both approved and denied", code=2)
    decisions = {call_id: approve() for call_id in approved}
    decisions.update({call_id: deny(reason) for call_id, reason in denials.items()})
    for call in waiting:
        if call.call_id not in decisions:
            decisions[call.call_id] = _unnamed(call, ask, approvals)
    return decisions


def _unnamed(
    call: ApprovalRequested, ask: Callable[[ApprovalRequested], Decision] | None, approvals: Approvals
) -> Decision:
    if approvals.approve_all:
        return approve()
    if approvals.deny_all:
        return deny(DENIED_ALL)
    if ask is not None:
        return ask(call)
    note(f"denied {call.tool_name} ({call.call_id}): not named by --approve or --deny")
    return deny(NOT_NAMED)


def _reason(entry: str) -> tuple[str, str]:
    call_id, _, reason = entry.partition("=")
    return call_id, reason


def note(line: str) -> None:
    """One line on stderr, as it is, but for what a terminal would act on (call ids come from
    the model)."""
    _stderr.print(_printable(line), soft_wrap=True, markup=False, highlight=False)


def fail(message: str, *, code: int) -> NoReturn:
    _stderr.print(Text.assemble(("error: ", "red"), message), highlight=False, soft_wrap=True)
    raise typer.Exit(code)
