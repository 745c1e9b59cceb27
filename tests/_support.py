"""Test doubles: a scripted Responses endpoint behind ``httpx.MockTransport``, and item builders."""

from __future__ import annotations

import functools
import itertools
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import structlog
from openai.types.responses import Response as OfficialResponse
from openai.types.responses.response_create_params import (
    ResponseCreateParamsNonStreaming,
    ResponseCreateParamsStreaming,
)
from pydantic import TypeAdapter
from structlog.testing import LogCapture

from agent import Agent, RetryPolicy
from agent._result import JSONObject

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFORMANCE = REPO_ROOT.parent / "shared" / "conformance"
FAST_RETRY = RetryPolicy(initial_delay=0.0, jitter=0.0)

_ids = itertools.count(1)


@functools.cache
def _request_adapter(stream: bool) -> TypeAdapter[Any]:
    return TypeAdapter(ResponseCreateParamsStreaming if stream else ResponseCreateParamsNonStreaming)


def check_official_request(body: JSONObject) -> None:
    """Fail unless ``body`` validates against the openai package's ResponseCreateParams."""
    _request_adapter(bool(body.get("stream"))).validate_python(body)


def check_official_response(body: JSONObject) -> None:
    """Fail unless ``body`` validates against the openai package's Response model."""
    OfficialResponse.model_validate(body)


def function_call(name: str, arguments: str | JSONObject = "{}", call_id: str | None = None) -> JSONObject:
    """A ``function_call`` output item as the API returns it."""
    n = next(_ids)
    args = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return {
        "type": "function_call",
        "id": f"fc_{n}",
        "call_id": call_id or f"call_{n}",
        "name": name,
        "arguments": args,
        "status": "completed",
    }


def message(text: str) -> JSONObject:
    """An assistant ``message`` output item."""
    return {
        "type": "message",
        "id": f"msg_{next(_ids)}",
        "role": "assistant",
        "status": "completed",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }


def response(*output: JSONObject, status: str = "completed", **extra: Any) -> JSONObject:
    """A response body holding ``output``, with usage of 10 in / 5 out tokens."""
    body: JSONObject = {
        "id": f"resp_{next(_ids)}",
        "object": "response",
        "status": status,
        "output": list(output),
        "usage": {
            "input_tokens": 10,
            "output_tokens": 5,
            "total_tokens": 15,
            "input_tokens_details": {"cached_tokens": 2},
            "output_tokens_details": {"reasoning_tokens": 1},
        },
    }
    body.update(extra)
    return body


Reply = JSONObject | httpx.Response | Exception


@dataclass
class ScriptedEndpoint:
    """Answers each request with the next scripted reply and records every request body."""

    replies: list[Reply]
    requests: list[JSONObject] = field(default_factory=list)
    headers: list[httpx.Headers] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)
    check_schema: bool = True
    """Validate every request body against the official ResponseCreateParams."""

    async def handle(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if self.check_schema:
            check_official_request(body)
        self.requests.append(body)
        self.headers.append(request.headers)
        self.urls.append(str(request.url))
        if not self.replies:
            raise AssertionError("the endpoint got more requests than scripted")
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        if isinstance(reply, httpx.Response):
            return reply
        # ASCII-escaped, as a real server must send text that UTF-8 cannot carry (lone surrogates).
        return httpx.Response(200, content=json.dumps(reply).encode(), headers=_JSON)

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(self.handle))


_JSON = {"content-type": "application/json"}


def scripted_agent(replies: Iterable[Reply], **options: Any) -> tuple[Agent, ScriptedEndpoint]:
    """An agent wired to a :class:`ScriptedEndpoint` (no socket, no network)."""
    endpoint = ScriptedEndpoint(list(replies))
    options.setdefault("model", "gpt-4.1")
    options.setdefault("retry", FAST_RETRY)
    options.setdefault("base_url", "https://api.example.test/v1")
    options.setdefault("api_key", "sk-test-secret-key-123")
    agent = Agent(http_client=endpoint.client(), **options)
    return agent, endpoint


def capturing_logger() -> tuple[structlog.typing.FilteringBoundLogger, LogCapture]:
    """A debug-level logger whose events land in ``capture.entries``."""
    capture = LogCapture()
    logger: structlog.typing.FilteringBoundLogger = structlog.wrap_logger(
        None, processors=[capture], wrapper_class=structlog.make_filtering_bound_logger(0)
    )
    return logger, capture


def load_case(name: str) -> JSONObject:
    """One recorded conformance case from ``../shared/conformance/responses``."""
    data: JSONObject = json.loads((CONFORMANCE / "responses" / name).read_text())
    return data


def error_reply(status: int, message: str, code: str | None = None, **headers: str) -> httpx.Response:
    """An OpenAI-style error response."""
    body = {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}}
    return httpx.Response(status, json=body, headers=headers)


Handler = Callable[[httpx.Request], httpx.Response]


def stream_events(body: JSONObject) -> list[JSONObject]:
    """The SSE event payloads that stream ``body`` the way the API does."""
    events: list[JSONObject] = [
        {"type": "response.created", "response": {**body, "status": "in_progress", "output": []}}
    ]
    for index, item in enumerate(body["output"]):
        where = {"output_index": index, "item_id": item.get("id", "")}
        events.append({"type": "response.output_item.added", "output_index": index, "item": item})
        if item["type"] == "function_call":
            half = len(item["arguments"]) // 2
            for chunk in (item["arguments"][:half], item["arguments"][half:]):
                events.append({"type": "response.function_call_arguments.delta", **where, "delta": chunk})
        elif item["type"] == "message":
            for word in item["content"][0]["text"].split(" "):
                events.append(
                    {"type": "response.output_text.delta", **where, "content_index": 0, "delta": word}
                )
        events.append({"type": "response.output_item.done", "output_index": index, "item": item})
    terminal = "response.incomplete" if body.get("status") == "incomplete" else "response.completed"
    events.append({"type": terminal, "response": body})
    return [{**event, "sequence_number": n} for n, event in enumerate(events)]


def sse_text(events: Iterable[JSONObject], *, named: bool = True) -> str:
    """Events framed as Server-Sent Events (``named=False``: data lines only, as some fixtures)."""
    frames = []
    for event in events:
        head = f"event: {event['type']}\n" if named else ""
        frames.append(f"{head}data: {json.dumps(event)}\n\n")
    return "".join(frames)


def sse_reply(body_or_events: JSONObject | list[JSONObject]) -> httpx.Response:
    """A streamed 200 reply: a response body (streamed as the API would) or explicit events."""
    events = stream_events(body_or_events) if isinstance(body_or_events, dict) else body_or_events
    return httpx.Response(200, headers={"content-type": "text/event-stream"}, text=sse_text(events))


def assert_continuable(items: list[JSONObject]) -> None:
    """Every function_call in ``items`` has exactly one function_call_output (a run can go on)."""
    calls = [i["call_id"] for i in items if i.get("type") == "function_call"]
    outputs = [i["call_id"] for i in items if i.get("type") == "function_call_output"]
    assert sorted(calls) == sorted(outputs)
    assert len(set(calls)) == len(calls)
