"""Durable runs on Temporal: a run is a workflow, each model request and each tool call an activity.

``pip install 'agent-runtime[temporal]'`` (and a Temporal server). The user's ``@tool`` functions
are the same as for an in-process run: the activities run the in-process engine
(``agent._inprocess``) in a worker process, and the workflow is the agent's own loop
(``Agent._run_on``) through an engine whose two operations start activities, in call order.
Temporal records each activity's result in the run's history; after a worker dies, another
worker replays the history (the loop, a deterministic function of those results, arrives
where it was) and runs only what had not completed.

The workflow runs in Temporal's sandbox with ``agent`` and the libraries it uses passed through
(the loop reads no clock, no random, does no I/O: that is the engine boundary's contract).
Await of an activity goes through :func:`_settled`: a cancelled anyio scope must see the awaiting
task end at once, or Temporal's deadlock detector fails the workflow task.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar, cast

import sniffio
import temporalio.exceptions
from structlog.typing import FilteringBoundLogger
from temporalio import activity, workflow
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.common import RetryPolicy, WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import (
    RestrictedWorkflowAccessError,
    SandboxedWorkflowRunner,
    SandboxRestrictions,
)

from agent._agent import Agent
from agent._approvals import Decision, PendingApproval, approve, deny
from agent._engine import LiveTurn, ModelRequest, ToolOutcome, ToolRequest, response_from_json
from agent._errors import AgentError, RunError, UsageError
from agent._events import (
    ApprovalRequested,
    Hooks,
    ModelResponded,
    RunEvent,
    RunFinished,
    RunResumed,
    ToolCallFinished,
    ToolCallStarted,
    dispatch_to_hooks,
)
from agent._inprocess import InProcessEngine
from agent._limits import Limits
from agent._loop import LoopSettings
from agent._result import JSONObject, RunResult
from agent._wire import ModelResponse
from agent.durable._json import (
    decision_from_json,
    decision_to_json,
    error_from_json,
    error_to_json,
    input_to_json,
    outcome_of,
    result_to_json,
)

# Loaded now, before any workflow: anyio imports its backend and these lazily, on first use,
# and an import from inside a workflow goes through the sandbox, which refuses them.
for _lazy in ("anyio._backends._asyncio", "anyio.abc", "anyio.lowlevel"):
    importlib.import_module(_lazy)

__all__ = [
    "DEFAULT_NAME",
    "DEFAULT_PAYLOAD_LIMIT",
    "MODEL_ACTIVITY",
    "TOOL_ACTIVITY",
    "WORKFLOW",
    "RunWorkflow",
    "TemporalAgent",
    "start_run",
]

DEFAULT_NAME = "agent-runtime"
"""The application name (and default task queue) the CLI and :class:`TemporalAgent` share."""

WORKFLOW = "agent_runtime.run"
MODEL_ACTIVITY = "agent_runtime.model"
TOOL_ACTIVITY = "agent_runtime.tool"

DEFAULT_PAYLOAD_LIMIT = 1_500_000
"""Bytes of JSON a model response or tool outcome may have (Temporal refuses payloads over 2 MiB)."""

PASSTHROUGH = ("agent", "anyio", "sniffio", "structlog", "httpx", "httpcore", "tenacity", "h11", "certifi")
"""Modules the workflow sandbox shares with the worker instead of re-importing them."""

_T = TypeVar("_T")


# ---------------------------------------------------------------- the process's workers


@dataclass(slots=True)
class _Serving:
    """One :class:`TemporalAgent` serving in this process, with its tools as listed at start."""

    durable: TemporalAgent
    settings: LoopSettings


_SERVING: dict[str, _Serving] = {}
"""By application name: what the workflow and the activities of that application run with."""


def _serving(name: str) -> _Serving:
    serving = _SERVING.get(name)
    if serving is None:
        raise UsageError(f"a Temporal run of {name!r} arrived in a process with no worker for it")
    return serving


def _size(document: object) -> int:
    return len(json.dumps(document, separators=(",", ":")))


async def _heartbeating(work: Awaitable[_T], every: float) -> _T:
    """``work``'s result, heartbeating every ``every`` seconds meanwhile (threads included)."""
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait([task], timeout=every)
            if done:
                return task.result()
            activity.heartbeat()
    finally:
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


