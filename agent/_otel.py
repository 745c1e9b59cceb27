"""OpenTelemetry spans for runs, model requests and tool calls (the optional ``otel`` extra).

Spans follow the GenAI semantic conventions (status: development)::

    invoke_agent {name}        INTERNAL  one per run (``_agent.py``), current while the run goes on
    ├── chat {model}           CLIENT    one per model request, its retries inside (``_inprocess.py``)
    └── execute_tool {tool}    INTERNAL  one per tool call, sync tools and eager calls included

Chat and tool spans name the run's span as their parent explicitly: an eager call starts while
its response is still being read, inside the chat span, and is still the run's child. The chat
span is current while its request is sent, so ``traceparent`` goes out with it (``_http.py``).

Nothing here imports OpenTelemetry until a run is traced. A run is traced when its agent was
given a ``tracer_provider``, or once the application has imported ``opentelemetry.trace`` (it
must, to say where spans go): otherwise a run costs one dictionary lookup and a model request or
a tool call one context-variable read.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any, TextIO, cast

import httpx

from agent._engine import ToolOutcome, ToolRequest
from agent._errors import UsageError
from agent._result import JSONObject, RunResult
from agent._wire import ModelResponse

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.trace import Tracer, TracerProvider

__all__ = ["CONTENT_ENV", "Tracing", "current_trace", "export_traces", "with_trace_context"]

CONTENT_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
"""The GenAI instrumentations' opt-in for recording content (here: tool arguments and results)."""

_SCOPE = "agent-runtime"
_PROVIDER = "openai"  # the telemetry flavour of the Responses API, whoever serves it
_MAX_NAME = 128


@dataclass(frozen=True, slots=True)
class Tracing:
    """How one agent's runs are traced; made once per agent, read-only."""

    agent_name: str | None
    model: str
    content: bool
    """Record tool arguments and results (they may hold personal data)."""
    provider: TracerProvider | None
    server: dict[str, str | int]
    """``server.address`` and ``server.port`` of the endpoint."""

    @classmethod
    def for_agent(
        cls,
        *,
        name: str | None,
        model: str,
        base_url: str,
        content: bool | None,
        provider: TracerProvider | None,
    ) -> Tracing:
        if content is None:
            content = os.environ.get(CONTENT_ENV, "").strip().lower() in ("1", "true")
        return cls(name, model, content, provider, _server(base_url))

    def run(self, run_id: str, turns: Callable[[], Awaitable[RunResult]]) -> Awaitable[RunResult]:
        """``turns()`` (the run's loop) inside the run's span, if the run is traced."""
        if self.provider is None and "opentelemetry.trace" not in sys.modules:
            return turns()
        return self._traced_run(run_id, turns)

    async def _traced_run(self, run_id: str, turns: Callable[[], Awaitable[RunResult]]) -> RunResult:
        from opentelemetry import trace

        tracer = trace.get_tracer(_SCOPE, tracer_provider=self.provider)
        name = f"invoke_agent {self.agent_name}" if self.agent_name else "invoke_agent"
        with tracer.start_as_current_span(name, attributes=self._run_attributes(run_id)) as span:
            state = _RunTrace(tracer, trace.set_span_in_context(span), self.content, self.server)
            token = _CURRENT.set(state)
            try:
                result = await turns()
            except Exception as exc:
                span.set_attribute("error.type", type(exc).__name__)
                raise
            finally:
                _CURRENT.reset(token)
            span.set_attribute("gen_ai.usage.input_tokens", result.usage.input_tokens)
            span.set_attribute("gen_ai.usage.output_tokens", result.usage.output_tokens)
            return result

    def _run_attributes(self, run_id: str) -> dict[str, str | int]:
        attributes: dict[str, str | int] = {
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.provider.name": _PROVIDER,
            "gen_ai.request.model": self.model,
            "agent_runtime.run_id": run_id,
            **self.server,
        }
        if self.agent_name:
            attributes["gen_ai.agent.name"] = self.agent_name
        return attributes


@dataclass(frozen=True, slots=True)
class _RunTrace:
    """The traced run a task belongs to: where its chat and tool spans go."""

    tracer: Tracer
    parent: Context
    """The run span's context: the parent of every chat and tool span of the run."""
    content: bool
    server: dict[str, str | int]

    async def chat(self, body: JSONObject, send: Callable[[], Awaitable[ModelResponse]]) -> ModelResponse:
        """``send()`` (one model request, retries included) inside a ``chat {model}`` span."""
        from opentelemetry.trace import SpanKind, StatusCode

        model = str(body.get("model", ""))
        attributes = {**_request_attributes(body), **self.server}
        with self.tracer.start_as_current_span(
            f"chat {model}".strip(), context=self.parent, kind=SpanKind.CLIENT, attributes=attributes
        ) as span:
            try:
                response = await send()
            except Exception as exc:
                span.set_attribute("error.type", type(exc).__name__)
                raise
            span.set_attributes(_response_attributes(response))
            if response.status == "failed":
                code = (response.error or {}).get("code")
                span.set_attribute("error.type", code if isinstance(code, str) and code else "_OTHER")
                span.set_status(StatusCode.ERROR)
            return response

    async def tool(self, request: ToolRequest, run: Callable[[], Awaitable[ToolOutcome]]) -> ToolOutcome:
        """``run()`` (one tool call to its outcome) inside an ``execute_tool {tool}`` span."""
        from opentelemetry.trace import Status, StatusCode

        name = request.name[:_MAX_NAME]
        attributes = {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": name,
            "gen_ai.tool.call.id": request.call_id,
            "gen_ai.tool.type": "function",
        }
        if self.content:
            attributes["gen_ai.tool.call.arguments"] = request.arguments
        with self.tracer.start_as_current_span(
            f"execute_tool {name}", context=self.parent, attributes=attributes
        ) as span:
            outcome = await run()
            if outcome.kind == "ok":
                if self.content:
                    span.set_attribute("gen_ai.tool.call.result", outcome.output)
            else:
                span.set_attribute("error.type", outcome.kind)
                # The error may quote the tool's exception: content, like the arguments.
                span.set_status(Status(StatusCode.ERROR, outcome.error if self.content else None))
            return outcome


