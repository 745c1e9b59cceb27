"""Durable runs on DBOS: a run is a workflow, each model request and each tool call a step.

``pip install 'agent-runtime[dbos]'``. The user's ``@tool`` functions are the same as for an
in-process run: the engine here wraps the in-process engine (``agent._inprocess``) and makes
each of its two operations a DBOS step, checkpointed as JSON in the DBOS system database
(SQLite on one machine, PostgreSQL for many). After a crash the workflow runs again from the
top: completed steps return their stored results without running, the loop (a deterministic
function of those results) arrives where it was, and the step that was in flight runs again.

Why our HTTP retries and not DBOS's step retries: ours know ``Retry-After``, which failures are
transient, and the pause every run of the agent shares; a step that fails after them records
the error and the run ends with it (``retries_allowed=False``), as an in-process run would.

DBOS is one instance per process (asyncio only): one :class:`DBOSAgent` per process is a worker;
:class:`DBOSRuns` enqueues, lists and reads runs from any process, worker or not.

A run whose calls need approval waits durably instead of pausing: it publishes the calls as the
workflow event ``agent_runtime.pending`` and receives one message per decision on the topic
``agent_runtime.decision`` (DBOS ``recv``, recorded: a worker that restarts waits on where it
was). :meth:`DBOSRuns.approve` / :meth:`DBOSRuns.deny` send them from any process.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import os
import re
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from types import TracebackType
from typing import Any, Self

import anyio
import anyio.to_thread
import sniffio
from dbos import (
    DBOS,
    DBOSClient,
    DBOSConfig,
    DBOSPortableJSONSerializer,
    SetWorkflowID,
    WorkflowHandleAsync,
    WorkflowStatus,
)
from dbos._dbos import _get_dbos_instance

from agent._agent import Agent, Decide, _decider
from agent._approvals import Decision, PendingApproval, approve, deny
from agent._engine import LiveTurn, ModelRequest, ToolOutcome, ToolRequest, response_from_json
from agent._errors import AgentError, HookError, RunError, UsageError
from agent._events import (
    ApprovalRequested,
    Hooks,
    dispatch_to_hooks,
)
from agent._inprocess import InProcessEngine
from agent._limits import Limits
from agent._result import JSONObject, RunResult
from agent._wire import ModelResponse
from agent.durable._json import (
    decision_from_json,
    decision_to_json,
    error_from_json,
    error_to_json,
    input_to_json,
    outcome_of,
    pending_from_json,
    pending_to_json,
    result_to_json,
)
from agent.durable._replay import ReplayGate
from agent.durable._sweeper import Sweeper

__all__ = ["DEFAULT_NAME", "DBOSAgent", "DBOSRuns", "RunInfo"]

DEFAULT_NAME = "agent-runtime"
"""The DBOS application name the CLI and :class:`DBOSAgent` share unless told otherwise."""

APPLICATION_VERSION = "agent-runtime-1"
"""Pinned, so workers and clients of one application agree (DBOS would hash the code)."""

QUEUE = "agent_runs"
WORKFLOW = "agent_runtime.run"
MODEL_STEP = "agent_runtime.model"
TOOL_STEP = "agent_runtime.tool"
DECISION_STEP = "agent_runtime.decision"
WAIT_STEP = "agent_runtime.wait"
PENDING_EVENT = "agent_runtime.pending"
"""The workflow event a run waiting for approvals publishes: ``{"turn", "pending": [...]}``."""
DECISION_TOPIC = "agent_runtime.decision"
"""The topic of the messages that decide a waiting run's calls (one message per call)."""

_RECV_CHUNK = 24 * 3600.0
"""Seconds one ``recv`` waits when the wait has no end (each adds two recorded operations)."""
_INVALID = "not a decision"
"""What an inline decision that was no usable ``Decision`` is replayed as (it denies the call)."""

_NAME = re.compile(r"^[a-z0-9_-]{3,256}$")


# ---------------------------------------------------------------- the steps and the workflow


async def _model_step(turn: int, body: JSONObject) -> JSONObject:
    """One model request; its failure is stored as data, so a replay fails the same way."""
    run = _RUN.get()
    await run.gate.live_model(turn)
    try:
        response = await run.inner.request_model(ModelRequest(turn, body))
    except AgentError as exc:
        return {"turn": turn, "error": error_to_json(exc)}
    return {"turn": turn, "response": response.body}