def _run_id() -> str:
    """The run id of the current activity: its workflow's id."""
    run_id = activity.info().workflow_id
    if run_id is None:
        raise UsageError("an agent-runtime activity ran outside a workflow")
    return run_id


def _inner(serving: _Serving, run_id: str) -> InProcessEngine:
    durable = serving.durable
    agent = durable.agent
    deps = durable._deps() if durable._deps is not None else None

    async def emit(event: RunEvent) -> None:
        await _live_hooks(durable._hooks, event, agent)

    log = agent._log.bind(run_id=run_id)
    return InProcessEngine.for_run(
        agent._client, serving.settings.execution, run_id=run_id, deps=deps, emit=emit, log=log
    )


async def _live_hooks(hooks: Hooks | None, event: RunEvent, agent: Agent) -> None:
    """The worker's hooks for ``event``; an error in one is logged, never changes the run
    (it would not happen again on a replay, so the run could not depend on it)."""
    try:
        await dispatch_to_hooks(hooks, event)
    except AgentError as exc:
        agent._log.warning("temporal.hook_error", error=str(exc))


# ---------------------------------------------------------------- activities


@activity.defn(name=MODEL_ACTIVITY)
async def _model_activity(name: str, turn: int, body: JSONObject) -> JSONObject:
    """One model request; its failure is returned as data, so the run ends with it."""
    serving = _serving(name)
    inner = _inner(serving, _run_id())
    limit = serving.durable.payload_limit
    try:
        request = inner.request_model(ModelRequest(turn, body))
        response = await _heartbeating(request, serving.durable._beat)
    except AgentError as exc:
        return {"error": error_to_json(exc)}
    size = _size(response.body)
    if size > limit:
        error = RunError(
            f"the model's response of turn {turn} is {size} bytes of JSON, over the durable "
            f"payload limit of {limit} bytes (TemporalAgent(payload_limit=...), below Temporal's 2 MiB)"
        )
        return {"error": error_to_json(error)}
    return {"response": response.body}


@activity.defn(name=TOOL_ACTIVITY)
async def _tool_activity(name: str, request: JSONObject) -> JSONObject:
    """One tool call to its outcome (a tool's failure is an outcome: data, not a retry)."""
    serving = _serving(name)
    call = ToolRequest.from_json(request)
    inner = _inner(serving, _run_id())
    outcome = await _heartbeating(inner.call_tool(call), serving.durable._beat)
    document = outcome.to_json()
    limit = serving.durable.payload_limit
    size = _size(document)
    if size > limit:
        message = (
            f"the output of {call.name} is {size} bytes of JSON, over the durable payload limit of "
            f"{limit} bytes: return less (or a reference to where the rest is)"
        )
        document = ToolOutcome(f"Error: {message}", "tool_error", message, outcome.duration).to_json()
    return document


# ---------------------------------------------------------------- the workflow


@contextlib.contextmanager
def _outside_sandbox() -> Iterator[None]:
    """For the user's code called from the workflow (hooks, loggers): no sandbox rules, no re-imports."""
    with workflow.unsafe.sandbox_unrestricted(), workflow.unsafe.imports_passed_through():
        yield


class _WorkflowLogger:
    """A run's logger in its workflow: silent on a replay (it logged live), out of the sandbox."""

    def __init__(self, inner: FilteringBoundLogger) -> None:
        self._inner = inner

    def bind(self, **values: Any) -> FilteringBoundLogger:
        return cast(FilteringBoundLogger, _WorkflowLogger(self._inner.bind(**values)))

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self._inner, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            if workflow.unsafe.is_replaying():
                return None
            with _outside_sandbox():
                return method(*args, **kwargs)

        return call


async def _settled(handle: asyncio.Future[_T]) -> _T:
    """An activity's result; cancelled, this task ends at once and the activity is asked to stop."""
    try:
        return await asyncio.shield(handle)
    except asyncio.CancelledError:
        handle.cancel()
        raise


