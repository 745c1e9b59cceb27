"""The agent loop: ask the model, run the tools it calls, feed the results back, until it answers.

The loop is deterministic given the responses and tool results it receives: what it sends
depends on nothing else (no clocks, no random ids, results in call order, not completion
order), so a recorded run can be replayed. It reaches the endpoint and the tools only through
its :class:`~agent._engine.Engine` (see ``_engine.py``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio
import anyio.abc
from structlog.typing import FilteringBoundLogger

from agent._approvals import Decision, PendingApproval, checked_decision, needs_approval
from agent._arguments import ArgumentsError
from agent._batch import CallBatch, TurnScope
from agent._engine import Engine, ModelRequest
from agent._errors import (
    AgentError,
    MaxTurnsExceeded,
    OutputRefusedError,
    OutputValidationError,
    ProtocolError,
    ResponseFailedError,
    RunTimeoutError,
)
from agent._events import ApprovalRequested, Emit, ModelResponded, TurnFinished
from agent._execution import ExecutionSettings
from agent._limits import DEFAULT_LIMITS, Limits
from agent._output import OutputSpec
from agent._result import JSONObject, RunResult, ToolCallRecord, Usage
from agent._settings import NO_SETTINGS, ModelSettings
from agent._tools import ToolContext
from agent._wire import (
    FunctionCall,
    ModelResponse,
    check_calls_answered,
    failure_is_transient,
    function_call_output,
    request_body,
)

__all__ = ["LoopSettings", "Run", "RunState"]


@dataclass(frozen=True, slots=True)
class LoopSettings:
    """What every run of one agent shares, read-only: the request template and the limits."""

    model: str
    wire_tools: list[JSONObject]
    tool_choice: str | JSONObject
    parallel_tool_calls: bool
    instructions: str | None
    metadata: dict[str, str] | None
    extra_body: JSONObject | None
    use_previous_response_id: bool
    max_turns: int
    max_concurrency: int
    execution: ExecutionSettings
    limits: Limits = DEFAULT_LIMITS
    run_timeout: float | None = None
    """Seconds a whole run may take (``None``: no limit); see :class:`RunTimeoutError`."""
    model_settings: ModelSettings = NO_SETTINGS
    output: OutputSpec | None = None
    """The run's ``output_type``, sent as ``text.format`` and parsed from the final answer."""
    output_retries: int = 1
    """Times a final answer that does not fit ``output`` is sent back to be mended."""

    def request_body(self, state: RunState, *, stream: bool = False) -> JSONObject:
        """The next request of a run, from the run's state alone (deterministic)."""
        previous = state.last.id if self.use_previous_response_id and state.last else None
        if previous and state.last:
            items = state.pending
            asked = [call.call_id for call in state.last.function_calls]
            check_calls_answered(items, pending=asked)
        else:
            items = state.items
            check_calls_answered(items)
        return request_body(
            model=self.model,
            input=list(items),
            tools=self.wire_tools,
            tool_choice=self.tool_choice,
            parallel_tool_calls=self.parallel_tool_calls,
            instructions=self.instructions,
            metadata=self.metadata,
            previous_response_id=previous,
            stream=stream,
            extra_body=self.extra_body,
            options=self._options(),
        )

    def _options(self) -> JSONObject | None:
        if self.model_settings is NO_SETTINGS and self.output is None:
            return None  # the common case costs one comparison per request
        options = self.model_settings.to_body()
        if self.output is not None:
            options["text"] = self.output.text_format()
        return options