_CURRENT: ContextVar[_RunTrace | None] = ContextVar("agent_runtime_otel_run", default=None)


def current_trace() -> _RunTrace | None:
    """The traced run this task works for, if any."""
    return _CURRENT.get()


def with_trace_context(headers: dict[str, str]) -> dict[str, str]:
    """``headers``, plus the current trace context (``traceparent``) in a traced run's requests."""
    if _CURRENT.get() is None:
        return headers
    from opentelemetry import propagate

    carrier = dict(headers)
    propagate.inject(carrier)
    return carrier


def _request_attributes(body: JSONObject) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": _PROVIDER,
        "gen_ai.request.model": str(body.get("model", "")),
        "gen_ai.request.stream": bool(body.get("stream")),
    }
    for field, key in _REQUEST_SETTINGS:
        value = body.get(field)
        if isinstance(value, int | float) and not isinstance(value, bool):
            attributes[key] = value
    return attributes


_REQUEST_SETTINGS = (
    ("temperature", "gen_ai.request.temperature"),
    ("top_p", "gen_ai.request.top_p"),
    ("max_output_tokens", "gen_ai.request.max_tokens"),
)


def _response_attributes(response: ModelResponse) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "gen_ai.response.id": response.id,
        "gen_ai.usage.input_tokens": response.usage.input_tokens,
        "gen_ai.usage.output_tokens": response.usage.output_tokens,
    }
    model = response.body.get("model")
    if isinstance(model, str):
        attributes["gen_ai.response.model"] = model
    return attributes


def _server(base_url: str) -> dict[str, str | int]:
    url = httpx.URL(base_url)
    port = url.port or (443 if url.scheme == "https" else 80)
    return {"server.address": url.host, "server.port": port}


# ---------------------------------------------------------------- the command line's exporter


def export_traces() -> None:
    """Send this process's spans where the standard ``OTEL_*`` variables say (``agent ... --otel``).

    ``OTEL_TRACES_EXPORTER``: ``console`` (JSON on stderr), ``otlp`` (OTLP over HTTP, configured
    by ``OTEL_EXPORTER_OTLP_*``) or both, comma-separated; by default ``otlp`` when an OTLP
    endpoint is set, else ``console``. Spans still buffered are sent when the process exits.
    """
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
    except ImportError:
        raise UsageError("--otel needs the otel extra: pip install 'agent-runtime[otel]'") from None
    attributes = os.environ.get("OTEL_RESOURCE_ATTRIBUTES", "")
    named = "OTEL_SERVICE_NAME" in os.environ or "service.name" in attributes
    provider = TracerProvider(resource=Resource.create({} if named else {"service.name": _SCOPE}))
    for exporter in _exporters():
        provider.add_span_processor(_processor(exporter))
    trace.set_tracer_provider(provider)


def _exporters() -> list[str]:
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    )
    chosen = os.environ.get("OTEL_TRACES_EXPORTER") or ("otlp" if endpoint else "console")
    names = [name.strip().lower() for name in chosen.split(",") if name.strip()]
    unknown = sorted(set(names) - {"console", "otlp", "none"})
    if unknown:
        shown = ", ".join(unknown)
        raise UsageError(f"OTEL_TRACES_EXPORTER: unknown exporter(s) {shown} (known: console, otlp, none)")
    return [name for name in names if name != "none"]


def _processor(exporter: str) -> Any:
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SimpleSpanProcessor

    if exporter == "console":
        return SimpleSpanProcessor(ConsoleSpanExporter(out=cast(IO[str], _Stderr())))
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError:
        raise UsageError("OTLP export needs the otel extra: pip install 'agent-runtime[otel]'") from None
    return BatchSpanProcessor(OTLPSpanExporter())


class _Stderr:
    """Writes to whatever ``sys.stderr`` is now (a live display redirects it while it draws)."""

    def write(self, text: str) -> int:
        return _current_stderr().write(text)

    def flush(self) -> None:
        _current_stderr().flush()


def _current_stderr() -> TextIO:
    return sys.stderr