@dataclass(slots=True)
class _Progress:
    """What the ``progress`` query answers: the run as its workflow sees it now."""

    status: str = "running"
    turns: int = 0
    tool_calls: int = 0
    running: dict[str, str] = field(default_factory=dict)
    """Tool calls started and not finished: call id to tool name."""
    awaiting_approval: list[str] = field(default_factory=list)
    input_tokens: int = 0
    output_tokens: int = 0

    def see(self, event: RunEvent) -> None:
        if isinstance(event, ModelResponded):
            self.turns = max(self.turns, event.turn)
            self.input_tokens += event.usage.input_tokens
            self.output_tokens += event.usage.output_tokens
        elif isinstance(event, ToolCallStarted):
            self.running[event.call_id] = event.name
        elif isinstance(event, ToolCallFinished):
            self.running.pop(event.record.call_id, None)
            self.tool_calls += 1
        elif isinstance(event, ApprovalRequested):
            self.awaiting_approval.append(event.call_id)
        elif isinstance(event, RunFinished):
            self.status = event.result.status

    def to_json(self) -> JSONObject:
        return {
            "status": self.status,
            "turns": self.turns,
            "tool_calls": self.tool_calls,
            "running": dict(self.running),
            "awaiting_approval": list(self.awaiting_approval),
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
        }


@workflow.defn(name=WORKFLOW, failure_exception_types=[RestrictedWorkflowAccessError])
class RunWorkflow:
    """One run: the agent's loop, with activities for its model requests and tool calls."""

    def __init__(self) -> None:
        self._progress = _Progress()
        self._messages: list[object] = []
        """``decide`` signals not read yet (read, strictly, while the run waits for decisions)."""

    @workflow.run
    async def run(self, start: JSONObject) -> JSONObject:
        """Returns ``{"result": ...}`` or ``{"error": ..., "partial_result": ...}``."""
        serving = _serving(start["name"])
        agent = serving.durable.agent
        run_id = workflow.info().workflow_id
        log = cast(FilteringBoundLogger, _WorkflowLogger(agent._log.bind(run_id=run_id)))
        engine = _TemporalEngine(serving.durable, agent.settings.limits, self, log)

        replayed = False

        async def emit(event: RunEvent) -> None:
            nonlocal replayed
            progress = self._progress
            if workflow.unsafe.is_replaying():
                replayed = True  # its hooks ran live, on the worker that ran it first
                progress.see(event)
                return
            with _outside_sandbox():
                if replayed:  # the first live event after a replay: say where the run resumes
                    replayed = False
                    resumed = RunResumed(run_id, agent.model, progress.turns, progress.tool_calls)
                    await _live_hooks(serving.durable._hooks, resumed, agent)
                progress.see(event)
                await _live_hooks(serving.durable._hooks, event, agent)

        try:
            result = await agent._run_on(
                engine,
                start["input"],
                run_id=run_id,
                emit=emit,
                log=log,
                stream=bool(start.get("stream", False)),
                run_timeout=agent.settings.run_timeout,  # a durable timer: it bounds the whole run
                settings=serving.settings,
            )
        except AgentError as exc:
            self._progress.status = "failed"
            partial_result = result_to_json(exc.partial_result) if exc.partial_result else None
            return {"error": error_to_json(exc), "partial_result": partial_result}
        return {"result": result_to_json(result)}

    @workflow.query(name="progress")
    def progress(self) -> JSONObject:
        """The run so far: status, turns, finished and running tool calls, tokens, approvals."""
        return self._progress.to_json()

    @workflow.signal(name="decide")
    def decide(self, message: Any) -> None:
        """A decision for a call waiting for approval (``agent.durable.decision_to_json``'s message)."""
        self._messages.append(message)