async def _tool_step(request: JSONObject) -> JSONObject:
    """One tool call (its output is always JSON: the runtime already made it text)."""
    run = _RUN.get()
    call = ToolRequest.from_json(request)
    await run.gate.live_call(call.turn, call.call_id)
    outcome = await run.inner.call_tool(call)
    return {**outcome.to_json(), "turn": call.turn, "call_id": call.call_id, "name": call.name}


async def _decision_step(turn: int, call_id: str) -> JSONObject:
    """The ``on_approval`` hook's answer for one call, stored (a replay decides the same way)."""
    run = _RUN.get()
    asked = await run.gate.live_approval(turn, call_id)
    if run.decide is None or asked is None:
        return {"answer": None}
    try:
        answer = await run.decide(asked)
    except HookError as exc:
        return {"error": str(exc)}
    if answer is None:
        return {"answer": None}
    if not isinstance(answer, Decision):
        return {"answer": _INVALID}
    try:
        return {"answer": decision_to_json(call_id, answer)}
    except (TypeError, ValueError):
        return {"answer": _INVALID}


async def _wait_step() -> float:
    """When a wait for approvals began (the clock an ``approval_timeout`` counts from)."""
    return time.time()


async def _run_workflow(input: str | list[JSONObject], stream: bool = False) -> JSONObject:
    """A whole run; returns ``{"result": ...}`` or ``{"error": ..., "partial_result": ...}``."""
    worker = _active_worker()
    run_id = DBOS.workflow_id
    assert run_id is not None  # always set inside a workflow
    return await worker._execute(run_id, input, stream)


_model = DBOS.step(name=MODEL_STEP, retries_allowed=False)(_model_step)
_tool = DBOS.step(name=TOOL_STEP, retries_allowed=False)(_tool_step)
_decision = DBOS.step(name=DECISION_STEP, retries_allowed=False)(_decision_step)
_wait_began = DBOS.step(name=WAIT_STEP, retries_allowed=False)(_wait_step)
_workflow = DBOS.workflow(name=WORKFLOW)(_run_workflow)


# ---------------------------------------------------------------- one run's engine


@dataclass(frozen=True, slots=True)
class _DBOSEngine:
    """The engine boundary's two operations as DBOS steps around the in-process engine."""

    inner: InProcessEngine
    gate: ReplayGate
    limits: Limits
    decide: Decide | None = None
    """The ``on_approval`` hook, called inside its decision step."""
    approval_timeout: float | None = None

    async def request_model(self, request: ModelRequest, live: LiveTurn | None = None) -> ModelResponse:
        # ``live`` is ignored: a step is atomic, so the loop starts the calls after it.
        stored = await _model(request.turn, request.body)
        self.gate.model_done(request.turn)
        if "error" in stored:
            raise error_from_json(stored["error"])
        return response_from_json(stored["response"], self.limits)

    def call_tool(self, request: ToolRequest) -> Awaitable[ToolOutcome]:
        step = _tool(request.to_json())  # numbered now, in call order (see Engine.call_tool)
        return self._outcome(request, step)

    async def _outcome(self, request: ToolRequest, step: Awaitable[JSONObject]) -> ToolOutcome:
        stored = await step
        self.gate.call_done(request.turn, request.call_id)
        return ToolOutcome(stored["output"], stored["kind"], stored["error"], stored["duration"])

    async def decided_inline(self, asked: ApprovalRequested) -> object:
        """The loop's ``decide``: the hook's answer, through a step (``None``: wait for a person)."""
        stored = await _decision(asked.turn, asked.call_id)
        self.gate.approval_done(asked.turn, asked.call_id)
        if "error" in stored:
            raise HookError(stored["error"])
        answer = stored["answer"]
        if answer is None or answer == _INVALID:
            return answer  # an invalid answer is no Decision: the loop denies the call
        decoded = decision_from_json(answer)
        return decoded[1] if decoded is not None else _INVALID

    async def wait_for_decisions(
        self, turn: int, pending: Sequence[PendingApproval]
    ) -> Mapping[str, object] | None:
        """Publish the waiting calls, then receive their decisions durably; the undecided
        (after ``approval_timeout``) are left out, which denies them."""
        began = await _wait_began()
        await DBOS.set_event_async(PENDING_EVENT, pending_to_json(turn, pending))
        waiting = {each.call_id for each in pending}
        decisions: dict[str, Decision] = {}
        # (the loop stops the run's run_timeout while this waits: days are not its work)
        while waiting - decisions.keys():
            message = await DBOS.recv_async(DECISION_TOPIC, timeout_seconds=self._recv_timeout(began))
            if message is None:  # the recv timed out (recorded: a replay does the same)
                if self.approval_timeout is not None:
                    break
                continue
            decoded = decision_from_json(message)
            if decoded is None or decoded[0] not in waiting or decoded[0] in decisions:
                self.inner.log.warning("approval.ignored", turn=turn, message=repr(message)[:200])
                continue
            decisions[decoded[0]] = decoded[1]
            undecided = [each for each in pending if each.call_id not in decisions]
            if undecided:  # show what is still awaited; approve/deny refuse the rest
                await DBOS.set_event_async(PENDING_EVENT, pending_to_json(turn, undecided))
        await DBOS.set_event_async(PENDING_EVENT, None)
        return decisions

    def _recv_timeout(self, began: float) -> float:
        """Seconds the next ``recv`` may wait (only a live one uses it: a replay is recorded)."""
        if self.approval_timeout is None:
            return _RECV_CHUNK
        return max(0.0, began + self.approval_timeout - time.time())


