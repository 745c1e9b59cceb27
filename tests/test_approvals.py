"""Human approval of tool calls: pausing, saved state, resuming, hostile decisions and states."""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest

from agent import (
    Agent,
    ApprovalRequested,
    Decision,
    HookError,
    Hooks,
    InvalidStateError,
    RunResult,
    ToolContext,
    UsageError,
    approve,
    deny,
    tool,
)
from agent._approvals import STATE_VERSION, reseal
from tests._support import function_call, message, response, scripted_agent, sse_reply

pytestmark = pytest.mark.anyio

RAN: list[tuple[str, Any]] = []


@pytest.fixture(autouse=True)
def _fresh_journal() -> None:
    RAN.clear()


@tool
def lookup(q: str) -> str:
    """Look something up."""
    RAN.append(("lookup", q))
    return f"found {q}"


@tool(needs_approval=True)
def send_mail(to: str) -> str:
    """Send a mail."""
    RAN.append(("send_mail", to))
    return f"sent to {to}"


@tool(needs_approval=lambda ctx, args: args["amount"] > 100)
def pay(ctx: ToolContext[None], amount: int) -> str:
    """Pay an amount."""
    RAN.append(("pay", ctx.idempotency_key))
    return f"paid {amount}"


TOOLS = [lookup, send_mail, pay]


def mixed_turn() -> list[dict[str, Any]]:
    """One response: two calls that need no approval, three that do."""
    return [
        function_call("lookup", {"q": "x"}, "free-1"),
        function_call("send_mail", {"to": "bob"}, "mail-bob"),
        function_call("pay", {"amount": 500}, "pay-500"),
        function_call("pay", {"amount": 5}, "free-2"),
        function_call("send_mail", {"to": "eve"}, "mail-eve"),
    ]


async def paused(**options: Any) -> tuple[Agent, RunResult, Any]:
    agent, endpoint = scripted_agent(
        [response(*mixed_turn()), response(message("all done"))], tools=TOOLS, **options
    )
    result = await agent.run("go", run_id="run-1")
    return agent, result, endpoint


def outputs_sent(endpoint: Any, request: int) -> dict[str, Any]:
    """The function_call_outputs of one request, by call id (error outputs parsed)."""
    sent = {}
    for item in endpoint.requests[request]["input"]:
        if item.get("type") == "function_call_output":
            text = item["output"]
            sent[item["call_id"]] = json.loads(text)["error"] if text.startswith('{"error"') else text
    return sent


async def test_a_run_pauses_for_the_calls_that_need_approval_after_running_the_others() -> None:
    """The free calls run; the run stops with the waiting calls in call order and a JSON state."""
    _, result, endpoint = await paused()
    assert result.status == "awaiting_approval"
    assert [(p.call_id, p.tool_name, p.turn) for p in result.pending_approvals] == [
        ("mail-bob", "send_mail", 1),
        ("pay-500", "pay", 1),
        ("mail-eve", "send_mail", 1),
    ]
    assert result.pending_approvals[1].parsed_arguments == {"amount": 500}
    assert sorted(RAN) == [("lookup", "x"), ("pay", "run-1:1:free-2")]
    assert json.loads(json.dumps(result.state)) == result.state
    assert (result.output, len(endpoint.requests)) == ("", 1)


async def test_resuming_runs_the_approved_call_denies_the_rest_and_the_model_sees_both() -> None:
    """Approved runs once; denied (with its reason) and undecided are ``denied``; the answer arrives."""
    agent, result, endpoint = await paused()
    RAN.clear()
    saved = json.loads(json.dumps(result.state))  # as if read back from a file
    final = await agent.resume(saved, {"mail-bob": approve(), "pay-500": deny("over budget")})
    assert (final.status, final.output) == ("completed", "all done")
    assert RAN == [("send_mail", "bob")]
    kinds = {record.call_id: record.kind for record in final.tool_calls}
    assert kinds == {
        "free-1": "ok",
        "free-2": "ok",
        "mail-bob": "ok",
        "pay-500": "denied",
        "mail-eve": "denied",
    }
    sent = outputs_sent(endpoint, 1)
    assert sent["mail-bob"] == "sent to bob"
    assert sent["pay-500"]["type"] == "denied"
    assert "over budget" in sent["pay-500"]["message"]
    assert set(sent) == {"free-1", "free-2", "mail-bob", "pay-500", "mail-eve"}


