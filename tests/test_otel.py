"""OpenTelemetry: GenAI spans for runs, model requests and tool calls (the ``otel`` extra)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any, ClassVar

import anyio
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from agent import AuthenticationError, tool
from tests._support import (
    REPO_ROOT,
    error_reply,
    function_call,
    message,
    response,
    scripted_agent,
    sse_reply,
)
from tests.test_streaming import gated_stream


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> TracerProvider:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


@tool
async def echo(text: str) -> str:
    """Return the text."""
    return text


def named(spans: Sequence[ReadableSpan], prefix: str) -> list[ReadableSpan]:
    return [span for span in spans if span.name.startswith(prefix)]


def parent_id(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent else None


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    number: int = span.context.span_id
    return number


def one_call_then_answer(*calls: dict[str, Any]) -> list[Any]:
    return [response(*calls), response(message("done"))]


@pytest.mark.asyncio
async def test_run_span_is_the_parent_of_chat_and_tool_spans(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    """One invoke_agent span per run; its chat spans and execute_tool spans are its children."""
    call = function_call("echo", {"text": "hi"})
    agent, _ = scripted_agent(one_call_then_answer(call), tools=[echo], tracer_provider=provider)
    await agent.run("go")
    spans = exporter.get_finished_spans()
    [run] = named(spans, "invoke_agent")
    children = named(spans, "chat") + named(spans, "execute_tool")
    assert [span.name for span in children] == ["chat gpt-4.1", "chat gpt-4.1", "execute_tool echo"]
    assert {span_id(run)} == {parent_id(span) for span in children}
    assert parent_id(run) is None


@pytest.mark.asyncio
async def test_sync_tool_runs_inside_its_span_in_a_worker_thread(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    """A sync tool's span is the run's child, and spans the tool opens in its thread are the tool's."""
    threads: list[threading.Thread] = []

    @tool
    def inspect() -> str:
        """Open a span of the tool's own."""
        threads.append(threading.current_thread())
        with trace.get_tracer("app", tracer_provider=provider).start_as_current_span("inside the tool"):
            return "ok"

    agent, _ = scripted_agent(
        one_call_then_answer(function_call("inspect")), tools=[inspect], tracer_provider=provider
    )
    await agent.run("go")
    spans = exporter.get_finished_spans()
    [run], [tool_span], [inside] = (named(spans, p) for p in ("invoke_agent", "execute_tool", "inside"))
    assert threads[0] is not threading.main_thread()
    assert (parent_id(tool_span), parent_id(inside)) == (span_id(run), span_id(tool_span))