_RUN: contextvars.ContextVar[_DBOSEngine] = contextvars.ContextVar("agent_durable_run")
"""The run a step belongs to (steps run in the workflow's task, so they see it)."""

_CALLER_HOOKS: contextvars.ContextVar[Hooks | None] = contextvars.ContextVar(
    "agent_durable_hooks", default=None
)


@dataclass(slots=True)
class _Process:
    worker: DBOSAgent | None = None
    """The process's one launched DBOSAgent: queued and recovered runs run on it."""


_PROCESS = _Process()


def _checkpointed(run_id: str) -> tuple[int, int]:
    """How many model requests and tool calls of ``run_id`` have a checkpoint.

    Read from DBOS's system database directly: ``DBOS.list_workflow_steps`` called inside the
    workflow would itself be a step, answered on a recovery with what it found the first time.
    """
    steps = _get_dbos_instance()._sys_db.list_workflow_steps(run_id)
    finished = [step["function_name"] for step in steps if step["output"] is not None]
    return finished.count(MODEL_STEP), finished.count(TOOL_STEP)


def _active_worker() -> DBOSAgent:
    if _PROCESS.worker is None:
        raise UsageError("a durable run arrived in a process with no DBOSAgent open")
    return _PROCESS.worker


# ---------------------------------------------------------------- the worker


