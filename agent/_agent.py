"""``Agent``: a model, its tools and settings, and the runs made with them."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import inspect
import os
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from functools import partial
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import anyio
import httpx
from pydantic import SecretStr
from structlog.typing import FilteringBoundLogger

from agent._engine import Engine
from agent._errors import AgentClosedError, AgentError, HookError, UsageError
from agent._events import (
    ApprovalRequested,
    Emit,
    Hooks,
    RunFinished,
    RunResumed,
    RunStarted,
    dispatch_to_hooks,
)
from agent._execution import ExecutionSettings
from agent._http import DEFAULT_TIMEOUT, ResponsesClient
from agent._inprocess import InProcessEngine
from agent._limits import Limits
from agent._logging import silent_logger
from agent._loop import LoopSettings, Run, RunState
from agent._otel import Tracing
from agent._output import output_spec
from agent._registry import ToolLike, ToolRegistry
from agent._result import JSONObject, RunResult
from agent._resume import DoneCalls, Resume, record_done, resumption, saved_state
from agent._retry import RetryPolicy
from agent._run_stream import RunStream, open_run_stream
from agent._settings import NO_SETTINGS, ModelSettings
from agent._sources import Snapshots, close_unheld
from agent._threads import LoopLocalLimiter
from agent._urls import shown_url
from agent._wire import input_items

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider

__all__ = ["Agent"]

DEFAULT_BASE_URL = "https://api.openai.com/v1"


class Agent:
    """A model plus tools: ``await agent.run("...")`` runs the tool-calling loop to an answer.

    One agent serves any number of concurrent runs over one pooled HTTP client; its state is
    read-only once built. Use it as ``async with Agent(...) as agent:`` or call :meth:`aclose`.

    Args:
        model: The model name sent in every request.
        tools: Tools, plain functions or a :class:`ToolRegistry` (copied: later changes to it
            do not reach this agent).
        instructions: The system/developer instructions sent with every request.
        base_url: Endpoint root, e.g. ``https://api.openai.com/v1``; default ``$OPENAI_BASE_URL``.
        api_key: Bearer token; default ``$OPENAI_API_KEY``. Never logged or shown in a repr.
        max_turns: Model responses per run before :class:`MaxTurnsExceeded`.
        tool_timeout: Seconds per tool call unless the tool sets its own (``None``: no limit).
        max_concurrency: Tool calls running at once within one run.
        max_threads: Worker threads for sync tools across all runs (a timed-out sync tool keeps
            its thread until it returns).
        parallel_tool_calls: Let the model ask for several calls in one response.
        tool_choice: ``"auto"``, ``"required"``, ``"none"`` or a specific tool object.
        metadata: Sent with every request (gateways such as ChainHub read ``model_id`` here).
        extra_body: More request fields, passed through untouched (they win over ours).
        use_previous_response_id: Let the server keep the conversation: send only the new
            tool outputs and ``previous_response_id`` (needs a server that stores responses).
        stream: Stream responses by default (see :meth:`run`); :meth:`run_stream` always does.
        max_retries: Retries of a transient failure (connection, 408, 409, 429, 5xx, a response
            that failed with ``server_error`` or ``rate_limit_exceeded``).
        retry: Full retry policy (``max_retries`` overrides its count when both are given),
            including the pause and retry budget all runs of this agent share.
        timeout: HTTP timeouts, in seconds or an ``httpx.Timeout``.
        http_client: Your own ``httpx.AsyncClient`` (tests, proxies); you close it.
        max_connections: The most requests in flight at once over the pool the agent creates;
            how many really go is adapted to the event loop's lag (a loop that never idles
            gets fewer, so thousands of runs do not each hold a request it cannot serve).
        max_concurrent_runs: Runs in flight at once; more wait their turn (``None``: no limit).
            Admitting work gradually keeps each run's latency near its own cost instead of
            the whole batch's when thousands are started together.
        expose_tool_exceptions: Send an unexpected tool exception's message to the model, not
            only its type (off by default: messages can hold secrets).
        limits: Caps on what the endpoint and the model can make a run hold (see :class:`Limits`).
        run_timeout: Seconds a whole run may take, retries and tools included (``None``: no
            limit); past it the run is cancelled and :class:`RunTimeoutError` raised.
        http2: Speak HTTP/2 where the endpoint offers it (needs ``pip install 'agent-runtime[http2]'``).
        logger: A structlog logger for the run's events; silent when not given.
        model_settings: Temperature, reasoning effort, ... sent with every request (see
            :class:`ModelSettings`); a run's own ``model_settings`` override them field by field.
        output_type: A pydantic model, dataclass or TypedDict the final answer must be: sent as
            the ``text.format`` JSON schema and parsed into ``result.output_parsed``.
        output_retries: Times an answer that does not fit ``output_type`` is sent back with
            what was wrong before :class:`OutputValidationError` (each costs a turn).
        name: The agent's name in traces (``invoke_agent {name}`` spans, ``gen_ai.agent.name``).
        trace_content: Record tool arguments and results on spans (they may hold personal
            data); default ``$OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`` (``true``).
        tracer_provider: Where spans go (needs the ``otel`` extra); default OpenTelemetry's
            global provider, once the application imports ``opentelemetry.trace``.
        state_key: A secret sealing paused runs' states (HMAC-SHA256): :meth:`resume` refuses a
            state changed by anyone without it (default: a plain SHA-256 digest).
    """

    def __init__(
        self,
        model: str,
        *,
        tools: ToolRegistry | Sequence[ToolLike] = (),
        instructions: str | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        max_turns: int = 20,
        tool_timeout: float | None = 60.0,
        max_concurrency: int = 32,
        max_threads: int = 64,
        parallel_tool_calls: bool = True,
        tool_choice: str | JSONObject = "auto",
        metadata: dict[str, str] | None = None,
        extra_body: JSONObject | None = None,
        use_previous_response_id: bool = False,
        stream: bool = False,
        max_retries: int | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        http_client: httpx.AsyncClient | None = None,
        max_connections: int = 512,
        max_concurrent_runs: int | None = None,
        expose_tool_exceptions: bool = False,
        limits: Limits | None = None,
        run_timeout: float | None = None,
        http2: bool = False,
        logger: FilteringBoundLogger | None = None,
        model_settings: ModelSettings | None = None,
        output_type: type[Any] | None = None,
        output_retries: int = 1,
        name: str | None = None,
        trace_content: bool | None = None,
        tracer_provider: TracerProvider | None = None,
        state_key: str | bytes | None = None,
    ) -> None:
        _check_limits(max_turns, max_concurrency, max_threads, max_concurrent_runs, max_retries)
        _check_output_retries(output_retries)
        _check_timeout(run_timeout)
        self.model = model
        self._tools = ToolRegistry([tools] if isinstance(tools, ToolRegistry) else tools)
        self._snapshots = Snapshots(self._tools, self._tools.sources) if self._tools.sources else None
        """Each run's tools when some come from tool sources (MCP servers), listed at run start."""
        self.base_url = _checked_url(base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL)
        self.stream = stream
        limits = limits or Limits()
        self.settings = LoopSettings(
            model=model,
            wire_tools=self._tools.wire(),
            tool_choice=tool_choice,
            parallel_tool_calls=parallel_tool_calls,
            instructions=instructions,
            # Copies: the caller's dicts may change later; the runs' settings must not.
            metadata=dict(metadata) if metadata else None,
            extra_body=copy.deepcopy(extra_body) if extra_body else None,
            use_previous_response_id=use_previous_response_id,
            max_turns=max_turns,
            max_concurrency=max_concurrency,
            execution=ExecutionSettings(
                tools=self._tools,
                tool_timeout=tool_timeout,
                thread_limiter=LoopLocalLimiter(max_threads),
                expose_exception_messages=expose_tool_exceptions,
                limits=limits,
            ),
            limits=limits,
            run_timeout=run_timeout,
            model_settings=_checked_settings(model_settings) or NO_SETTINGS,
            output=None if output_type is None else output_spec(output_type),
            output_retries=output_retries,
        )
        """Everything the runs share, read-only."""
        self._log = logger or silent_logger()
        self._admission = None if max_concurrent_runs is None else LoopLocalLimiter(max_concurrent_runs)
        if max_retries is not None:
            retry = dataclasses.replace(retry or RetryPolicy(), max_retries=max_retries)
        self._new_client = partial(
            ResponsesClient,
            base_url=self.base_url,
            api_key=_secret(api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")),
            timeout=timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout),
            retry=retry or RetryPolicy(),
            max_connections=max_connections,
            http2=http2,
            limits=limits,
            http_client=http_client,
            log=self._log,
        )
        self._client = self._new_client()
        self._closed = False
        self._current: tuple[ToolRegistry, LoopSettings, LoopSettings] | None = None
        """The last run's settings with its tool sources' tools, reused while both are unchanged."""
        self._state_key = state_key.encode() if isinstance(state_key, str) else state_key
        """Seals paused runs' states (HMAC-SHA256): a state changed without it is refused."""
        self._done = DoneCalls()
        self._tracing = Tracing.for_agent(
            name=name, model=model, base_url=self.base_url, content=trace_content, provider=tracer_provider
        )

    @property
    def tools(self) -> ToolRegistry:
        """A copy of the agent's tools (they are fixed when the agent is made)."""
        return ToolRegistry([self._tools])

    def __repr__(self) -> str:
        shown = shown_url(self.base_url)
        return f"Agent(model={self.model!r}, base_url={shown!r}, tools={self._tools.names})"

    async def __aenter__(self) -> Self:
        """Open the tool sources (MCP servers) now, so that one that cannot start fails here."""
        self._check_open()
        if self._snapshots is not None:
            try:
                await self._snapshots.current()
            except BaseException:
                await close_unheld(self._tools.sources)
                raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool and the tool sources; the agent refuses runs afterwards.

        Runs still in flight fail at their next request with :class:`AgentClosedError`
        (``partial_result`` set); runs waiting for admission fail as they are admitted. A tool
        source held open by your own ``async with source:`` stays open.
        """
        self._closed = True
        await self._client.aclose()
        await close_unheld(self._tools.sources)

    def _check_open(self) -> None:
        if self._closed:
            raise AgentClosedError("this Agent is closed")

    async def run(
        self,
        input: str | Sequence[JSONObject],
        *,
        deps: Any = None,
        hooks: Hooks | None = None,
        stream: bool | None = None,
        run_timeout: float | None = None,
        run_id: str | None = None,
        model_settings: ModelSettings | None = None,
        output_type: type[Any] | None = None,
    ) -> RunResult:
        """Run the loop on ``input`` (a prompt, or Responses input items) to the model's answer.

        Args:
            input: A prompt, or Responses input items (e.g. ``result.items + [next_message]``).
            deps: Anything your tools need, handed to them as ``ToolContext.deps``.
            hooks: Callbacks on run start/end, model responses, tool start/end.
            stream: Stream the model's responses (default: the agent's ``stream``), so tools
                start while the response is still being written; hooks see it all happen.
            run_timeout: Seconds this run may take (default: the agent's ``run_timeout``).
            run_id: The run's id, in its logs, ``RunStarted`` and ``ToolContext.run_id`` (and so
                in every ``ToolContext.idempotency_key``); a random one when not given.
            model_settings: This run's settings; each field set replaces the agent's.
            output_type: This run's output type (default: the agent's ``output_type``).

        Raises:
            APIError: the endpoint failed (after retries), with ``partial_result`` set.
            MaxTurnsExceeded: the model was still calling tools after ``max_turns`` responses.
            RunTimeoutError: the run passed its ``run_timeout``, with ``partial_result`` set.
            OutputValidationError: the answer did not fit ``output_type``, also when asked again.
            OutputRefusedError: the model refused to answer in ``output_type``'s shape.
            AgentClosedError: the agent is closed, or was closed during the run.
        """
        self._check_open()
        settings = self._settings_for(model_settings, output_type)
        stream = self.stream if stream is None else stream
        ask = _Ask(settings, input, deps, hooks, stream, run_timeout, run_id)
        return await self._run(self._client, ask, partial(dispatch_to_hooks, hooks))

    def run_stream(
        self,
        input: str | Sequence[JSONObject],
        *,
        deps: Any = None,
        hooks: Hooks | None = None,
        run_timeout: float | None = None,
        run_id: str | None = None,
        model_settings: ModelSettings | None = None,
        output_type: type[Any] | None = None,
    ) -> AbstractAsyncContextManager[RunStream]:
        """Run with streaming and iterate over the run's events as they happen::

            async with agent.run_stream("...") as events:
                async for event in events:
                    ...
            print(events.result.output)

        Leaving the ``async with`` early (``break``, an exception) cancels the run and its tools.
        A slow consumer loses nothing: the run waits for it (and its ``run_timeout`` runs on).
        The options are :meth:`run`'s.
        """
        self._check_open()
        settings = self._settings_for(model_settings, output_type)

        ask = _Ask(settings, input, deps, hooks, True, run_timeout, run_id)
        return open_run_stream(partial(self._run, self._client, ask), hooks)

    async def resume(
        self,
        state: JSONObject | str | bytes | None,
        decisions: Mapping[str, object] | None = None,
        *,
        deps: Any = None,
        hooks: Hooks | None = None,
        stream: bool | None = None,
        run_timeout: float | None = None,
    ) -> RunResult:
        """Go on with a run that paused for approvals, from its saved ``state``.

        Args:
            state: ``result.state`` (the dict, or its JSON text) of a run that paused
                (``None``, the state of a run that did not pause, is an InvalidStateError).
            decisions: ``{call_id: approve() | deny("reason") | approve(arguments={...})}``
                for the calls in ``result.pending_approvals``. A call without a decision, or
                with anything that is not one (``None``, ``True``, a string...), is denied,
                never run; ids the state does not wait for are ignored (and logged).
            deps, hooks, stream, run_timeout: as for :meth:`run`.

        An approved call runs at most once per saved state in this process: the run records it
        in ``state`` (when it is the dict you pass) and remembers it, so resuming the same state
        again reuses its result. Across processes it runs again with the same
        ``ToolContext.idempotency_key`` (``run_id:turn:call_id``) for the tool to dedupe.

        Raises:
            InvalidStateError: the state is not JSON of ours, was changed after it was saved,
                comes from a newer runtime, or waits for calls its conversation does not ask.
            UsageError: ``decisions`` is not a mapping.
            (and whatever :meth:`run` raises)
        """
        self._check_open()
        if decisions is None:
            decisions = {}
        if not isinstance(decisions, Mapping):
            raise UsageError(
                f"decisions must be a mapping of call ids to decisions, got {type(decisions).__name__}"
            )
        saved = resumption(state, self._state_key)
        waiting = {call.call_id for call in saved.waiting}
        unknown = [call_id for call_id in decisions if call_id not in waiting]
        if unknown:
            self._log.warning(
                "approval.unknown_calls", run_id=saved.run_id, call_ids=[str(c) for c in unknown][:10]
            )
        stream = self.stream if stream is None else stream
        ask = _Ask(
            self.settings, "", deps, hooks, stream, run_timeout, saved.run_id, Resume(saved, decisions, state)
        )
        return await self._run(self._client, ask, partial(dispatch_to_hooks, hooks))

    def run_sync(
        self,
        input: str | Sequence[JSONObject],
        *,
        deps: Any = None,
        hooks: Hooks | None = None,
        run_timeout: float | None = None,
        run_id: str | None = None,
        model_settings: ModelSettings | None = None,
        output_type: type[Any] | None = None,
    ) -> RunResult:
        """:meth:`run` for scripts: runs its own event loop (and its own pool, unless you gave one)."""
        self._check_open()
        settings = self._settings_for(model_settings, output_type)
        ask = _Ask(settings, input, deps, hooks, self.stream, run_timeout, run_id)
        return anyio.run(self._run_detached, ask)

    def _settings_for(
        self, model_settings: ModelSettings | None, output_type: type[Any] | None
    ) -> LoopSettings:
        """The agent's loop settings with one run's overrides (the same object when none)."""
        if model_settings is None and output_type is None:
            return self.settings
        base = self.settings
        return dataclasses.replace(
            base,
            model_settings=base.model_settings.merged(_checked_settings(model_settings)),
            output=base.output if output_type is None else output_spec(output_type),
        )

    async def _run_detached(self, ask: _Ask) -> RunResult:
        client = self._new_client()
        try:
            return await self._run(client, ask, partial(dispatch_to_hooks, ask.hooks))
        finally:
            await client.aclose()
            # This event loop ends with the call: so do the connections made on it.
            await close_unheld(self._tools.sources)

    async def _run(self, client: ResponsesClient, ask: _Ask, emit: Emit) -> RunResult:
        _check_timeout(ask.run_timeout)
        # The wait for admission is outside the run's deadline: run_timeout bounds the work of
        # a run, not its place in the queue (wrap the call in anyio.fail_after for both).
        async with self._admission.get() if self._admission else contextlib.nullcontext():
            self._check_open()
            seconds = self.settings.run_timeout if ask.run_timeout is None else ask.run_timeout
            run_id = ask.run_id or uuid.uuid4().hex[:16]  # the in-process engine names its runs
            log = self._log.bind(run_id=run_id)
            settings = await self._with_current_tools(ask.settings)
            engine = InProcessEngine.for_run(
                client, settings.execution, run_id=run_id, deps=ask.deps, emit=emit, log=log
            )
            return await self._run_on(
                engine,
                ask.input,
                run_id=run_id,
                emit=emit,
                log=log,
                stream=ask.stream,
                run_timeout=seconds,
                settings=settings,
                deps=ask.deps,
                decide=_decider(ask.hooks),
                resume=ask.resume,
            )

    async def _with_current_tools(self, settings: LoopSettings) -> LoopSettings:
        """``settings`` with the tool sources' current tools added (itself when there are none).

        Raises ToolSourceError when a source cannot list its tools, ToolDefinitionError on a clash.
        """
        if self._snapshots is None:
            return settings
        tools = await self._snapshots.current()
        cached = self._current
        if cached is not None and cached[0] is tools and cached[1] is settings:
            return cached[2]
        execution = dataclasses.replace(settings.execution, tools=tools)
        current = dataclasses.replace(settings, wire_tools=tools.wire(), execution=execution)
        self._current = (tools, settings, current)
        return current

    async def _run_on(
        self,
        engine: Engine,
        input: str | Sequence[JSONObject],
        *,
        run_id: str,
        emit: Emit,
        log: FilteringBoundLogger,
        stream: bool,
        run_timeout: float | None = None,
        settings: LoopSettings | None = None,
        deps: Any = None,
        decide: Decide | None = None,
        resume: Resume | None = None,
    ) -> RunResult:
        """The loop on ``input`` (or from a paused run's state) through ``engine``: what every
        engine's runs share.

        ``settings``: this run's loop settings (default: the agent's).
        """
        state = resume.resumption.state if resume else RunState(items=input_items(input))
        run = Run(settings or self.settings, engine, state, emit, log, stream, run_id, deps, decide)
        log.info("run.start", model=self.model, tools=len(run.settings.execution.tools), stream=stream)
        try:
            if resume is None:
                await emit(RunStarted(run_id=run_id, model=self.model))
                work = partial(run.turns_within, run_timeout)
            else:
                turn = resume.resumption.turn
                await emit(RunResumed(run_id, self.model, turns_done=turn, calls_done=len(state.records)))
                before = partial(self._decided_turn, run, resume)
                work = partial(run.turns_within, run_timeout, first=turn + 1, before=before)
            result = await self._tracing.run(run_id, work)
            if result.status == "awaiting_approval":
                saved = saved_state(run_id, self.model, run.state, self._state_key)
                result = dataclasses.replace(result, state=saved)
            await emit(RunFinished(result))
        except AgentError as exc:
            exc.partial_result = exc.partial_result or run.state.result()
            # Info, not warning: the caller gets the exception itself and decides how loud it is.
            log.info("run.error", error=type(exc).__name__, detail=str(exc))
            raise
        log.info("run.end", turns=result.turns, status=result.status, tokens=result.usage.total_tokens)
        return result

    async def _decided_turn(self, run: Run, resume: Resume) -> None:
        """Run or deny a paused turn's waiting calls; remember those that ran, so that resuming
        the same state again (the same dict, or a copy in this process) does not run them twice."""
        saved = resume.resumption
        done = dict(saved.done)
        done.update(self._done.known(saved.nonce, [call.call_id for call in saved.waiting]))
        records = await run.resume_turn(saved.turn, saved.waiting, resume.decisions, done)
        ran = [record for record in records if record.kind != "denied" and record.call_id not in done]
        self._done.add(saved.nonce, ran)
        record_done(resume.saved, self._state_key, ran)


Decide = Callable[[ApprovalRequested], Awaitable[object]]
"""An ``on_approval`` hook made async: its answer decides a call (``None``: pause for a person)."""


@dataclass(frozen=True, slots=True)
class _Ask:
    """One run as the caller asked for it (what run, run_stream, run_sync and resume share)."""

    settings: LoopSettings
    input: str | Sequence[JSONObject]
    deps: Any
    hooks: Hooks | None
    stream: bool
    run_timeout: float | None
    run_id: str | None
    resume: Resume | None = None


def _decider(hooks: Hooks | None) -> Decide | None:
    """The hooks' ``on_approval``, awaited if async; an exception in it is a HookError."""
    policy = hooks.on_approval if hooks is not None else None
    if policy is None:
        return None

    async def decide(event: ApprovalRequested) -> object:
        try:
            answer = policy(event)
            return await answer if inspect.isawaitable(answer) else answer
        except Exception as exc:
            raise HookError(f"the on_approval hook raised {type(exc).__name__}: {exc}") from exc

    return decide


