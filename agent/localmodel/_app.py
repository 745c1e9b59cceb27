"""The ASGI app: OpenAI's `POST /v1/responses` (and `GET /v1/responses/{id}`), answered by a policy.

One request goes: authenticate, read the body, apply any injected fault, validate the body and
rebuild the conversation, ask the policy, complete its items into a `Response`, store it, and send
it as JSON or as a Server-Sent-Event stream. Every refusal is a `Rejection`, rendered in one place.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import threading
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import anyio
import httpx
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from agent._wire import STRICT_JSON

from ._errors import Rejection, invalid_request
from ._faults import Fault, FaultMix, FaultPlan, response_error, status_rejection
from ._policy import Policy
from ._request import Item, ResponseRequest
from ._response import IdFactory, build_response, finish_output, split_pauses
from ._store import ResponseStore, StoredResponse
from ._stream import MALFORMED_STREAM, sse_events
from ._validation import parse_request

__all__ = ["DROP_EXTENSION", "ModelService", "create_app"]

DROP_EXTENSION = "localmodel.drop"
"""ASGI scope extension a server may provide: an async callable that drops this connection."""

DropHook = Callable[[], Awaitable[None]]

_NO_KEY = (
    "You didn't provide an API key. You need to provide your API key in an Authorization header "
    "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
)
_NOT_JSON = (
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't using "
    "your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not "
    "valid JSON.)"
)
_INVALID = object()
_PROXY_PAGE = "<html><head><title>502 Bad Gateway</title></head><body><h1>Bad Gateway</h1></body></html>"
_CUT = "peer closed connection without sending complete message body"


def create_app(
    policy: Policy,
    *,
    stream_delay: float = 0.0,
    faults: Iterable[Fault] = (),
    fault_mix: FaultMix | None = None,
    api_key: str | None = None,
    seed: int | None = None,
    max_stored: int = 10_000,
    max_stored_bytes: int = 64_000_000,
    max_requests: int = 1_000,
) -> Starlette:
    """The local model server as an ASGI app: serve it with uvicorn, or call it in-process.

    In-process use needs no socket: `httpx.AsyncClient(transport=httpx.ASGITransport(app))`.
    `policy` decides the answers (it is not AI). `stream_delay` pauses that many seconds between
    streamed output items. `faults` are consumed one per request (see `Fault`); then `fault_mix`, if
    given, fails a random share of the requests (see `FaultMix`). Any non-empty bearer
    key is accepted unless `api_key` is given. `seed` makes ids repeatable. At most `max_stored`
    responses, together at most `max_stored_bytes` of JSON (conversations included), are kept for
    `previous_response_id`, the least recently used evicted first; and the last `max_requests`
    request bodies for `LocalModelServer.requests`.
    """
    service = ModelService(
        policy,
        stream_delay=stream_delay,
        faults=faults,
        fault_mix=fault_mix,
        api_key=api_key,
        seed=seed,
        max_stored=max_stored,
        max_stored_bytes=max_stored_bytes,
        max_requests=max_requests,
    )
    return service.app


class ModelService:
    """The state and endpoints behind one app: policy, fault plan, response store, request log."""

    def __init__(
        self,
        policy: Policy,
        *,
        stream_delay: float,
        faults: Iterable[Fault],
        api_key: str | None,
        seed: int | None,
        max_stored: int,
        max_stored_bytes: int,
        max_requests: int,
        fault_mix: FaultMix | None = None,
    ) -> None:
        self.plan = FaultPlan(faults, fault_mix)
        self._injected: Counter[str] = Counter()
        self._policy = policy
        self._stream_delay = stream_delay
        self._api_key = api_key
        self._ids = IdFactory(seed)
        self._store = ResponseStore(max_stored, max_stored_bytes)
        # Raw bytes, parsed only when read: copying every parsed body cost ~18% of the server's
        # time, and an unbounded list grew for as long as `agent serve-local` ran.
        self._requests: deque[bytes] = deque(maxlen=max_requests)
        self._lock = threading.Lock()
        routes = [
            Route("/v1/responses", self.create, methods=["POST"]),
            Route("/v1/responses/{response_id}", self.retrieve, methods=["GET"]),
        ]
        self.app = Starlette(routes=routes, exception_handlers={HTTPException: _http_error})

    @property
    def requests(self) -> list[Item]:
        """Copies of the most recent JSON bodies received on `POST /v1/responses`, oldest first.

        Only the last `max_requests` are kept; older ones are forgotten.
        """
        with self._lock:
            received = list(self._requests)
        return [json.loads(raw) for raw in received]

    @property
    def injected_faults(self) -> dict[str, int]:
        """How many requests got each fault so far, by its text form (e.g. `status=429;retry_after=0.2`)."""
        with self._lock:
            return dict(self._injected)

    async def create(self, request: Request) -> Response:
        """`POST /v1/responses`."""
        try:
            response = await self._create(request)
        except Rejection as rejection:
            response = rejection.to_response()
        response.headers["x-request-id"] = self._ids.new("req_", 32)
        return response

    async def retrieve(self, request: Request) -> Response:
        """`GET /v1/responses/{id}`: a stored response, as the API returns it."""
        response_id = request.path_params["response_id"]
        try:
            self._authenticate(request)
        except Rejection as rejection:
            return rejection.to_response()
        entry = self._store.get(response_id)
        if entry is None:
            return Rejection(404, f"Response with id '{response_id}' not found.").to_response()
        return JSONResponse(entry.body)

    async def _create(self, request: Request) -> Response:
        self._authenticate(request)
        raw = await request.body()
        body = _decode(raw)
        if isinstance(body, dict):
            with self._lock:
                self._requests.append(raw)
        fault = self._fault(request, body)
        if fault.delay:
            await anyio.sleep(fault.delay)
        if fault.drop:
            return await _drop(request)
        if fault.status is not None:
            raise status_rejection(fault)
        if body is _INVALID:
            raise invalid_request(_NOT_JSON)
        if fault.not_json:
            return Response(_PROXY_PAGE, media_type="text/html")
        if fault.malformed:
            return _malformed(isinstance(body, dict) and body.get("stream") is True)
        parsed = parse_request(body, self._store.history)
        answer, pauses = self._answer(parsed, fault)
        broken = fault.cut or (parsed.stream and fault.truncate)
        if answer["store"] and not broken:
            self._store.put(StoredResponse(answer, parsed.input))
        if not parsed.stream:
            if fault.cut or fault.stall:
                return _broken_body(request, json.dumps(answer).encode(), fault)
            return JSONResponse(answer)
        delay = self._stream_delay if fault.stream_delay is None else fault.stream_delay
        events = sse_events(
            answer,
            item_delay=delay,
            item_delays=pauses if fault.stream_delay is None else (),
            truncate=fault.truncate or fault.cut,
            stall=fault.stall or 0.0,
        )
        if fault.cut:
            events = _then_drop(request, events)
        return StreamingResponse(events, media_type="text/event-stream")

    def _authenticate(self, request: Request) -> None:
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            raise Rejection(401, _NO_KEY)
        expected = self._api_key
        if expected is not None and not secrets.compare_digest(key.encode(), expected.encode()):
            raise Rejection(
                401,
                f"Incorrect API key provided: {_mask(key)}. You can find your API key at "
                "https://platform.openai.com/account/api-keys.",
                code="invalid_api_key",
            )

    def _fault(self, request: Request, body: object) -> Fault:
        """The plan's next fault, overridden by the request header, then by the metadata."""
        fault = self.plan.next(stream=isinstance(body, dict) and body.get("stream") is True)
        metadata = body.get("metadata") if isinstance(body, dict) else None
        sources = [
            ("x-localmodel-fault header", request.headers.get("x-localmodel-fault")),
            (
                "metadata.localmodel_fault",
                metadata.get("localmodel_fault") if isinstance(metadata, dict) else None,
            ),
        ]
        for where, spec in sources:
            if isinstance(spec, str):
                try:
                    fault = fault.merged(Fault.parse(spec))
                except ValueError as exc:
                    raise invalid_request(f"Invalid {where}: {exc}.") from None
        if fault != Fault():
            with self._lock:
                self._injected[str(fault)] += 1
        return fault

    def _answer(self, request: ResponseRequest, fault: Fault) -> tuple[Item, list[float | None]]:
        """The policy's reply as a complete `Response` body, and its items' own streaming pauses;
        a failing policy is a 500.

        A `fail` or `incomplete` fault cuts the reply short after its first output item.
        """
        try:
            items, pauses = split_pauses(self._policy.respond(request))
            output = finish_output(items, self._ids)
        except Exception as exc:
            raise Rejection(
                500,
                f"The local model policy failed: {type(exc).__name__}: {exc}",
                type="server_error",
            ) from exc
        response_id = self._ids.new("resp_")
        if fault.fail is None and fault.incomplete is None:
            return build_response(request, output, response_id=response_id), pauses
        cut = build_response(
            request,
            output[:1],
            response_id=response_id,
            error=None if fault.fail is None else response_error(fault.fail),
            incomplete_reason=fault.incomplete,
        )
        return cut, pauses


