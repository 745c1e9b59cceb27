"""The in-process engine: today's runtime behind the engine boundary (see ``_engine.py``)."""

from __future__ import annotations

from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from structlog.typing import FilteringBoundLogger

from agent._approvals import PendingApproval
from agent._engine import LiveTurn, ModelRequest, ToolOutcome, ToolRequest
from agent._events import Emit, StreamRestarted
from agent._execution import ExecutionSettings, ToolEnvironment, run_tool
from agent._http import ResponsesClient, StreamRead
from agent._limits import DEFAULT_LIMITS, Limits
from agent._otel import current_trace
from agent._stream import StreamReader
from agent._wire import FunctionCall, ModelResponse

__all__ = ["InProcessEngine"]


@dataclass(frozen=True, slots=True)
class InProcessEngine:
    """The plain runtime: requests over the agent's pool, tools in this process."""

    client: ResponsesClient
    tools: ToolEnvironment
    emit: Emit
    log: FilteringBoundLogger
    limits: Limits = DEFAULT_LIMITS

    @classmethod
    def for_run(
        cls,
        client: ResponsesClient,
        execution: ExecutionSettings,
        *,
        run_id: str,
        deps: Any,
        emit: Emit,
        log: FilteringBoundLogger,
    ) -> InProcessEngine:
        environment = ToolEnvironment(execution, deps, emit, log, run_id)
        return cls(client, environment, emit, log, execution.limits)

    async def request_model(self, request: ModelRequest, live: LiveTurn | None = None) -> ModelResponse:
        trace = current_trace()
        if trace is not None:
            return await trace.chat(request.body, partial(self._request_model, request, live))
        return await self._request_model(request, live)

    async def _request_model(self, request: ModelRequest, live: LiveTurn | None) -> ModelResponse:
        read = self._stream_reader(request.turn, live) if request.body.get("stream") else None
        return await self.client.create(
            request.body,
            log=self.log,
            read_stream=read,
            # A stream whose tools started is not sent again: they would run twice.
            may_retry=_always if live is None else lambda: not live.started,
            follow_up=request.turn > 1,  # a started run's requests go first
        )

    def call_tool(self, request: ToolRequest) -> Awaitable[ToolOutcome]:
        trace = current_trace()
        if trace is not None:
            return trace.tool(request, partial(run_tool, request, self.tools))
        return run_tool(request, self.tools)

    async def wait_for_decisions(
        self, turn: int, pending: Sequence[PendingApproval]
    ) -> Mapping[str, object] | None:
        """None: an in-process run pauses, and :meth:`Agent.resume` brings the decisions."""
        return None

    def _stream_reader(self, turn: int, live: LiveTurn | None) -> StreamRead:
        """Reads a streamed response, handing each complete call to ``live`` as it arrives."""
        on_call = live.call_ready if live is not None else _ignore
        reads = 0

        async def read(reply: Any) -> ModelResponse:
            nonlocal reads
            reads += 1
            if reads > 1:
                await self.emit(StreamRestarted(turn))
            return await StreamReader(turn, self.emit, on_call, self.limits).read(reply)

        return read


def _always() -> bool:
    return True


def _ignore(call: FunctionCall) -> None:
    return None