class DBOSAgent:
    """``agent`` made durable: its runs survive crashes and spread over every worker.

    ``async with DBOSAgent(agent, ...) as durable:`` launches DBOS in this process, which is then
    a worker: it runs the runs it starts, takes enqueued runs from the queue, heartbeats, and
    recovers the pending runs of workers that died (see ``agent.durable._sweeper``).

    Args:
        agent: The agent whose model, tools and settings every run uses (you close it).
        name: The DBOS application name (3-256 of ``a-z 0-9 _ -``): workflows, the queue and
            recovery are scoped by it; the CLI's ``--name`` is the same thing.
        database_url: ``sqlite:///path`` or ``postgresql://...`` (default ``$AGENT_DURABLE_URL``).
        deps: A factory called in the worker for each run it executes, for ``ToolContext.deps``
            (not sent from whoever enqueued the run).
        hooks: Hooks for the runs this worker executes (``run(hooks=...)`` wins for its own).
        executor_id: This worker's id in DBOS (default: unique per process). Give a stable one
            to have a restarted worker take its own pending runs back at once.
        global_concurrency: Runs in flight at once over all workers (``None``: no limit).
        worker_concurrency: Runs in flight at once per worker (one value for the queue).
        poll_interval: Seconds between the queue's polls for new runs.
        heartbeat_interval: Seconds between this worker's heartbeats and sweeps.
        dead_after: Seconds without a heartbeat after which a worker is dead and its runs are
            recovered elsewhere (at once for a dead process on this machine).
        approval_timeout: Seconds a run waits for the decisions on its calls that need
            approval; the calls still undecided then are denied (default ``None``: it waits as
            long as it takes, days included). The wait is not part of the run's ``run_timeout``.
    """

    def __init__(
        self,
        agent: Agent,
        *,
        name: str = DEFAULT_NAME,
        database_url: str | None = None,
        deps: Callable[[], Any] | None = None,
        hooks: Hooks | None = None,
        executor_id: str | None = None,
        global_concurrency: int | None = None,
        worker_concurrency: int | None = None,
        poll_interval: float = 0.2,
        heartbeat_interval: float = 2.0,
        dead_after: float = 10.0,
        approval_timeout: float | None = None,
    ) -> None:
        self.agent = agent
        self.name = _checked_name(name)
        self.database_url = _database_url(database_url)
        self.executor_id = executor_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._deps = deps
        self._hooks = hooks
        self._queue_limits = (global_concurrency, worker_concurrency, poll_interval)
        if not 0 < heartbeat_interval < dead_after:
            raise UsageError(
                f"need 0 < heartbeat_interval < dead_after, got {heartbeat_interval}, {dead_after}"
            )
        self._heartbeat = (heartbeat_interval, dead_after)
        if approval_timeout is not None and not approval_timeout >= 0:
            raise UsageError(f"approval_timeout must be >= 0 seconds (or None), got {approval_timeout!r}")
        self._approval_timeout = approval_timeout
        self._sweeper: Sweeper | None = None
        self._sweeping: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"DBOSAgent(name={self.name!r}, executor_id={self.executor_id!r})"

    async def __aenter__(self) -> Self:
        await self.launch()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def launch(self) -> None:
        """Launch DBOS in this process (it becomes a worker); :meth:`aclose` undoes it."""
        _require_asyncio()
        if _PROCESS.worker is not None:
            raise UsageError(
                f"a DBOSAgent is already open in this process ({_PROCESS.worker!r}): DBOS is one "
                "instance per process; close it first, or run the other application in its own process"
            )
        _PROCESS.worker = self
        try:
            DBOS(config=_config(self.name, self.database_url, self.executor_id))
            DBOS.launch()
            global_limit, worker_limit, poll = self._queue_limits
            await DBOS.register_queue_async(
                QUEUE,
                global_concurrency=global_limit,
                worker_concurrency=worker_limit,
                polling_interval_sec=poll,
            )
            # After DBOS's launch (the sweeper uses it), before any run: a worker that does not
            # beat would look dead to the others.
            interval, dead_after = self._heartbeat
            log = self.agent._log.bind(executor_id=self.executor_id)
            sweeper = Sweeper(
                self.database_url,
                self.name,
                self.executor_id,
                interval=interval,
                dead_after=dead_after,
                logger=log,
            )
            self._sweeper = await sweeper.__aenter__()
        except BaseException:
            await self._shut_down()
            raise
        self._sweeping = asyncio.create_task(sweeper.run(), name=f"agent-sweeper-{self.executor_id}")

    async def aclose(self) -> None:
        """Stop this worker: its runs in flight stay pending and are recovered elsewhere."""
        if self._sweeping is not None:
            self._sweeping.cancel()
            await asyncio.gather(self._sweeping, return_exceptions=True)
            self._sweeping = None
        try:
            await self._shut_down()
        finally:
            if self._sweeper is not None:
                await self._sweeper.aclose()  # after DBOS: its row goes once it runs nothing
                self._sweeper = None

    async def _shut_down(self) -> None:
        if _PROCESS.worker is self:
            await anyio.to_thread.run_sync(DBOS.destroy)
            # DBOS made its own (now shut down) pool the loop's default executor: give the
            # loop a working one back, or its next to_thread or DNS lookup would fail.
            asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor())
            _PROCESS.worker = None

    async def run(
        self,
        input: str | Sequence[JSONObject],
        *,
        run_id: str | None = None,
        hooks: Hooks | None = None,
        stream: bool = False,
    ) -> RunResult:
        """Run to the end in this process; or, for a known ``run_id``, its result.

        A run id that completed returns its stored result (``input`` is not used); one pending
        on a live worker is waited for; one pending on a dead worker is recovered now and
        waited for. Raises what the run raised (with ``partial_result``), as ``Agent.run`` does.
        """
        sweeper = self._check_open()
        run_id = run_id or uuid.uuid4().hex
        await sweeper.recover(run_id)
        token = _CALLER_HOOKS.set(hooks)
        try:
            with SetWorkflowID(run_id):
                handle: WorkflowHandleAsync[JSONObject] = await DBOS.start_workflow_async(
                    _workflow, input_to_json(input), stream
                )
        finally:
            _CALLER_HOOKS.reset(token)
        return outcome_of(await handle.get_result(polling_interval_sec=0.1), self._output_type)

    async def enqueue(self, input: str | Sequence[JSONObject], *, run_id: str | None = None) -> str:
        """Put a run on the durable queue, for any worker; returns its run id."""
        self._check_open()
        run_id = run_id or uuid.uuid4().hex
        with SetWorkflowID(run_id):
            await DBOS.enqueue_workflow_async(QUEUE, _workflow, input_to_json(input), False)
        return run_id

    async def result(self, run_id: str) -> RunResult:
        """Wait for run ``run_id`` (recovering it first if its worker died) and return its result."""
        await self._check_open().recover(run_id)
        read = partial(DBOS.list_workflows, workflow_ids=[run_id])
        return await _wait_for(run_id, read, 0.1, self._output_type)

    async def approve(self, run_id: str, call_id: str, *, arguments: Mapping[str, Any] | None = None) -> None:
        """Approve call ``call_id``, which run ``run_id`` waits for (with ``arguments`` instead of
        the model's, if given); the run goes on once all its waiting calls are decided.

        Raises ``UsageError`` if the run does not wait for that call now (unknown, or decided).
        """
        await self._decide(run_id, call_id, _approval(arguments))

    async def deny(self, run_id: str, call_id: str, *, reason: str = "") -> None:
        """Deny call ``call_id`` of run ``run_id``; the model reads ``reason``."""
        await self._decide(run_id, call_id, deny(reason))

    async def _decide(self, run_id: str, call_id: str, decision: Decision) -> None:
        self._check_open()
        message = _message(call_id, decision)
        _check_waits(run_id, call_id, await DBOS.get_event_async(run_id, PENDING_EVENT, timeout_seconds=0))
        await DBOS.send_async(run_id, message, DECISION_TOPIC)

    @property
    def _output_type(self) -> Any:
        """The agent's ``output_type``: what ``output_parsed`` is rebuilt as (``None``: JSON)."""
        output = self.agent.settings.output
        return output.type if output is not None else None

    def _check_open(self) -> Sweeper:
        """This worker's sweeper; raises unless this DBOSAgent is open."""
        if _PROCESS.worker is not self or self._sweeper is None:
            raise UsageError("this DBOSAgent is not open: use `async with DBOSAgent(...) as durable:`")
        return self._sweeper

    async def _execute(self, run_id: str, input: str | list[JSONObject], stream: bool) -> JSONObject:
        """The workflow's body: the agent's loop through a DBOS engine."""
        agent = self.agent
        hooks = _CALLER_HOOKS.get() or self._hooks
        done = await anyio.to_thread.run_sync(_checkpointed, run_id)
        gate = ReplayGate(partial(dispatch_to_hooks, hooks), run_id, agent.model, done)
        log = agent._log.bind(run_id=run_id, executor_id=self.executor_id)
        deps = self._deps() if self._deps is not None else None
        settings = await agent._with_current_tools(agent.settings)
        inner = InProcessEngine.for_run(
            agent._client, settings.execution, run_id=run_id, deps=deps, emit=gate.emit, log=log
        )
        engine = _DBOSEngine(inner, gate, agent.settings.limits, _decider(hooks), self._approval_timeout)
        token = _RUN.set(engine)
        try:
            result = await agent._run_on(
                engine,
                input,
                run_id=run_id,
                emit=gate.emit,
                log=log,
                stream=stream,
                # per execution (a recovery starts afresh); a wait for approvals does not count
                run_timeout=agent.settings.run_timeout,
                settings=settings,
                deps=deps,
                decide=engine.decided_inline,
            )
        except AgentError as exc:
            partial_result = result_to_json(exc.partial_result) if exc.partial_result else None
            return {"error": error_to_json(exc), "partial_result": partial_result}
        finally:
            _RUN.reset(token)
        return {"result": result_to_json(result)}