@pytest.mark.parametrize(
    "hostile",
    [
        None,
        True,
        1,
        "yes",
        "approve",
        {"approved": True},
        [True],
        Decision(True, arguments=[1]),  # type: ignore[arg-type]
        Decision("y"),  # type: ignore[arg-type]
    ],
)
async def test_anything_but_a_decision_denies_the_call(hostile: Any) -> None:
    """None, booleans, strings, dicts, malformed Decisions: the call is denied, never run."""
    agent, result, _ = await paused()
    RAN.clear()
    final = await agent.resume(result.state, {p.call_id: hostile for p in result.pending_approvals})
    assert RAN == []
    assert {r.kind for r in final.tool_calls if r.call_id in ("mail-bob", "pay-500", "mail-eve")} == {
        "denied"
    }


async def test_unknown_call_ids_are_ignored_and_their_calls_denied() -> None:
    """Decisions for call ids the state does not wait for (another run's) run nothing."""
    agent, result, _ = await paused()
    RAN.clear()
    final = await agent.resume(result.state, {"call-of-another-run": approve(), "free-1": approve()})
    assert RAN == []
    assert final.status == "completed"


async def test_decisions_that_are_not_a_mapping_are_a_usage_error() -> None:
    """A list of decisions is refused before anything runs."""
    agent, result, _ = await paused()
    RAN.clear()
    with pytest.raises(UsageError, match="mapping"):
        await agent.resume(result.state, [approve()])  # type: ignore[arg-type]
    assert RAN == []


def tamper(state: dict[str, Any], change: str) -> Any:
    """A copy of ``state`` changed one way an attacker (or a bad disk) might."""
    changed = json.loads(json.dumps(state))
    if change == "arguments":
        for item in changed["items"]:
            if item.get("call_id") == "mail-bob":
                item["arguments"] = '{"to": "mallory"}'
        changed["awaiting"][0]["arguments"] = '{"to": "mallory"}'
    elif change == "extra call":
        changed["awaiting"].append({"call_id": "x", "tool_name": "send_mail", "arguments": "{}", "turn": 1})
    elif change == "digest":
        del changed["digest"]
    elif change == "newer":
        changed["version"] = STATE_VERSION + 1
    elif change == "not ours":
        changed["format"] = "something else"
    elif change == "text":
        return "not json at all"
    elif change == "resealed extra call":  # consistent digest, but a call the model never asked
        changed["awaiting"].append({"call_id": "x", "tool_name": "send_mail", "arguments": "{}", "turn": 1})
        reseal(changed, None)
    return changed


@pytest.mark.parametrize(
    "change", ["arguments", "extra call", "digest", "newer", "not ours", "text", "resealed extra call"]
)
async def test_a_tampered_state_is_refused_and_runs_nothing(change: str) -> None:
    """Any change after saving (or a state no model asked for) is InvalidStateError; nothing runs."""
    agent, result, _ = await paused()
    RAN.clear()
    assert result.state is not None
    with pytest.raises(InvalidStateError) as caught:
        await agent.resume(tamper(result.state, change), {"mail-bob": approve(), "x": approve()})
    assert RAN == []
    if change == "newer":
        assert "newer" in str(caught.value)


async def test_a_state_key_refuses_a_state_resealed_without_it() -> None:
    """With ``state_key``, a state whose digest was recomputed by someone without the key is refused."""
    agent, result, _ = await paused(state_key="s3cret")
    assert result.state is not None
    forged = json.loads(json.dumps(result.state))
    reseal(forged, None)
    with pytest.raises(InvalidStateError, match="state_key"):
        await agent.resume(forged, {"mail-bob": approve()})
    final = await agent.resume(result.state, {"mail-bob": approve()})
    assert ("send_mail", "bob") in RAN
    assert final.status == "completed"


async def test_resuming_the_same_state_twice_does_not_run_an_approved_call_twice() -> None:
    """The same dict, and a copy read again in this process, both reuse the first resume's result."""
    _, result, _ = await paused()
    copy = json.loads(json.dumps(result.state))
    RAN.clear()
    agent, _ = scripted_agent([response(message("done"))] * 3, tools=TOOLS)
    runs = [
        await agent.resume(state, {"mail-bob": approve()}) for state in (result.state, result.state, copy)
    ]
    assert RAN == [("send_mail", "bob")]
    assert [{r.call_id: r.output for r in run.tool_calls}["mail-bob"] for run in runs] == ["sent to bob"] * 3


