"""The agent loop: ask the model, run the tools it calls, feed the results back, until it answers.

The loop is deterministic given the responses and tool results it receives: what it sends
depends on nothing else (no clocks, no random ids, results in call order, not completion
order), so a recorded run can be replayed. It reaches the endpoint only through
:meth:`_Run.request_model` and each tool only through :func:`execute_call`.
"""

from __future__ import annotations

import dataclasses
import os
import uuid
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from functools import partial
from types import TracebackType
from typing import Any, Literal, Self

import anyio
import httpx
from pydantic import SecretStr
from structlog.typing import FilteringBoundLogger

from agent._errors import (
    AgentError,
    MaxTurnsExceeded,
    ProtocolError,
    ResponseFailedError,
    UsageError,
)
from agent._events import (
    Emit,
    Hooks,
    ModelResponded,
    RunFinished,
    RunStarted,
    TurnFinished,
    dispatch_to_hooks,
)
from agent._execution import CallBatch, ExecutionSettings, TurnScope
from agent._http import DEFAULT_TIMEOUT, ResponsesClient, RetryPolicy, StreamRead
from agent._logging import silent_logger
from agent._result import JSONObject, RunResult, ToolCallRecord, Usage
from agent._run_stream import RunStream, open_run_stream
from agent._stream import StreamReader
from agent._tools import ToolLike, ToolRegistry
from agent._wire import (
    FunctionCall,
    ModelResponse,
    check_calls_answered,
    function_call_output,
    input_items,
    request_body,
)

__all__ = ["Agent"]

DEFAULT_BASE_URL = "https://api.openai.com/v1"