@dataclass(slots=True)
class _TemporalEngine:
    """The engine boundary's two operations as activities, started in call order."""

    durable: TemporalAgent
    limits: Limits
    flow: RunWorkflow
    log: FilteringBoundLogger
    _calls: int = 0

    async def request_model(self, request: ModelRequest, live: LiveTurn | None = None) -> ModelResponse:
        # ``live`` is ignored: an activity is atomic, so the loop starts the calls after it.
        self._check_size(f"turn {request.turn}'s model request", request.body)
        durable = self.durable
        handle = workflow.start_activity(
            MODEL_ACTIVITY,
            args=[durable.name, request.turn, request.body],
            activity_id=f"model:{request.turn}",
            **durable._activity_options(),
        )
        stored: JSONObject = await _settled(handle)
        if "error" in stored:
            raise error_from_json(stored["error"])
        return response_from_json(stored["response"], self.limits)

    def call_tool(self, request: ToolRequest) -> Awaitable[ToolOutcome]:
        self._calls += 1  # numbered now, in call order (see Engine.call_tool)
        durable = self.durable
        handle = workflow.start_activity(
            TOOL_ACTIVITY,
            args=[durable.name, request.to_json()],
            activity_id=f"tool:{request.turn}:{self._calls}:{request.call_id}",
            task_queue=durable.tool_queue(request.name),
            **durable._activity_options(),
        )
        return self._outcome(handle)

    async def _outcome(self, handle: asyncio.Future[JSONObject]) -> ToolOutcome:
        return ToolOutcome.from_json(await _settled(handle))

    async def wait_for_decisions(
        self, turn: int, pending: Sequence[PendingApproval]
    ) -> Mapping[str, object] | None:
        """Waits (durably, holding no worker) for ``decide`` signals deciding every call; the
        undecided after ``approval_timeout`` (a workflow timer) are left out, which denies them."""
        waiting = {each.call_id for each in pending}
        decisions: dict[str, Decision] = {}
        flow, progress = self.flow, self.flow._progress
        progress.status = "awaiting_approval"
        timeout = self.durable.approval_timeout
        deadline = None if timeout is None else workflow.time() + timeout
        while waiting - decisions.keys():
            if not flow._messages:
                left = None if deadline is None else deadline - workflow.time()
                if left is not None and left <= 0:
                    break
                try:
                    await workflow.wait_condition(lambda: bool(flow._messages), timeout=left)
                except TimeoutError:
                    break
                continue
            message = flow._messages.pop(0)
            decoded = decision_from_json(message)
            if decoded is None or decoded[0] not in waiting or decoded[0] in decisions:
                self.log.warning("approval.ignored", turn=turn, message=repr(message)[:200])
                continue
            decisions[decoded[0]] = decoded[1]
            progress.awaiting_approval = [call for call in progress.awaiting_approval if call != decoded[0]]
        progress.status = "running"
        progress.awaiting_approval = [call for call in progress.awaiting_approval if call not in waiting]
        return decisions

    def _check_size(self, what: str, document: JSONObject) -> None:
        size = _size(document)
        if size > self.durable.payload_limit:
            raise RunError(
                f"{what} is {size} bytes of JSON, over the durable payload limit of "
                f"{self.durable.payload_limit} bytes (the conversation grew too large for one activity)"
            )


# ---------------------------------------------------------------- the client and the worker