async def test_the_state_dict_records_what_ran_so_another_process_does_not_run_it_again() -> None:
    """Saved after a resume, the same dict tells a new agent (process) what already ran."""
    _, result, _ = await paused()
    RAN.clear()
    first, _ = scripted_agent([response(message("done"))], tools=TOOLS)
    await first.resume(result.state, {"mail-bob": approve()})
    saved_again = json.loads(json.dumps(result.state))  # written back to the file after the resume
    second, _ = scripted_agent([response(message("done"))], tools=TOOLS)
    await second.resume(saved_again, {"mail-bob": approve()})
    assert RAN == [("send_mail", "bob")]


async def test_every_resume_of_a_state_gives_an_approved_call_the_same_idempotency_key() -> None:
    """In another process (another agent) the call runs again, with the same key to dedupe on."""
    _, result, _ = await paused()
    RAN.clear()
    for _ in range(2):
        other, _ = scripted_agent([response(message("ok"))], tools=TOOLS)
        await other.resume(json.loads(json.dumps(result.state)), {"pay-500": approve()})
    assert RAN == [("pay", "run-1:1:pay-500")] * 2


async def test_approved_arguments_replace_the_models_and_are_validated() -> None:
    """``approve(arguments=...)`` runs with them; arguments the schema refuses are invalid_arguments."""
    agent, result, _ = await paused()
    RAN.clear()
    decisions = {"mail-bob": approve(arguments={"to": "carol"}), "mail-eve": approve(arguments={"to": 5})}
    final = await agent.resume(result.state, decisions)
    records = {r.call_id: r for r in final.tool_calls}
    assert RAN == [("send_mail", "carol")]
    assert (records["mail-bob"].output, json.loads(records["mail-bob"].arguments)) == (
        "sent to carol",
        {"to": "carol"},
    )
    assert records["mail-eve"].kind == "invalid_arguments"


@pytest.mark.parametrize(
    ("rule", "asks"),
    [
        (lambda ctx, args: None, True),
        (lambda ctx, args: 1 / 0, True),
        (lambda ctx, args: False, False),
        (lambda ctx, args: args["n"] > 3, True),
    ],
)
async def test_a_predicate_asks_unless_it_clearly_says_no(rule: Any, asks: bool) -> None:
    """Only a predicate's ``False`` lets a call run unasked: ``None`` or an exception asks."""

    @tool(needs_approval=rule)
    def act(n: int) -> str:
        """Act."""
        RAN.append(("act", n))
        return "acted"

    agent, _ = scripted_agent(
        [response(function_call("act", {"n": 5})), response(message("ok"))], tools=[act]
    )
    result = await agent.run("go")
    assert (result.status == "awaiting_approval", RAN == []) == (asks, asks)


async def test_an_async_predicate_gets_the_context_with_deps() -> None:
    """A predicate may be async and reads the run's deps through its ToolContext."""

    async def over_limit(ctx: ToolContext[dict[str, int]], args: dict[str, Any]) -> bool:
        await anyio.sleep(0)
        return bool(args["n"] > ctx.deps["limit"])

    @tool(needs_approval=over_limit)
    def act(n: int) -> str:
        """Act."""
        return "acted"

    replies = [response(function_call("act", {"n": 5})), response(message("ok"))] * 2
    agent, _ = scripted_agent(replies, tools=[act])
    assert (await agent.run("go", deps={"limit": 10})).status == "completed"
    assert (await agent.run("go", deps={"limit": 1})).status == "awaiting_approval"


async def test_a_call_with_invalid_arguments_is_not_asked_about() -> None:
    """Arguments the schema refuses never run, so nobody is asked: the model gets invalid_arguments."""
    agent, _ = scripted_agent(
        [response(function_call("pay", {"amount": "lots"})), response(message("ok"))], tools=TOOLS
    )
    result = await agent.run("go")
    assert (result.status, result.tool_calls[0].kind) == ("completed", "invalid_arguments")


