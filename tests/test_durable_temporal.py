"""Durable runs on Temporal, against a real dev server (``tests/_temporal.py``), worker in this process.

Crash tests with real worker processes killed with SIGKILL are at the end, under ``slow``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import pytest_asyncio

from agent import Agent, APIError, ToolContext, tool
from agent.localmodel import AutoPolicy, LocalModelServer

pytest.importorskip("temporalio")

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHistory
from temporalio.worker import Replayer
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from agent.durable.temporal import PASSTHROUGH, RunWorkflow, TemporalAgent
from tests._temporal import TemporalServer, TemporalUnavailable, start_temporal

pytestmark = pytest.mark.timeout(60)

KEYS: list[str] = []


@tool
async def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@tool
def keyed(ctx: ToolContext[None], text: str) -> str:
    """Echo the text (a sync tool, in a thread); remember the call's idempotency key."""
    KEYS.append(ctx.idempotency_key)
    return text


@tool
def huge() -> str:
    """Return far too much text."""
    return "x" * 300_000


@tool(needs_approval=True)
def wire(amount: int) -> str:
    """Wire money (a person approves each call)."""
    return f"wired {amount}"


@pytest.fixture(scope="module")
def temporal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TemporalServer]:
    try:
        server = start_temporal(tmp_path_factory.mktemp("temporal"))
    except TemporalUnavailable as exc:
        pytest.skip(str(exc))
    with server:
        yield server


@pytest.fixture
def model() -> Iterator[LocalModelServer]:
    with LocalModelServer(AutoPolicy(), api_key="local-key") as server:
        yield server


def make_agent(model: LocalModelServer, *tools: Any, **options: Any) -> Agent:
    return Agent("m", base_url=model.base_url, api_key="local-key", tools=list(tools), **options)


@pytest_asyncio.fixture
async def client(temporal: TemporalServer) -> AsyncIterator[Client]:
    yield await Client.connect(temporal.address)


def queue(request: pytest.FixtureRequest) -> str:
    """A task queue of this test's own (the server is shared by the module's tests)."""
    return f"q-{request.node.name}"


def scheduled(history: WorkflowHistory) -> list[str]:
    """The activity ids a run's history scheduled, in order."""
    kind = EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    return [
        e.activity_task_scheduled_event_attributes.activity_id for e in history.events if e.event_type == kind
    ]


async def replay(history: WorkflowHistory) -> None:
    """Replay ``history`` with Temporal's Replayer (raises on any nondeterminism)."""
    restrictions = SandboxRestrictions.default.with_passthrough_modules(*PASSTHROUGH)
    replayer = Replayer(
        workflows=[RunWorkflow], workflow_runner=SandboxedWorkflowRunner(restrictions=restrictions)
    )
    await replayer.replay_workflow(history)


@pytest.mark.asyncio
async def test_run_gives_the_in_process_result_and_replays_deterministically(
    model: LocalModelServer, client: Client, request: pytest.FixtureRequest
) -> None:
    """A run on a worker returns the in-process run's output; its history replays cleanly."""
    prompt = "add 2 and 3, and keyed 'hi'"
    async with make_agent(model, add, keyed) as agent:
        expected = await agent.run(prompt, run_id="reference")
        durable = TemporalAgent(agent, name="basic", client=client, task_queue=queue(request))
        async with durable.worker():
            result = await durable.run(prompt, run_id="run-basic")
            history = await client.get_workflow_handle("run-basic").fetch_history()
            await replay(history)
    assert result.output == expected.output
    assert [r.output for r in result.tool_calls] == [r.output for r in expected.tool_calls]
    assert scheduled(history) == ["model:1", "tool:1:1:" + result.tool_calls[0].call_id,
                                  "tool:1:2:" + result.tool_calls[1].call_id, "model:2"]  # fmt: skip


@pytest.mark.asyncio
async def test_idempotency_key_is_the_run_id_turn_and_call(
    model: LocalModelServer, client: Client, request: pytest.FixtureRequest
) -> None:
    """ctx.idempotency_key in an activity is built from the workflow id, as with DBOS."""
    KEYS.clear()
    async with make_agent(model, keyed) as agent:
        durable = TemporalAgent(agent, name="keys", client=client, task_queue=queue(request))
        async with durable.worker():
            result = await durable.run("keyed 'a'", run_id="run-keys")
    assert [f"run-keys:1:{result.tool_calls[0].call_id}"] == KEYS