def _decode(raw: bytes) -> Any:
    """The parsed body, or `_INVALID` when it is not strict JSON.

    `NaN`, `Infinity` and numbers too large for a float are refused: Python's parser accepts them,
    JSON does not, and echoed back they would make the answer unrenderable (a plain-text 500,
    which clients retry).
    """
    try:
        return STRICT_JSON.decode(raw.decode())
    except ValueError:  # UnicodeDecodeError included
        return _INVALID


def _mask(key: str) -> str:
    return f"{key[:8]}****{key[-4:]}" if len(key) > 12 else "****"


def _malformed(stream: bool) -> Response:
    if stream:
        return Response(MALFORMED_STREAM, media_type="text/event-stream")
    return Response('{"id": "resp_', media_type="application/json")


async def _drop(request: Request) -> Response:
    hook: DropHook | None = request.scope.get("extensions", {}).get(DROP_EXTENSION)
    if hook is None:
        # In-process (httpx.ASGITransport) there is no connection to drop. Raise what httpx raises
        # when a server drops one; ASGITransport hands app exceptions to the caller unchanged.
        raise httpx.RemoteProtocolError("Server disconnected without sending a response.")
    await hook()
    return _NoResponse()


def _broken_body(request: Request, body: bytes, fault: Fault) -> Response:
    """A JSON answer whose `content-length` promises all of `body`: half of it is sent, then the
    connection is closed (`cut`) or the rest follows after a pause (`stall`)."""
    half = len(body) // 2

    async def chunks() -> AsyncIterator[bytes]:
        yield body[:half]
        if fault.stall:
            await anyio.sleep(fault.stall)
        if fault.cut:
            await _drop_mid_body(request)
            return
        yield body[half:]

    headers = {"content-length": str(len(body))}
    return StreamingResponse(chunks(), media_type="application/json", headers=headers)