class TemporalAgent:
    """``agent`` made durable on Temporal: its runs are workflows, run by any worker of ``name``.

    Args:
        agent: The agent whose model, tools and settings every run uses (you close it).
        name: The application name: it names the workflow's worker registration and is the
            default task queue; workers and clients of one application use the same name.
        client: A connected ``temporalio.client.Client`` (``await Client.connect("host:port")``).
        task_queue: The task queue of runs and activities (default: ``name``).
        deps: A factory called in the worker for each activity, for ``ToolContext.deps``.
        hooks: Hooks the worker calls, live only: not again for what a replay goes over.
        heartbeat_timeout: Seconds without a heartbeat after which an activity's worker is
            taken for dead and the activity is retried on another (activities beat every third).
        activity_timeout: Seconds one model request or tool call may take at most.
        payload_limit: Bytes of JSON a model request, response or tool outcome may have.
        sticky_timeout: Seconds a run waits for the worker that had it before another takes it.
        max_concurrent_activities: Activities at once on this worker (``None``: Temporal's default).
        approval_timeout: Seconds a run waits for decisions on calls that need approval; those
            still undecided then are denied (``None``: it waits as long as it takes).
    """

    def __init__(
        self,
        agent: Agent,
        *,
        name: str = DEFAULT_NAME,
        client: Client,
        task_queue: str | None = None,
        deps: Any = None,
        hooks: Hooks | None = None,
        heartbeat_timeout: float = 10.0,
        activity_timeout: float = 3600.0,
        payload_limit: int = DEFAULT_PAYLOAD_LIMIT,
        sticky_timeout: float = 2.0,
        max_concurrent_activities: int | None = None,
        approval_timeout: float | None = None,
    ) -> None:
        if not 0 < payload_limit < 2 * 1024 * 1024:
            raise UsageError(
                f"payload_limit must be between 0 and 2 MiB (Temporal's limit), got {payload_limit}"
            )
        if approval_timeout is not None and not approval_timeout >= 0:
            raise UsageError(f"approval_timeout must be >= 0 seconds (or None), got {approval_timeout!r}")
        if heartbeat_timeout <= 0 or activity_timeout <= 0 or sticky_timeout <= 0:
            raise UsageError("heartbeat_timeout, activity_timeout and sticky_timeout must be positive")
        self.agent = agent
        self.name = name
        self.client = client
        self.task_queue = task_queue or name
        self.payload_limit = payload_limit
        self.approval_timeout = approval_timeout
        self._deps = deps
        self._hooks = hooks
        self._heartbeat_timeout = heartbeat_timeout
        self._activity_timeout = activity_timeout
        self._sticky_timeout = sticky_timeout
        self._max_activities = max_concurrent_activities

    def __repr__(self) -> str:
        return f"TemporalAgent(name={self.name!r}, task_queue={self.task_queue!r})"

    @property
    def _beat(self) -> float:
        return self._heartbeat_timeout / 3

    def tool_queue(self, tool_name: str) -> str:
        """The task queue a tool's calls go to: its own when it has ``max_concurrency``."""
        tool = self.agent.settings.execution.tools.get(tool_name)
        if tool is not None and tool.limiter is not None:
            return f"{self.task_queue}.tool.{tool_name}"
        return self.task_queue

    def _activity_options(self) -> dict[str, Any]:
        return {
            "start_to_close_timeout": timedelta(seconds=self._activity_timeout),
            "heartbeat_timeout": timedelta(seconds=self._heartbeat_timeout),
            # Only a lost worker (a timeout) or a bug fails an activity: a failure of the
            # model or a tool comes back as data. Retries go on until the run's own bounds.
            "retry_policy": RetryPolicy(maximum_interval=timedelta(seconds=5)),
        }

    # ------------------------------------------------------------ the worker

    @contextlib.asynccontextmanager
    async def worker(self) -> AsyncIterator[None]:
        """Serve this application's runs and activities while the ``async with`` lasts.

        Lists the agent's tool sources (MCP) once, here, outside any workflow: runs on this
        worker use that list. A tool with ``max_concurrency=N`` gets a task queue of its own,
        served here by at most N activities at once.
        """
        if sniffio.current_async_library() != "asyncio":
            raise UsageError("durable runs on Temporal need asyncio")
        if self.name in _SERVING:
            raise UsageError(f"a Temporal worker of {self.name!r} already serves in this process")
        settings = await self.agent._with_current_tools(self.agent.settings)
        restrictions = SandboxRestrictions.default.with_passthrough_modules(*PASSTHROUGH)
        sticky = timedelta(seconds=self._sticky_timeout)
        activities: list[Callable[..., Any]] = [_model_activity, _tool_activity]
        workers = [
            Worker(
                self.client,
                task_queue=self.task_queue,
                workflows=[RunWorkflow],
                activities=activities,
                workflow_runner=SandboxedWorkflowRunner(restrictions=restrictions),
                sticky_queue_schedule_to_start_timeout=sticky,
                max_concurrent_activities=self._max_activities,
            )
        ]
        for tool in settings.execution.tools:
            if tool.limiter is not None:
                queue = self.tool_queue(tool.name)
                limit = int(tool.limiter.total)
                workers.append(
                    Worker(
                        self.client,
                        task_queue=queue,
                        activities=[_tool_activity],
                        max_concurrent_activities=limit,
                    )
                )
        _SERVING[self.name] = _Serving(self, settings)
        try:
            async with contextlib.AsyncExitStack() as stack:
                for each in workers:
                    await stack.enter_async_context(each)
                yield
        finally:
            del _SERVING[self.name]

    # ------------------------------------------------------------ any process

    async def run(
        self, input: str | Sequence[JSONObject], *, run_id: str | None = None, stream: bool = False
    ) -> RunResult:
        """Start the run (or join run ``run_id``, running or finished) and wait for its result.

        A worker of this application must be serving somewhere (this process or another).
        Raises what the run raised (with ``partial_result``), as ``Agent.run`` does.
        """
        handle = await self._start(input, run_id, stream)
        return await self._result_of(handle)

    async def enqueue(self, input: str | Sequence[JSONObject], *, run_id: str | None = None) -> str:
        """Start a run for any worker, without waiting; returns its run id (the workflow id)."""
        handle = await self._start(input, run_id, False)
        return handle.id

    async def result(self, run_id: str) -> RunResult:
        """Wait for run ``run_id`` and return its result (raise its error)."""
        return await self._result_of(self.client.get_workflow_handle(run_id))

    async def progress(self, run_id: str) -> JSONObject:
        """The ``progress`` query of run ``run_id``: what the run has done so far (see the README)."""
        answer: JSONObject = await self.client.get_workflow_handle(run_id).query("progress")
        return answer

    async def approve(self, run_id: str, call_id: str, *, arguments: Mapping[str, Any] | None = None) -> None:
        """Let waiting call ``call_id`` of run ``run_id`` run (with ``arguments`` instead, if given)."""
        try:
            message = decision_to_json(call_id, approve(arguments=arguments))
        except (TypeError, ValueError) as exc:
            raise UsageError(f"cannot approve {call_id!r} with those arguments: {exc}") from None
        await self.client.get_workflow_handle(run_id).signal("decide", message)

    async def deny(self, run_id: str, call_id: str, reason: str = "") -> None:
        """Refuse waiting call ``call_id`` of run ``run_id``; the model reads ``reason``."""
        message = decision_to_json(call_id, deny(reason))
        await self.client.get_workflow_handle(run_id).signal("decide", message)

    async def _start(
        self, input: str | Sequence[JSONObject], run_id: str | None, stream: bool
    ) -> WorkflowHandle[Any, Any]:
        return await start_run(
            self.client, input, name=self.name, task_queue=self.task_queue, run_id=run_id, stream=stream
        )

    async def _result_of(self, handle: WorkflowHandle[Any, Any]) -> RunResult:
        try:
            document = await handle.result()
        except WorkflowFailureError as exc:
            raise RunError(f"durable run {handle.id!r} failed in Temporal: {exc.cause}") from exc
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                raise UsageError(f"no durable run with id {handle.id!r}") from None
            raise
        output = self.agent.settings.output
        return outcome_of(document, output.type if output is not None else None)


async def start_run(
    client: Client,
    input: str | Sequence[JSONObject],
    *,
    name: str = DEFAULT_NAME,
    task_queue: str | None = None,
    run_id: str | None = None,
    stream: bool = False,
) -> WorkflowHandle[Any, Any]:
    """Start a run of application ``name`` for its workers (no agent needed here); its handle.

    A run id already running is joined; one that finished keeps its stored result.
    """
    run_id = run_id or uuid.uuid4().hex
    start = {"name": name, "input": input_to_json(input), "stream": stream}
    try:
        return await client.start_workflow(
            WORKFLOW,
            start,
            id=run_id,
            task_queue=task_queue or name,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        )
    except temporalio.exceptions.WorkflowAlreadyStartedError:
        return client.get_workflow_handle(run_id)  # finished: its result is stored