# ---------------------------------------------------------------- any process


@dataclass(frozen=True, slots=True)
class RunInfo:
    """What ``agent runs`` shows of one durable run."""

    run_id: str
    status: str
    """``enqueued``, ``pending``, ``awaiting_approval`` (pending, waiting for decisions),
    ``completed``, ``incomplete``, ``failed`` or ``cancelled``."""
    executor_id: str | None
    created_at: float | None
    """Seconds since the epoch."""
    turns: int
    """Model requests checkpointed so far."""
    tool_calls: int
    """Tool calls checkpointed so far."""
    output: str | None = None
    error: str | None = None
    pending_approvals: tuple[PendingApproval, ...] = ()
    """The calls a run in status ``awaiting_approval`` waits for (approve or deny each)."""


class DBOSRuns:
    """Durable runs seen from any process (a DBOS client; no worker code runs here).

    Enqueues runs for the workers of application ``name``, lists them, shows one, waits for
    one. Works on a database no worker has set up yet: it creates DBOS's tables first.
    """

    def __init__(self, database_url: str | None = None, *, name: str = DEFAULT_NAME) -> None:
        self.database_url = _database_url(database_url)
        self.name = _checked_name(name)
        self._client: DBOSClient | None = None

    async def __aenter__(self) -> Self:
        # anyio's threads, not the loop's default executor, which a DBOS worker replaces.
        await anyio.to_thread.run_sync(DBOS.migrate, self.database_url)
        self._client = await anyio.to_thread.run_sync(
            partial(
                DBOSClient,
                system_database_url=self.database_url,
                serializer=DBOSPortableJSONSerializer(),
                application_name=self.name,
            )
        )
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._client is not None:
            await anyio.to_thread.run_sync(self._client.destroy)
            self._client = None

    @property
    def client(self) -> DBOSClient:
        if self._client is None:
            raise UsageError("use `async with DBOSRuns(...) as runs:`")
        return self._client

    async def enqueue(self, input: str | Sequence[JSONObject], *, run_id: str | None = None) -> str:
        """Put a run on the queue of application ``name``; returns its run id."""
        run_id = run_id or uuid.uuid4().hex
        options = {
            "workflow_name": WORKFLOW,
            "queue_name": QUEUE,
            "workflow_id": run_id,
            "app_version": APPLICATION_VERSION,
        }
        enqueue = partial(self.client.enqueue, options, input_to_json(input), False)  # type: ignore[arg-type]
        await anyio.to_thread.run_sync(enqueue)
        return run_id

    async def result(self, run_id: str) -> RunResult:
        """Wait for run ``run_id`` and return its result (raise its error)."""
        return await _wait_for(run_id, partial(self.client.list_workflows, workflow_ids=[run_id]), 0.2)

    async def list(self, *, limit: int = 50) -> list[RunInfo]:
        """The newest runs of this application, newest first."""
        find = partial(self.client.list_workflows, name=WORKFLOW, limit=limit, sort_desc=True)
        statuses = await anyio.to_thread.run_sync(find)
        return [await self._info(status) for status in statuses]

    async def show(self, run_id: str) -> RunInfo | None:
        """One run, or ``None`` if there is no run with that id."""
        find = partial(self.client.list_workflows, workflow_ids=[run_id])
        statuses = await anyio.to_thread.run_sync(find)
        return await self._info(statuses[0]) if statuses else None

    async def approve(self, run_id: str, call_id: str, *, arguments: Mapping[str, Any] | None = None) -> None:
        """Approve call ``call_id`` of run ``run_id`` (see :meth:`DBOSAgent.approve`)."""
        await self._decide(run_id, call_id, _approval(arguments))

    async def deny(self, run_id: str, call_id: str, *, reason: str = "") -> None:
        """Deny call ``call_id`` of run ``run_id`` (see :meth:`DBOSAgent.deny`)."""
        await self._decide(run_id, call_id, deny(reason))

    async def _decide(self, run_id: str, call_id: str, decision: Decision) -> None:
        message = _message(call_id, decision)
        published = await anyio.to_thread.run_sync(self.client.get_event, run_id, PENDING_EVENT, 0)
        _check_waits(run_id, call_id, published)
        await anyio.to_thread.run_sync(self.client.send, run_id, message, DECISION_TOPIC)

    async def _info(self, status: Any) -> RunInfo:
        steps = await anyio.to_thread.run_sync(self.client.list_workflow_steps, status.workflow_id)
        turns = sum(1 for step in steps if step["function_name"] == MODEL_STEP)
        calls = sum(1 for step in steps if step["function_name"] == TOOL_STEP)
        created = status.created_at / 1000 if status.created_at else None
        info = RunInfo(status.workflow_id, status.status.lower(), status.executor_id, created, turns, calls)
        document = status.output if isinstance(status.output, dict) else None
        if status.status == "SUCCESS" and document is not None:
            return _finished_info(info, document)
        if status.error is not None:
            return dataclasses.replace(info, status="failed", error=str(status.error))
        if status.status in ("PENDING", "ENQUEUED"):  # enqueued: recovered from a dead worker
            read = partial(self.client.get_event, status.workflow_id, PENDING_EVENT, 0)
            pending = pending_from_json(await anyio.to_thread.run_sync(read))
            if pending:
                return dataclasses.replace(info, status="awaiting_approval", pending_approvals=pending)
        return info