async def test_an_on_approval_policy_decides_inline_and_the_run_does_not_pause() -> None:
    """``Hooks(on_approval=...)``: approved calls run, denied ones are denied, nothing pauses."""
    asked: list[str] = []

    async def policy(event: ApprovalRequested) -> Decision:
        asked.append(event.call_id)
        return approve() if event.tool_name == "send_mail" else deny("no payments")

    agent, _ = scripted_agent([response(*mixed_turn()), response(message("done"))], tools=TOOLS)
    result = await agent.run("go", hooks=Hooks(on_approval=policy))
    kinds = {r.call_id: r.kind for r in result.tool_calls}
    assert (result.status, asked) == ("completed", ["mail-bob", "pay-500", "mail-eve"])
    assert (kinds["mail-bob"], kinds["mail-eve"], kinds["pay-500"]) == ("ok", "ok", "denied")


async def test_an_on_approval_policy_returning_none_leaves_the_call_to_a_person() -> None:
    """A policy may decide some calls and leave others (``None``): the run pauses for those."""
    agent, _ = scripted_agent([response(*mixed_turn())], tools=TOOLS)
    hooks = Hooks(on_approval=lambda event: approve() if event.call_id == "mail-bob" else None)
    result = await agent.run("go", hooks=hooks)
    assert [p.call_id for p in result.pending_approvals] == ["pay-500", "mail-eve"]
    assert ("send_mail", "bob") in RAN


async def test_an_on_approval_policy_that_raises_ends_the_run_and_runs_nothing() -> None:
    """An exception in the policy is a HookError; the waiting calls never ran."""

    def broken(event: ApprovalRequested) -> Decision:
        raise RuntimeError("policy down")

    agent, _ = scripted_agent([response(*mixed_turn())], tools=TOOLS)
    with pytest.raises(HookError, match="policy down"):
        await agent.run("go", hooks=Hooks(on_approval=broken))
    assert ("send_mail", "bob") not in RAN


async def test_approval_requested_events_arrive_in_the_stream() -> None:
    """run_stream yields one ApprovalRequested per waiting call, and the paused result."""
    agent, _ = scripted_agent([sse_reply(response(*mixed_turn()))], tools=TOOLS)
    async with agent.run_stream("go") as events:
        asked = [event.call_id async for event in events if isinstance(event, ApprovalRequested)]
    assert asked == ["mail-bob", "pay-500", "mail-eve"]
    assert events.result is not None
    assert events.result.status == "awaiting_approval"


async def test_a_streamed_run_never_starts_a_call_that_needs_approval_early() -> None:
    """Eager tools start while the response streams, but not those needing approval."""
    agent, _ = scripted_agent([sse_reply(response(*mixed_turn()))], tools=TOOLS, stream=True)
    result = await agent.run("go")
    assert result.status == "awaiting_approval"
    assert all(name != "send_mail" for name, _ in RAN)


async def test_with_previous_response_id_the_resumed_request_sends_every_output_of_the_turn() -> None:
    """The outputs of the calls run before the pause go with those decided on resume."""
    agent, endpoint = scripted_agent(
        [response(*mixed_turn()), response(message("ok"))], tools=TOOLS, use_previous_response_id=True
    )
    result = await agent.run("go")
    await agent.resume(result.state, {"mail-bob": approve()})
    sent = [item["call_id"] for item in endpoint.requests[1]["input"]]
    assert sorted(sent) == sorted(["free-1", "free-2", "mail-bob", "pay-500", "mail-eve"])
    assert endpoint.requests[1]["previous_response_id"] == result.response_ids[0]


async def test_a_resumed_run_can_pause_again_on_a_later_turn() -> None:
    """Turn 2 asks for another approval: a new state, resumed in turn; turns and usage add up."""
    replies = [
        response(function_call("send_mail", {"to": "a"}, "m1")),
        response(function_call("send_mail", {"to": "b"}, "m2")),
        response(message("done")),
    ]
    agent, _ = scripted_agent(replies, tools=TOOLS)
    first = await agent.run("go")
    second = await agent.resume(first.state, {"m1": approve()})
    assert [p.call_id for p in second.pending_approvals] == ["m2"]
    final = await agent.resume(second.state, {"m2": approve()})
    assert (final.output, final.turns, final.usage.requests) == ("done", 3, 3)
    assert RAN == [("send_mail", "a"), ("send_mail", "b")]