async def _then_drop(request: Request, events: AsyncIterator[str]) -> AsyncIterator[str]:
    """`events`, then the connection closed under them (no clean end of the stream)."""
    async for event in events:
        yield event
    await _drop_mid_body(request)


async def _drop_mid_body(request: Request) -> None:
    hook: DropHook | None = request.scope.get("extensions", {}).get(DROP_EXTENSION)
    if hook is None:
        raise httpx.RemoteProtocolError(_CUT)  # what httpx raises when a body stops short
    # Let what was sent leave the socket before closing it, or the client would see no body at all.
    await anyio.sleep(0.01)
    # The client may have left already (it timed out, or gave up): then there is nothing to close.
    with contextlib.suppress(RuntimeError):
        await hook()


class _NoResponse(Response):
    """Sends nothing: the connection it would go to is already closed."""

    def __init__(self) -> None:
        super().__init__(status_code=499)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        return None


async def _http_error(request: Request, exc: Exception) -> Response:
    """Unknown paths and wrong methods get the API's JSON error, not Starlette's plain text."""
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    where = f"{request.method} {request.url.path}"
    message = f"Invalid method for URL ({where})" if status == 405 else f"Invalid URL ({where})"
    headers = exc.headers if isinstance(exc, HTTPException) else None
    return Rejection(status, message, headers=headers).to_response()