def _finished_info(info: RunInfo, document: JSONObject) -> RunInfo:
    if "error" in document:
        return dataclasses.replace(info, status="failed", error=str(error_from_json(document["error"])))
    result = document["result"]
    return dataclasses.replace(info, status=result["status"], output=result["output"])


# ---------------------------------------------------------------- shared


async def _wait_for(
    run_id: str, read: Callable[[], list[WorkflowStatus]], poll: float, output_type: Any = None
) -> RunResult:
    """Poll run ``run_id`` until it ends (cancellable between polls: no thread is left waiting)."""
    while True:
        statuses = await anyio.to_thread.run_sync(read)
        if not statuses:
            raise UsageError(f"no durable run with id {run_id!r}")
        status = statuses[0]
        if status.status == "SUCCESS" and isinstance(status.output, dict):
            return outcome_of(status.output, output_type)
        if status.status == "SUCCESS" or status.status not in ("PENDING", "ENQUEUED", "DELAYED"):
            raise RunError(f"durable run {run_id!r} ended as {status.status}: {status.error}")
        await anyio.sleep(poll)


def _approval(arguments: Mapping[str, Any] | None) -> Decision:
    if arguments is not None and not isinstance(arguments, Mapping):
        raise UsageError(f"approved arguments must be a JSON object, got {type(arguments).__name__}")
    return approve(arguments=arguments)