@dataclass(slots=True)
class RunState:
    """What one run has gathered so far; turned into a :class:`RunResult` at any point."""

    items: list[JSONObject]
    pending: list[JSONObject] = field(default_factory=list)
    """Items not yet sent (previous_response_id mode sends only these)."""
    records: list[ToolCallRecord] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    response_ids: list[str] = field(default_factory=list)
    last: ModelResponse | None = None
    output_parsed: object = None
    awaiting: list[PendingApproval] = field(default_factory=list)
    """The calls the run paused for (their outputs are not in ``items`` yet)."""

    def add_response(self, response: ModelResponse) -> None:
        self.last = response
        self.items.extend(response.output)
        self.usage += response.usage
        self.response_ids.append(response.id)

    def add_records(self, records: list[ToolCallRecord]) -> None:
        outputs = [function_call_output(r.call_id, r.output) for r in records]
        self.records.extend(records)
        self.items.extend(outputs)
        self.pending = outputs

    def result(self) -> RunResult:
        last = self.last
        incomplete = last is not None and last.status == "incomplete"
        status: Literal["completed", "incomplete", "awaiting_approval"] = (
            "awaiting_approval" if self.awaiting else "incomplete" if incomplete else "completed"
        )
        return RunResult(
            output=last.output_text if last and not self.awaiting else "",
            items=list(self.items),
            tool_calls=tuple(self.records),
            usage=self.usage,
            turns=len(self.response_ids),
            response_ids=tuple(self.response_ids),
            status=status,
            incomplete_reason=last.incomplete_reason if last and incomplete else None,
            last_response=last.body if last else {},
            output_parsed=self.output_parsed,
            pending_approvals=tuple(self.awaiting),
        )

    def add_input(self, item: JSONObject) -> None:
        """Add an item the runtime writes to the conversation (sent with the next request)."""
        self.items.append(item)
        self.pending = [item]


@dataclass(slots=True)
class _TurnCalls:
    """What a turn must answer however it ends: the calls started and the response accepted."""

    calls: CallBatch | None = None
    accepted: ModelResponse | None = None
    recorded: bool = False
    waiting: list[FunctionCall] = field(default_factory=list)
    """Calls left for a person's decision: the run pauses for them once the turn is done."""

    def to_answer(self, *, pausing: bool = False) -> list[FunctionCall]:
        """The accepted response's calls (but those waiting, when the run pauses for them),
        then any started call it does not list."""
        listed = list(self.accepted.function_calls) if self.accepted else []
        if pausing:
            left = {call.call_id for call in self.waiting}
            listed = [call for call in listed if call.call_id not in left]
        known = {call.call_id for call in listed}
        started = self.calls.started_calls if self.calls else ()
        return listed + [call for call in started if call.call_id not in known]