def _check_limits(
    max_turns: int, max_concurrency: int, max_threads: int, max_runs: int | None, max_retries: int | None
) -> None:
    """Refuse limits that could never let a run finish."""
    runs = 1 if max_runs is None else max_runs
    if min(max_turns, max_concurrency, max_threads, runs) < 1 or (max_retries or 0) < 0:
        raise UsageError(
            "max_turns, max_concurrency, max_threads, max_concurrent_runs must be >= 1, max_retries >= 0"
        )


def _check_output_retries(output_retries: int) -> None:
    if isinstance(output_retries, bool) or not isinstance(output_retries, int) or output_retries < 0:
        raise UsageError(f"output_retries must be an integer >= 0, got {output_retries!r}")


def _checked_settings(settings: ModelSettings | None) -> ModelSettings | None:
    """Refuse settings of the wrong type (a dict would pass silently until the first request)."""
    if settings is not None and not isinstance(settings, ModelSettings):
        raise UsageError(f"model_settings must be a ModelSettings, got {type(settings).__name__}")
    return settings


def _check_timeout(run_timeout: float | None) -> None:
    """Refuse a run_timeout no run could meet (zero, negative, NaN)."""
    if run_timeout is not None and not run_timeout > 0:
        raise UsageError(f"run_timeout must be > 0 seconds (or None), got {run_timeout!r}")


def _checked_url(url: str) -> str:
    """Refuse a base URL httpx could never send to, before any run starts.

    The messages show the URL without user info and query, which may hold credentials.
    """
    shown = shown_url(url)
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        # httpx's reason may quote a piece of a password (a "/" in it moves the port).
        reason = str(exc) if shown == url else "it cannot be parsed"
        error = UsageError(f"invalid base_url {shown!r}: {reason}")
    else:
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise UsageError(f"base_url must be an http:// or https:// URL, got {shown!r}")
        if parsed.port is not None and not 0 < parsed.port < 65536:
            raise UsageError(f"base_url has an impossible port: {shown!r}")
        return url
    raise error  # outside the except block: httpx's error may quote the URL


def _secret(value: str | None) -> SecretStr | None:
    return SecretStr(value) if value else None