def _message(call_id: str, decision: Decision) -> JSONObject:
    """The message deciding ``call_id`` (edited arguments must be a JSON object)."""
    try:
        return decision_to_json(call_id, decision)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"approved arguments must be a JSON object: {exc}") from None


def _check_waits(run_id: str, call_id: str, published: object) -> None:
    """Refuse a decision for a call run ``run_id`` does not wait for now."""
    waiting = [each.call_id for each in pending_from_json(published)]
    if call_id not in waiting:
        now = f"it waits for {', '.join(waiting)}" if waiting else "it waits for no approval"
        raise UsageError(f"durable run {run_id!r} does not wait for call {call_id!r}: {now}")


def _config(name: str, url: str, executor_id: str) -> DBOSConfig:
    return {
        "name": name,
        "system_database_url": url,
        "executor_id": executor_id,
        "application_version": APPLICATION_VERSION,
        "serializer": DBOSPortableJSONSerializer(),
        "log_level": os.environ.get("AGENT_DBOS_LOG_LEVEL", "WARNING"),
    }


def _checked_name(name: str) -> str:
    if not _NAME.match(name):
        raise UsageError(f"a durable application name is 3-256 characters of a-z 0-9 _ -, got {name!r}")
    return name


def _database_url(url: str | None) -> str:
    url = url or os.environ.get("AGENT_DURABLE_URL")
    if not url:
        raise UsageError("no database for durable runs: pass database_url=... or set AGENT_DURABLE_URL")
    if not url.startswith(("sqlite:///", "postgresql://", "postgres://", "postgresql+psycopg://")):
        raise UsageError("a durable database URL is sqlite:///path or postgresql://...")
    return url


def _require_asyncio() -> None:
    if sniffio.current_async_library() != "asyncio":
        raise UsageError("durable runs on DBOS need asyncio (DBOS does not run under trio)")