@dataclass(slots=True)
class Run:
    """One run in progress: the agent's loop settings plus this run's engine, state and outlets."""

    settings: LoopSettings
    engine: Engine
    state: RunState
    emit: Emit
    log: FilteringBoundLogger
    stream: bool
    run_id: str = ""
    deps: Any = None
    """Handed to ``needs_approval`` predicates (their ToolContext's ``deps``)."""
    decide: Callable[[ApprovalRequested], Awaitable[object]] | None = None
    """The ``on_approval`` hook: its answer decides a call inline (``None``: pause for it)."""
    deadline: anyio.CancelScope | None = None
    """The scope of the run's ``run_timeout``, stopped while an engine waits for approvals."""

    async def turns_within(
        self, seconds: float | None, *, first: int = 1, before: Callable[[], Awaitable[object]] | None = None
    ) -> RunResult:
        """``before()`` (a resumed turn's calls), then :meth:`turns` from ``first``, cancelled with
        :class:`RunTimeoutError` once ``seconds`` pass."""

        async def work() -> RunResult:
            if before is not None:
                await before()
            return await self.turns(first)

        if seconds is None:
            return await work()
        with anyio.move_on_after(seconds) as self.deadline:
            return await work()
        raise RunTimeoutError(f"the run was still going after its run_timeout of {seconds:g} seconds")

    async def turns(self, first: int = 1) -> RunResult:
        """Turns from number ``first`` until the answer (or a pause for approvals)."""
        retries = 0
        for number in range(first, self.settings.max_turns + 1):
            response, _ = await self.turn(number)
            if self.state.awaiting and not await self._decided_by_engine(number):
                return self.state.result()  # paused: Agent.resume goes on from here
            if response.status == "incomplete" or not response.function_calls:
                if self._final(response, retries, last_turn=number == self.settings.max_turns):
                    return self.state.result()
                retries += 1
        raise MaxTurnsExceeded(f"the model was still calling tools after {self.settings.max_turns} turns")

    def _final(self, response: ModelResponse, retries: int, *, last_turn: bool) -> bool:
        """Whether ``response`` ends the run; if not, the model was told why its answer failed.

        A cut-short response ends it unparsed (``status`` says so); a refusal ends it with
        :class:`OutputRefusedError`, an answer still wrong after the retries with
        :class:`OutputValidationError`. Only what the response says decides (durable replays).
        """
        spec = self.settings.output
        if spec is None or response.status == "incomplete":
            return True
        refusal = response.refusal
        if refusal is not None:
            raise OutputRefusedError(
                f"the model refused to answer as {spec.name}: {refusal}", refusal=refusal
            )
        text = response.output_text
        parsed = spec.parse(text, max_depth=self.settings.limits.max_json_depth)
        if not parsed.errors:
            self.state.output_parsed = parsed.value
            return True
        if retries >= self.settings.output_retries or last_turn:
            why = f"the answer did not fit {spec.name} after {retries} retries: {parsed.errors[0]}"
            raise OutputValidationError(why, text=text, errors=parsed.errors)
        self.log.info("output.retry", retry=retries + 1, errors=len(parsed.errors))
        self.state.add_input(spec.feedback(parsed.errors))
        return False

    async def turn(self, number: int) -> tuple[ModelResponse, list[ToolCallRecord]]:
        """One model response and its tool calls (started as they stream in, when streaming).

        Every call of the response, and every call started from its stream, ends with one
        record and one output in the state, however the turn ends (a failed response, a hook's
        error, cancellation): the state can always be continued.
        """
        body = self.settings.request_body(self.state, stream=self.stream)
        turn = _TurnCalls()
        try:
            return await self._turn(number, body, turn)
        except BaseException as exc:
            if not turn.recorded and turn.calls is not None:
                why = f"the run ended ({exc})" if isinstance(exc, AgentError) else "the run was cancelled"
                self._record(turn, await turn.calls.settle(turn.to_answer(), why, emit_finished=False))
            raise

    async def _turn(
        self, number: int, body: JSONObject, turn: _TurnCalls
    ) -> tuple[ModelResponse, list[ToolCallRecord]]:
        escaped: BaseException | None = None
        try:
            if self.stream:
                async with anyio.create_task_group() as group:
                    calls = turn.calls = CallBatch(group, self._scope(number))
                    received = await self._request(number, body, calls)
                    outcome = await self._accept_and_start(number, received, turn, calls, group)
            else:
                # No call runs during a plain request: the turn's task group opens once the
                # response is in, so the thousands of runs waiting on the endpoint hold less.
                received = await self._request(number, body, None)
                async with anyio.create_task_group() as group:
                    calls = turn.calls = CallBatch(group, self._scope(number))
                    outcome = await self._accept_and_start(number, received, turn, calls, group)
        except ExceptionGroup as errors:
            escaped = _sole(errors)  # e.g. a hook's HookError, raised from a call's task
        if escaped is not None:
            raise escaped  # outside the except block: keeps its own cause, gains no context
        if isinstance(outcome, AgentError):
            self._record(turn, await calls.settle(turn.to_answer(), f"the response failed ({outcome})"))
            raise outcome
        why = f"the response was incomplete ({outcome.incomplete_reason or 'no reason given'})"
        records = await calls.settle(turn.to_answer(pausing=True), why)
        self._record(turn, records)
        self.state.awaiting = [_pending(call, number) for call in turn.waiting]
        await self.emit(TurnFinished(number, outcome.id, outcome.usage, len(records)))
        return outcome, records

    def _scope(self, number: int) -> TurnScope:
        # A limiter per turn bounds the whole run: a turn's calls all end before the next turn.
        limiter = anyio.CapacityLimiter(self.settings.max_concurrency)
        tools = self.settings.execution.tools
        return TurnScope(self.engine, number, limiter, tools, self.settings.limits, self.emit)

    async def _request(
        self, number: int, body: JSONObject, live: CallBatch | None
    ) -> ModelResponse | AgentError:
        try:
            return await self.engine.request_model(ModelRequest(number, body), live)
        except AgentError as exc:
            return exc

    async def _accept_and_start(
        self,
        number: int,
        received: ModelResponse | AgentError,
        turn: _TurnCalls,
        calls: CallBatch,
        group: anyio.abc.TaskGroup,
    ) -> ModelResponse | AgentError:
        """The accepted response, its calls started; or the turn's failure, the group cancelled."""
        if not isinstance(received, AgentError):
            try:
                response = await self._accept(number, received, turn)
            except AgentError as exc:
                received = exc
            else:
                await self._start_or_stop(number, response, calls, turn, group)
                return response
        group.cancel_scope.cancel()
        return received

    def _record(self, turn: _TurnCalls, records: list[ToolCallRecord]) -> None:
        """Put the turn's records and outputs in the state, with the calls no response listed."""
        listed = {call.call_id for call in turn.accepted.function_calls} if turn.accepted else set()
        started = turn.calls.started_calls if turn.calls else ()
        self.state.items.extend(_item(call) for call in started if call.call_id not in listed)
        self.state.add_records(records)
        turn.recorded = True

    async def _start_or_stop(
        self,
        number: int,
        response: ModelResponse,
        calls: CallBatch,
        turn: _TurnCalls,
        group: anyio.abc.TaskGroup,
    ) -> None:
        """Start the response's calls (those needing approval once decided), or, when it was
        cut short, stop those already started."""
        if response.status == "incomplete":
            group.cancel_scope.cancel()
            return
        asking = []
        for call in response.function_calls:
            if await self._needs_approval(number, call):
                asking.append(call)
            else:
                calls.start(call)
        for call in asking:
            event = ApprovalRequested(number, call.call_id, call.name, call.arguments)
            await self.emit(event)
            answer = await self.decide(event) if self.decide is not None else None
            if answer is None:
                turn.waiting.append(call)
            else:
                apply_decision(calls, call, checked_decision(answer))

    async def _decided_by_engine(self, number: int) -> bool:
        """Whether the engine got decisions for the waiting calls (a durable wait) and they ran."""
        waiting = self.state.awaiting
        with self._clock_stopped():  # a durable wait for people may take days: not the run's work
            decisions = await self.engine.wait_for_decisions(number, waiting)
        if decisions is None:
            return False
        await self.resume_turn(number, [_asked_call(each) for each in waiting], decisions, {})
        return True

    @contextlib.contextmanager
    def _clock_stopped(self) -> Iterator[None]:
        """The run's deadline stands still inside the block, and moves on by the time it took."""
        scope = self.deadline
        if scope is None:
            yield
            return
        deadline, began = scope.deadline, anyio.current_time()
        scope.deadline = math.inf
        try:
            yield
        finally:
            scope.deadline = deadline + (anyio.current_time() - began)

    async def _needs_approval(self, number: int, call: FunctionCall) -> bool:
        """Whether ``call``'s tool wants a person's decision first (never for a call that cannot run)."""
        tool = self.settings.execution.tools.get(call.name)
        if tool is None or tool.needs_approval is False:
            return False
        if tool.needs_approval is True:
            return True
        try:
            arguments = tool.validate(call.arguments, self.settings.limits)
        except ArgumentsError:
            return False  # it will not run: its outcome is invalid_arguments
        context = ToolContext(call.call_id, tool.name, self.deps, number, run_id=self.run_id)
        return await needs_approval(tool.needs_approval, context, arguments)

    async def resume_turn(
        self,
        number: int,
        waiting: list[FunctionCall],
        decisions: Mapping[str, object],
        done: Mapping[str, ToolCallRecord],
    ) -> list[ToolCallRecord]:
        """Finish turn ``number`` of a paused run: its waiting calls run, or are denied, as decided.

        ``done``: records of approved calls an earlier resume of the same state already ran
        (reused, not run again). Returns the turn's new records, already in the state.
        """
        self.state.awaiting = []
        async with anyio.create_task_group() as group:
            calls = CallBatch(group, self._scope(number))
            for call in waiting:
                if call.call_id in done:
                    calls.reuse(call, done[call.call_id])
                else:
                    apply_decision(calls, call, checked_decision(decisions.get(call.call_id)))
        records = await calls.settle(waiting, "the run was resumed")
        sent_before = self.state.pending
        self.state.add_records(records)
        self.state.pending = sent_before + self.state.pending  # previous_response_id sends both
        return records

    async def _accept(self, turn: int, response: ModelResponse, calls: _TurnCalls) -> ModelResponse:
        """Keep ``response`` with its repeated call ids made one; raise if it cannot go on."""
        stored = self.settings.use_previous_response_id
        accepted, conflict = _one_call_per_id(response, stored=stored)
        calls.accepted = accepted
        self.state.add_response(accepted)
        await self.emit(ModelResponded(turn, response.id, response.status, response.usage, response.body))
        if conflict is not None:
            raise conflict
        _check_status(accepted)
        return accepted