@pytest.mark.asyncio
async def test_eager_streamed_call_is_a_child_of_the_run_not_of_the_request(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    """A call started while its response streams (inside the chat span) is still the run's child."""
    ran = anyio.Event()

    @tool
    async def first() -> str:
        """Unblock the stream."""
        ran.set()
        return "first done"

    replies = [gated_stream(function_call("first"), [], ran), sse_reply(response(message("ok")))]
    agent, _ = scripted_agent(replies, tools=[first], tracer_provider=provider)
    with anyio.fail_after(10):
        await agent.run("go", stream=True)
    spans = exporter.get_finished_spans()
    [run], [tool_span] = named(spans, "invoke_agent"), named(spans, "execute_tool")
    chat = named(spans, "chat")[0]
    assert chat.end_time is not None
    assert tool_span.start_time is not None
    assert tool_span.start_time < chat.end_time  # it did start while the request was going on
    assert parent_id(tool_span) == span_id(run)


@pytest.mark.asyncio
async def test_span_attributes_follow_the_genai_conventions(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    """Operation names, model, response id, tokens, tool name, call id and type, span kinds."""
    call = function_call("echo", {"text": "hi"}, call_id="call_7")
    replies = [response(call, model="gpt-4.1-2025"), response(message("done"))]
    agent, _ = scripted_agent(replies, tools=[echo], tracer_provider=provider, name="helper")
    await agent.run("go")
    spans = exporter.get_finished_spans()
    [run], [tool_span] = named(spans, "invoke_agent"), named(spans, "execute_tool")
    chat = named(spans, "chat")[0]
    assert (run.name, run.kind, chat.kind, tool_span.kind) == (
        "invoke_agent helper",
        SpanKind.INTERNAL,
        SpanKind.CLIENT,
        SpanKind.INTERNAL,
    )
    assert {
        "gen_ai.operation.name": "invoke_agent",
        "gen_ai.provider.name": "openai",
        "gen_ai.agent.name": "helper",
        "gen_ai.request.model": "gpt-4.1",
        "gen_ai.usage.input_tokens": 20,
        "gen_ai.usage.output_tokens": 10,
    }.items() <= dict(run.attributes or {}).items()
    assert {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4.1",
        "gen_ai.response.model": "gpt-4.1-2025",
        "gen_ai.response.id": replies[0]["id"],
        "gen_ai.usage.input_tokens": 10,
        "gen_ai.usage.output_tokens": 5,
        "server.address": "api.example.test",
        "server.port": 443,
    }.items() <= dict(chat.attributes or {}).items()
    assert dict(tool_span.attributes or {}) == {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": "echo",
        "gen_ai.tool.call.id": "call_7",
        "gen_ai.tool.type": "function",
    }


@pytest.mark.asyncio
async def test_unnamed_agent_run_span_is_invoke_agent(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    """Without Agent(name=) the run span is called invoke_agent and has no gen_ai.agent.name."""
    agent, _ = scripted_agent([response(message("done"))], tracer_provider=provider)
    await agent.run("go")
    [run] = named(exporter.get_finished_spans(), "invoke_agent")
    assert (run.name, "gen_ai.agent.name" in (run.attributes or {})) == ("invoke_agent", False)


@pytest.mark.asyncio
async def test_failing_tool_sets_error_type_to_its_outcome_kind(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    """A tool that raises: its span has error.type tool_error and an error status; the run goes on."""

    @tool
    def broken() -> str:
        """Fail."""
        raise ValueError("secret detail")

    agent, _ = scripted_agent(
        one_call_then_answer(function_call("broken")), tools=[broken], tracer_provider=provider
    )
    await agent.run("go")
    [tool_span] = named(exporter.get_finished_spans(), "execute_tool")
    attributes = tool_span.attributes or {}
    assert (attributes["error.type"], tool_span.status.status_code) == ("tool_error", StatusCode.ERROR)
    assert tool_span.status.description is None  # the exception's message is content


@pytest.mark.asyncio
async def test_unauthorized_request_sets_error_type_on_the_chat_and_run_spans(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    """A 401 ends the run: both spans say AuthenticationError and have an error status."""
    agent, _ = scripted_agent([error_reply(401, "bad key")], tracer_provider=provider)
    with pytest.raises(AuthenticationError):
        await agent.run("go")
    spans = exporter.get_finished_spans()
    [run], [chat] = named(spans, "invoke_agent"), named(spans, "chat")
    for span in (run, chat):
        assert ((span.attributes or {})["error.type"], span.status.status_code) == (
            "AuthenticationError",
            StatusCode.ERROR,
        )


@pytest.mark.asyncio
async def test_failed_response_sets_its_error_code_as_error_type(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    """A response with status failed: the chat span's error.type is the response's error code."""
    failed = response(status="failed", error={"code": "invalid_prompt", "message": "no"})
    agent, _ = scripted_agent([failed], tracer_provider=provider)
    with pytest.raises(Exception, match="no"):
        await agent.run("go")
    [chat] = named(exporter.get_finished_spans(), "chat")
    assert ((chat.attributes or {})["error.type"], chat.status.status_code) == (
        "invalid_prompt",
        StatusCode.ERROR,
    )


@pytest.mark.asyncio
async def test_traceparent_of_the_chat_span_reaches_the_server(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    """Each request carries the W3C traceparent of its chat span."""
    agent, endpoint = scripted_agent([response(message("done"))], tracer_provider=provider)
    await agent.run("go")
    [chat] = named(exporter.get_finished_spans(), "chat")
    context = chat.context
    assert context is not None
    expected = f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"
    assert endpoint.headers[0]["traceparent"] == expected


@pytest.mark.asyncio
async def test_untraced_run_sends_no_traceparent() -> None:
    """An agent with no tracer provider, no global one set: no trace header on the wire."""
    agent, endpoint = scripted_agent([response(message("done"))])
    await agent.run("go")
    assert "traceparent" not in endpoint.headers[0]


@pytest.mark.asyncio
async def test_content_is_not_recorded_unless_opted_in(
    provider: TracerProvider, exporter: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tool arguments and results stay off the spans by default."""
    monkeypatch.delenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", raising=False)
    call = function_call("echo", {"text": "private"})
    agent, _ = scripted_agent(one_call_then_answer(call), tools=[echo], tracer_provider=provider)
    await agent.run("go")
    for span in exporter.get_finished_spans():
        assert "private" not in str(dict(span.attributes or {}))


@pytest.mark.parametrize("how", ["parameter", "environment"])
@pytest.mark.asyncio
async def test_content_is_recorded_when_opted_in(
    how: str, provider: TracerProvider, exporter: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Agent(trace_content=True) or the GenAI opt-in variable record arguments and results."""
    options: dict[str, Any] = {"trace_content": True} if how == "parameter" else {}
    if how == "environment":
        monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    call = function_call("echo", {"text": "private"})
    agent, _ = scripted_agent(one_call_then_answer(call), tools=[echo], tracer_provider=provider, **options)
    await agent.run("go")
    [tool_span] = named(exporter.get_finished_spans(), "execute_tool")
    attributes = tool_span.attributes or {}
    expected = (call["arguments"], "private")
    assert (attributes["gen_ai.tool.call.arguments"], attributes["gen_ai.tool.call.result"]) == expected


_BLOCK_OPENTELEMETRY = textwrap.dedent(
    """
    import sys

    class Block:
        def find_spec(self, name, path=None, target=None):
            if name == "opentelemetry" or name.startswith("opentelemetry."):
                raise ImportError(f"blocked: {name}")
            return None

    sys.meta_path.insert(0, Block())
    """
)

_RUN = textwrap.dedent(
    """
    import httpx
    from agent import Agent

    seen = []

    def reply(request):
        seen.append(request.headers)
        body = {"id": "resp_1", "object": "response", "status": "completed",
                "output": [{"type": "message", "role": "assistant", "content": "hello"}]}
        return httpx.Response(200, json=body)

    client = httpx.AsyncClient(transport=httpx.MockTransport(reply))
    agent = Agent("m", base_url="https://api.example.test/v1", api_key="k", http_client=client)
    result = agent.run_sync("hi")
    loaded = [name for name in sys.modules if name.startswith("opentelemetry")]
    print(result.output, loaded, "traceparent" in seen[0])
    """
)


def run_without_opentelemetry(code: str) -> subprocess.CompletedProcess[str]:
    """``code`` in a process where importing OpenTelemetry fails, as if it were not installed."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run(
        [sys.executable, "-c", _BLOCK_OPENTELEMETRY + code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
        env=env,
        check=False,
    )


def test_import_and_runs_work_without_opentelemetry() -> None:
    """With OpenTelemetry not installed, `import agent` and a run work, and nothing is traced."""
    done = run_without_opentelemetry(_RUN)
    assert (done.returncode, done.stdout.strip()) == (0, "hello [] False"), done.stderr


def test_cli_otel_without_the_extra_exits_2_saying_what_to_install() -> None:
    """`agent demo --otel` without OpenTelemetry: exit 2, one line naming the extra."""
    done = run_without_opentelemetry(
        "from agent._cli import main; sys.argv = ['agent', 'demo', '--otel']; main()"
    )
    assert (done.returncode, done.stderr.count("\n")) == (2, 1), done.stderr
    assert "agent-runtime[otel]" in done.stderr


def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``python -m agent ...`` in a process of its own (a global tracer provider is set once)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "OTEL_"))}
    return subprocess.run(
        [sys.executable, "-m", "agent", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
        env={**clean, **env},
        check=False,
    )


def test_cli_otel_prints_the_runs_spans_on_stderr() -> None:
    """`agent demo --otel` with OTEL_TRACES_EXPORTER=console: every span as JSON on stderr."""
    done = run_cli("demo", "--otel", "--no-stream", OTEL_TRACES_EXPORTER="console")
    assert done.returncode == 0, done.stderr
    names = sorted(line.split('"')[3] for line in done.stderr.splitlines() if line.startswith('    "name"'))
    tools = ["current_time", "math_calculator", "random_generator", "system_info"]
    assert names == sorted(["chat gpt-4.1"] * 2 + ["invoke_agent"] + [f"execute_tool {t}" for t in tools])
    assert '"name"' not in done.stdout


class _Collector(BaseHTTPRequestHandler):
    """An OTLP/HTTP endpoint on 127.0.0.1 that keeps the paths and bodies it was sent."""

    received: ClassVar[list[tuple[str, bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((self.path, body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        return None


def test_cli_otel_exports_over_otlp_to_the_configured_endpoint() -> None:
    """With OTEL_EXPORTER_OTLP_ENDPOINT set, `--otel` sends the spans there over OTLP/HTTP."""
    server = HTTPServer(("127.0.0.1", 0), _Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        endpoint = f"http://127.0.0.1:{server.server_address[1]}"
        done = run_cli("run", "hi", "--otel", "--no-stream", OTEL_EXPORTER_OTLP_ENDPOINT=endpoint)
    finally:
        server.shutdown()
        server.server_close()
    assert done.returncode == 0, done.stderr
    paths = {path for path, _ in _Collector.received}
    assert paths == {"/v1/traces"}
    assert b"invoke_agent" in b"".join(body for _, body in _Collector.received)


def test_cli_otel_refuses_an_unknown_exporter_in_one_line() -> None:
    """An OTEL_TRACES_EXPORTER this command cannot serve exits 2 with one line."""
    done = run_cli("demo", "--otel", OTEL_TRACES_EXPORTER="zipkin")
    assert (done.returncode, done.stderr.count("\n")) == (2, 1), done.stderr
    assert "zipkin" in done.stderr