@dataclass(slots=True)
class _RunState:
    """What one run has gathered so far; turned into a :class:`RunResult` at any point."""

    items: list[JSONObject]
    pending: list[JSONObject] = field(default_factory=list)
    """Items not yet sent (previous_response_id mode sends only these)."""
    records: list[ToolCallRecord] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    response_ids: list[str] = field(default_factory=list)
    last: ModelResponse | None = None

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
        status: Literal["completed", "incomplete"] = "incomplete" if incomplete else "completed"
        return RunResult(
            output=last.output_text if last else "",
            items=list(self.items),
            tool_calls=tuple(self.records),
            usage=self.usage,
            turns=len(self.response_ids),
            response_ids=tuple(self.response_ids),
            status=status,
            incomplete_reason=last.incomplete_reason if last and incomplete else None,
            last_response=last.body if last else {},
        )


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
        max_retries: Retries of a transient failure (connection, 408, 409, 429, 5xx).
        retry: Full retry policy (``max_retries`` overrides its count when both are given).
        timeout: HTTP timeouts, in seconds or an ``httpx.Timeout``.
        http_client: Your own ``httpx.AsyncClient`` (tests, proxies); you close it.
        max_connections: Size of the connection pool the agent creates.
        expose_tool_exceptions: Send an unexpected tool exception's message to the model, not
            only its type (off by default: messages can hold secrets).
        logger: A structlog logger for the run's events; silent when not given.
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
        expose_tool_exceptions: bool = False,
        logger: FilteringBoundLogger | None = None,
    ) -> None:
        if max_turns < 1 or max_concurrency < 1 or max_threads < 1:
            raise UsageError("max_turns, max_concurrency and max_threads must be at least 1")
        self.model = model
        self.tools = ToolRegistry([tools] if isinstance(tools, ToolRegistry) else tools)
        self.instructions = instructions
        self.base_url = _checked_url(base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL)
        self.max_turns = max_turns
        self.max_concurrency = max_concurrency
        self.parallel_tool_calls = parallel_tool_calls
        self.tool_choice = tool_choice
        self.metadata = metadata
        self.extra_body = extra_body
        self.use_previous_response_id = use_previous_response_id
        self.stream = stream
        self._wire_tools = self.tools.wire()
        self._log = logger or silent_logger()
        self._execution = ExecutionSettings(
            tools=self.tools,
            tool_timeout=tool_timeout,
            thread_limiter=anyio.CapacityLimiter(max_threads),
            expose_exception_messages=expose_tool_exceptions,
        )
        retry = retry or RetryPolicy()
        if max_retries is not None:
            retry = dataclasses.replace(retry, max_retries=max_retries)
        self._new_client = partial(
            ResponsesClient,
            base_url=self.base_url,
            api_key=_secret(api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")),
            timeout=timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout),
            retry=retry,
            max_connections=max_connections,
            http_client=http_client,
            log=self._log,
        )
        self._client = self._new_client()
        self._closed = False

    def __repr__(self) -> str:
        return f"Agent(model={self.model!r}, base_url={self.base_url!r}, tools={self.tools.names})"

    async def __aenter__(self) -> Self:
        self._check_open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool; the agent refuses runs afterwards."""
        self._closed = True
        await self._client.aclose()

    def _check_open(self) -> None:
        if self._closed:
            raise UsageError("this Agent is closed")

    async def run(
        self,
        input: str | Sequence[JSONObject],
        *,
        deps: Any = None,
        hooks: Hooks | None = None,
        stream: bool | None = None,
    ) -> RunResult:
        """Run the loop on ``input`` (a prompt, or Responses input items) to the model's answer.

        Args:
            input: A prompt, or Responses input items (e.g. ``result.items + [next_message]``).
            deps: Anything your tools need, handed to them as ``ToolContext.deps``.
            hooks: Callbacks on run start/end, model responses, tool start/end.
            stream: Stream the model's responses (default: the agent's ``stream``), so tools
                start while the response is still being written; hooks see it all happen.

        Raises:
            APIError: the endpoint failed (after retries), with ``partial_result`` set.
            MaxTurnsExceeded: the model was still calling tools after ``max_turns`` responses.
        """
        self._check_open()
        emit = partial(dispatch_to_hooks, hooks)
        return await self._run(self._client, input, deps, emit, self.stream if stream is None else stream)

    def run_stream(
        self,
        input: str | Sequence[JSONObject],
        *,
        deps: Any = None,
        hooks: Hooks | None = None,
    ) -> AbstractAsyncContextManager[RunStream]:
        """Run with streaming and iterate over the run's events as they happen::

            async with agent.run_stream("...") as events:
                async for event in events:
                    ...
            print(events.result.output)

        Leaving the ``async with`` early (``break``, an exception) cancels the run and its tools.
        A slow consumer loses nothing: the run waits for it.
        """
        self._check_open()

        async def start(emit: Emit) -> RunResult:
            return await self._run(self._client, input, deps, emit, True)

        return open_run_stream(start, hooks)

    def run_sync(
        self,
        input: str | Sequence[JSONObject],
        *,
        deps: Any = None,
        hooks: Hooks | None = None,
    ) -> RunResult:
        """:meth:`run` for scripts: runs its own event loop (and its own pool, unless you gave one)."""
        self._check_open()
        return anyio.run(self._run_detached, input, deps, partial(dispatch_to_hooks, hooks))

    async def _run_detached(self, input: str | Sequence[JSONObject], deps: Any, emit: Emit) -> RunResult:
        client = self._new_client()
        try:
            return await self._run(client, input, deps, emit, self.stream)
        finally:
            await client.aclose()

    async def _run(
        self,
        client: ResponsesClient,
        input: str | Sequence[JSONObject],
        deps: Any,
        emit: Emit,
        stream: bool,
    ) -> RunResult:
        run_id = uuid.uuid4().hex[:16]
        state = _RunState(items=input_items(input))
        run = _Run(self, client, state, deps, emit, self._log.bind(run_id=run_id), stream)
        run.log.info("run.start", model=self.model, tools=len(self.tools), stream=stream)
        await emit(RunStarted(run_id=run_id, model=self.model))
        try:
            result = await run.turns()
        except AgentError as exc:
            exc.partial_result = exc.partial_result or run.state.result()
            # Info, not warning: the caller gets the exception itself and decides how loud it is.
            run.log.info("run.error", error=type(exc).__name__, detail=str(exc))
            raise
        run.log.info("run.end", turns=result.turns, status=result.status, tokens=result.usage.total_tokens)
        await emit(RunFinished(result))
        return result

    def request_body(self, state: _RunState, *, stream: bool = False) -> JSONObject:
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
            tools=self._wire_tools,
            tool_choice=self.tool_choice,
            parallel_tool_calls=self.parallel_tool_calls,
            instructions=self.instructions,
            metadata=self.metadata,
            previous_response_id=previous,
            stream=stream,
            extra_body=self.extra_body,
        )


@dataclass(slots=True)
class _Run:
    """One run in progress: the agent's settings plus this run's client, state and outlets."""

    agent: Agent
    client: ResponsesClient
    state: _RunState
    deps: Any
    emit: Emit
    log: FilteringBoundLogger
    stream: bool

    async def turns(self) -> RunResult:
        limiter = anyio.CapacityLimiter(self.agent.max_concurrency)
        for turn in range(1, self.agent.max_turns + 1):
            scope = TurnScope(self.agent._execution, limiter, self.deps, turn, self.log, self.emit)
            response, records = await self.turn(scope)
            if response.status == "incomplete" or not response.function_calls:
                return self.state.result()
            self.state.add_records(records)
        raise MaxTurnsExceeded(f"the model was still calling tools after {self.agent.max_turns} turns")

    async def turn(self, scope: TurnScope) -> tuple[ModelResponse, list[ToolCallRecord]]:
        """One model response and its tool calls (started as they stream in, when streaming)."""
        body = self.agent.request_body(self.state, stream=self.stream)
        failure: AgentError | None = None
        async with anyio.create_task_group() as group:
            calls = CallBatch(group, scope)
            reader = self._stream_reader(scope.turn, calls) if self.stream else None
            try:
                response = await self.request_model(body, reader, may_retry=lambda: not calls.started)
                await self._accept(scope.turn, response)
            except AgentError as exc:
                failure = exc
                group.cancel_scope.cancel()
            else:
                if response.status == "incomplete":
                    group.cancel_scope.cancel()
                for call in response.function_calls:
                    calls.start(call)
        if failure is not None:
            raise failure
        records = calls.records_for(response.function_calls)
        await self.emit(TurnFinished(scope.turn, response.id, response.usage, len(records)))
        return response, records

    async def request_model(
        self, body: JSONObject, read_stream: StreamRead | None, *, may_retry: Callable[[], bool]
    ) -> ModelResponse:
        """The seam for one model request."""
        return await self.client.create(body, log=self.log, read_stream=read_stream, may_retry=may_retry)

    async def _accept(self, turn: int, response: ModelResponse) -> None:
        self.state.add_response(response)
        await self.emit(ModelResponded(turn, response.id, response.status, response.usage, response.body))
        _check_status(response)

    def _stream_reader(self, turn: int, calls: CallBatch) -> StreamRead:
        """Reads a streamed response, starting each eager tool's call as soon as it is complete."""
        tools = self.agent.tools

        def on_call(call: FunctionCall) -> None:
            tool = tools.get(call.name)
            if tool is None or tool.eager:
                calls.start(call)

        async def read(reply: httpx.Response) -> ModelResponse:
            return await StreamReader(turn, self.emit, on_call).read(reply)

        return read


def _checked_url(url: str) -> str:
    """Refuse a base URL httpx could never send to, before any run starts."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise UsageError(f"invalid base_url {url!r}: {exc}") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise UsageError(f"base_url must be an http:// or https:// URL, got {url!r}")
    if parsed.port is not None and not 0 < parsed.port < 65536:
        raise UsageError(f"base_url has an impossible port: {url!r}")
    return url


def _secret(value: str | None) -> SecretStr | None:
    return SecretStr(value) if value else None


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
        )
    raise ProtocolError(
        f"response status {response.status!r} (background responses are not supported)",
        body=response.body,
    )
