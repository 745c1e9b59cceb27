"""Approvals: a run pauses for the calls a person must decide, its state goes to a file, and
another process resumes it with the decisions.

    python examples/approvals.py pause run.json                 # prints the calls waiting
    python examples/approvals.py resume run.json --approve CALL_ID --deny CALL_ID=REASON

``send_mail`` always needs approval, ``pay`` only above 100; ``find_invoice`` and
``check_budget`` run unasked. Every tool that runs appends a line to a journal (the run's
``deps``: the file ``--journal PATH``, else ``$APPROVALS_JOURNAL``, else
``approvals-journal.txt``), so you can see what ran. A call the resume does not approve is
denied: the model is told, the tool never runs. The resume writes the file back with what it
ran, so resuming it again does not pay twice. ``--json`` prints
the result as JSON (the pending calls, or the answer with every call's record).

Without ``OPENAI_BASE_URL``/``OPENAI_API_KEY`` both steps run on the embedded local model (a
deterministic stand-in, not AI), which calls the four tools the prompt names in one response.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import anyio

from agent import Agent, Decision, RunResult, ToolContext, ToolRegistry, approve, deny, tool
from agent.localmodel import AutoPolicy, endpoint_or_local

PROMPT = 'Find invoice number 42, check the budget, pay amount 250 and send mail to "bob@example.com".'


def _journal(ctx: ToolContext[Path], line: str) -> None:
    """Append ``line`` to the journal the run was given as its ``deps``."""
    with ctx.deps.open("a", encoding="utf-8") as file:
        file.write(line + "\n")


@tool(needs_approval=True)
def send_mail(ctx: ToolContext[Path], to: str, body: str) -> str:
    """Send an e-mail.

    Args:
        to: The address.
        body: The text.
    """
    _journal(ctx, f"send_mail {to}")
    return f"mail sent to {to}"


def _large(ctx: ToolContext[Path], arguments: dict[str, Any]) -> bool:
    return bool(arguments["amount"] > 100)


@tool(needs_approval=_large)
def pay(ctx: ToolContext[Path], amount: int) -> str:
    """Pay an amount; above 100 a person must approve it first.

    Args:
        amount: The amount, in euros.
    """
    # A payment API would dedupe on this key: every resume of one saved state gives the same.
    _journal(ctx, f"pay {amount} {ctx.idempotency_key}")
    return f"paid {amount} euros"


@tool
def find_invoice(ctx: ToolContext[Path], number: int) -> str:
    """Look an invoice up.

    Args:
        number: The invoice number.
    """
    _journal(ctx, f"find_invoice {number}")
    return f"invoice {number}: 250 euros, due today"


@tool
def check_budget(ctx: ToolContext[Path]) -> str:
    """What is left of this month's budget."""
    _journal(ctx, "check_budget")
    return "1000 euros left"


tools = ToolRegistry([find_invoice, check_budget, pay, send_mail])


async def pause(
    state_file: Path, journal: Path, base_url: str | None = None, api_key: str | None = None
) -> RunResult:
    """Run the prompt; when it pauses for approvals, write its state to ``state_file``."""
    async with Agent(model="gpt-4.1", tools=tools, base_url=base_url, api_key=api_key) as agent:
        result = await agent.run(PROMPT, deps=journal)
    if result.status == "awaiting_approval":
        await anyio.Path(state_file).write_text(json.dumps(result.state), encoding="utf-8")
    return result


async def resume(
    state_file: Path,
    decisions: dict[str, Decision],
    journal: Path,
    base_url: str | None = None,
    api_key: str | None = None,
) -> RunResult:
    """Resume the run saved in ``state_file``: the calls ``decisions`` does not approve are denied.

    The file is written back: with what the resume ran (so resuming it again reuses those
    results instead of paying twice), or with the new state if the run paused again.
    """
    file = anyio.Path(state_file)
    state = json.loads(await file.read_text(encoding="utf-8"))
    async with Agent(model="gpt-4.1", tools=tools, base_url=base_url, api_key=api_key) as agent:
        try:
            result = await agent.resume(state, decisions, deps=journal)
        finally:
            await file.write_text(json.dumps(state), encoding="utf-8")
    if result.status == "awaiting_approval":  # it paused again, on a later turn
        await file.write_text(json.dumps(result.state), encoding="utf-8")
    return result


def decisions_from(approved: list[str], denied: list[str]) -> dict[str, Decision]:
    """``--approve ID`` and ``--deny ID[=REASON]`` as decisions."""
    decisions = {call_id: approve() for call_id in approved}
    for entry in denied:
        call_id, _, reason = entry.partition("=")
        decisions[call_id] = deny(reason)
    return decisions


def show(result: RunResult, *, as_json: bool) -> None:
    """Print the calls waiting or the answer (``as_json``: as one JSON document)."""
    if as_json:
        document = {
            "status": result.status,
            "output": result.output,
            "pending_approvals": [
                {"call_id": c.call_id, "tool_name": c.tool_name, "arguments": c.parsed_arguments}
                for c in result.pending_approvals
            ],
            "tool_calls": [record.to_json() for record in result.tool_calls],
        }
        print(json.dumps(document, indent=2))
        return
    for call in result.tool_calls:
        print(f"{call.kind:>6} {call.name}({call.arguments}) -> {call.output}")
    for waiting in result.pending_approvals:
        print(f"  wait {waiting.tool_name}({waiting.arguments})  call id {waiting.call_id}")
    if result.status != "awaiting_approval":
        print(result.output)


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("step", choices=["pause", "resume"])
    parser.add_argument("state_file", type=Path)
    parser.add_argument("--approve", action="append", default=[], metavar="CALL_ID")
    parser.add_argument("--deny", action="append", default=[], metavar="CALL_ID[=REASON]")
    parser.add_argument("--journal", type=Path, help="Where the tools write what they did.")
    parser.add_argument("--json", action="store_true", help="Print the result as JSON.")
    return parser.parse_args()


def _main() -> None:
    options = _arguments()
    journal = options.journal or Path(os.environ.get("APPROVALS_JOURNAL", "approvals-journal.txt"))
    with endpoint_or_local(AutoPolicy()) as endpoint:
        if options.step == "pause":
            result = anyio.run(pause, options.state_file, journal, endpoint.base_url, endpoint.api_key)
        else:
            decisions = decisions_from(options.approve, options.deny)
            result = anyio.run(
                resume, options.state_file, decisions, journal, endpoint.base_url, endpoint.api_key
            )
    show(result, as_json=options.json)


if __name__ == "__main__":
    _main()