def apply_decision(calls: CallBatch, call: FunctionCall, decision: Decision | None) -> None:
    """Start ``call`` as approved (with edited arguments, if any), or deny it."""
    if decision is None:
        calls.deny(call, "no valid approval decision was given")
    elif not decision.approved:
        reason = f"denied by the user: {decision.reason}" if decision.reason else "denied by the user"
        calls.deny(call, reason)
    elif decision.arguments is None:
        calls.start(call)
    else:
        try:
            edited = json.dumps(decision.arguments, ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError):
            calls.deny(call, "the approved arguments are not JSON")
        else:
            calls.start(call.model_copy(update={"arguments": edited}))


def _asked_call(pending: PendingApproval) -> FunctionCall:
    return FunctionCall(
        type="function_call", call_id=pending.call_id, name=pending.tool_name, arguments=pending.arguments
    )


def _pending(call: FunctionCall, turn: int) -> PendingApproval:
    return PendingApproval(call.call_id, call.name, call.arguments, turn)


def _sole(errors: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error to raise for (possibly nested) task-group errors.

    The only one; else the first of ours (several calls' hooks can fail at once); else the group.
    """
    leaves: list[BaseException] = []
    pending: list[BaseException] = [errors]
    while pending:
        error = pending.pop(0)
        if isinstance(error, BaseExceptionGroup):
            pending[:0] = error.exceptions
        else:
            leaves.append(error)
    if len(leaves) == 1:
        return leaves[0]
    ours = [error for error in leaves if isinstance(error, AgentError)]
    if not ours:
        return errors
    ours[0].add_note(f"({len(leaves) - 1} more error(s) ended this turn at the same time)")
    return ours[0]


def _item(call: FunctionCall) -> JSONObject:
    """A started call's ``function_call`` item, as it streamed in."""
    return call.model_dump(mode="json", exclude_none=True)


def _one_call_per_id(response: ModelResponse, *, stored: bool) -> tuple[ModelResponse, ProtocolError | None]:
    """``response`` with each repeated call id kept once, and the error its repeats make, if any.

    A strict server refuses a conversation holding one call id twice, or answered twice. A
    repeat that agrees with the first (same name and arguments) is dropped; one that disagrees,
    or any repeat in a response the server stored (``previous_response_id``: its copy cannot be
    mended), ends the turn with :class:`ProtocolError`.
    """
    calls = response.function_calls
    if len({call.call_id for call in calls}) == len(calls):
        return response, None
    first: dict[str, FunctionCall] = {}
    output: list[JSONObject] = []
    conflict: ProtocolError | None = None
    positions = iter(calls)
    for item in response.output:
        if item.get("type") != "function_call":
            output.append(item)
            continue
        call = next(positions)
        seen = first.setdefault(call.call_id, call)
        if seen is call:
            output.append(item)
        elif conflict is None and (stored or (seen.name, seen.arguments) != (call.name, call.arguments)):
            conflict = _repeated(call.call_id, stored=stored, body=response.body)
    kept = dataclasses.replace(response, output=output, function_calls=tuple(first.values()))
    return kept, conflict


def _repeated(call_id: str, *, stored: bool, body: JSONObject) -> ProtocolError:
    if stored:
        why = "the server stored it, so previous_response_id cannot continue it"
        return ProtocolError(f"the response repeats call id {call_id!r}; {why}", body=body)
    why = "with different names or arguments: which one to run is unknown"
    return ProtocolError(f"the response repeats call id {call_id!r} {why}", body=body)


def _check_status(response: ModelResponse) -> None:
    """Raise for a response the loop cannot act on; ``incomplete`` ends the run normally."""
    if response.status in ("completed", "incomplete"):
        return
    if response.status in ("failed", "cancelled"):
        error = response.error or {}
        raise ResponseFailedError(
            str(error.get("message") or f"the response {response.status}"),
            code=error.get("code") if isinstance(error.get("code"), str) else response.status,
            body=response.body,
            transient=failure_is_transient(response.error),
        )
    raise ProtocolError(
        f"response status {response.status!r} (background responses are not supported)",
        body=response.body,
    )