@pytest.mark.asyncio
async def test_enqueue_then_result_and_a_finished_run_id_returns_the_stored_result(
    model: LocalModelServer, client: Client, request: pytest.FixtureRequest
) -> None:
    """enqueue returns the run id; result waits; run() with a finished id sends no request."""
    async with make_agent(model, add) as agent:
        durable = TemporalAgent(agent, name="enqueue", client=client, task_queue=queue(request))
        async with durable.worker():
            run_id = await durable.enqueue("add 1 and 1", run_id="run-enqueue")
            first = await durable.result(run_id)
            requests = len(model.requests)
            again = await durable.run("something else", run_id=run_id)
    assert run_id == "run-enqueue"
    assert again.output == first.output
    assert len(model.requests) == requests


@pytest.mark.asyncio
async def test_endpoint_error_comes_back_typed_with_partial_result(
    client: Client, request: pytest.FixtureRequest
) -> None:
    """An endpoint failure ends the run with the same typed error and a partial result."""
    with LocalModelServer(AutoPolicy(), api_key="other-key") as wrong:
        async with Agent("m", base_url=wrong.base_url, api_key="bad", max_retries=0) as agent:
            durable = TemporalAgent(agent, name="errors", client=client, task_queue=queue(request))
            async with durable.worker():
                with pytest.raises(APIError) as caught:
                    await durable.run("hello", run_id="run-error")
    assert caught.value.status == 401
    assert caught.value.partial_result is not None


@pytest.mark.asyncio
async def test_tool_output_over_the_payload_limit_is_an_error_outcome(
    model: LocalModelServer, client: Client, request: pytest.FixtureRequest
) -> None:
    """A tool output over payload_limit becomes a tool_error the model reads, not a stuck activity."""
    async with make_agent(model, huge) as agent:
        durable = TemporalAgent(
            agent, name="payload", client=client, task_queue=queue(request), payload_limit=100_000
        )
        async with durable.worker():
            result = await durable.run("huge", run_id="run-huge")
    record = result.tool_calls[0]
    assert record.kind == "tool_error"
    assert "over the durable payload limit of 100000 bytes" in record.output


@pytest.mark.asyncio
async def test_a_call_needing_approval_waits_for_approve_and_progress_shows_it(
    model: LocalModelServer, client: Client, request: pytest.FixtureRequest
) -> None:
    """A run waits (durably) for a decision; progress says so; approve() lets the call run."""
    async with make_agent(model, wire) as agent:
        durable = TemporalAgent(agent, name="approvals", client=client, task_queue=queue(request))
        async with durable.worker():
            run_id = await durable.enqueue("wire 5", run_id="run-approve")
            deadline = time.monotonic() + 30
            while not (progress := await durable.progress(run_id))["awaiting_approval"]:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
            assert progress["status"] == "awaiting_approval"
            await durable.approve(run_id, progress["awaiting_approval"][0])
            result = await durable.result(run_id)
            final = await durable.progress(run_id)
    assert [r.output for r in result.tool_calls] == ["wired 5"]
    assert final["status"] == "completed"
    assert final["tool_calls"] == 1


@pytest.mark.asyncio
async def test_deny_gives_the_model_a_denied_output(
    model: LocalModelServer, client: Client, request: pytest.FixtureRequest
) -> None:
    """deny() ends the waiting call as denied, with the reason."""
    async with make_agent(model, wire) as agent:
        durable = TemporalAgent(agent, name="denials", client=client, task_queue=queue(request))
        async with durable.worker():
            run_id = await durable.enqueue("wire 5", run_id="run-deny")
            deadline = time.monotonic() + 30
            while not (progress := await durable.progress(run_id))["awaiting_approval"]:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
            await durable.deny(run_id, progress["awaiting_approval"][0], "no")
            result = await durable.result(run_id)
    assert [r.kind for r in result.tool_calls] == ["denied"]


@pytest.mark.asyncio
async def test_tool_with_max_concurrency_gets_its_own_task_queue(
    model: LocalModelServer, client: Client
) -> None:
    """A tool with max_concurrency goes to QUEUE.tool.NAME; others to the run's queue."""
    limited = tool(add.function, name="limited", max_concurrency=2)
    agent = make_agent(model, add, limited)
    durable = TemporalAgent(agent, name="queues", client=client, task_queue="q")
    assert durable.tool_queue("limited") == "q.tool.limited"
    assert durable.tool_queue("add") == "q"
