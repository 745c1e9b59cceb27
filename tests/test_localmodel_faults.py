"""The local model server's soak faults: cut and stalled bodies, HTML pages, a seeded random mix."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import httpx
import pytest

from agent.localmodel import DEFAULT_MIX, AutoPolicy, Fault, FaultMix, LocalModelServer, create_app
from agent.localmodel._faults import FaultPlan

AUTH = {"authorization": "Bearer test-key"}
TOOL = {"type": "function", "name": "probe", "parameters": {"type": "object", "properties": {}}}


def _body(stream: bool) -> dict[str, object]:
    return {"model": "m", "input": "x", "stream": stream, "tools": [TOOL]}


@pytest.fixture(scope="module")
def server() -> Iterator[LocalModelServer]:
    with LocalModelServer(AutoPolicy()) as running:
        yield running


def _exchange(server: LocalModelServer, fault: str, *, stream: bool, read: float = 5.0) -> httpx.Response:
    timeout = httpx.Timeout(5.0, read=read)
    with httpx.Client(headers=AUTH, timeout=timeout) as client:
        return client.post(
            f"{server.base_url}/responses", json=_body(stream), headers={"x-localmodel-fault": fault}
        )


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_cut_fault_closes_the_connection_mid_body(server: LocalModelServer, stream: bool) -> None:
    """`cut` sends the headers and part of the body, then closes: the client sees a short body."""
    with pytest.raises(httpx.RemoteProtocolError, match="without sending complete message body"):
        _exchange(server, "cut", stream=stream)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_stall_fault_outlasts_a_short_read_timeout(server: LocalModelServer, stream: bool) -> None:
    """`stall=1` pauses mid-body: a client reading with a 0.2 s timeout times out."""
    with pytest.raises(httpx.ReadTimeout):
        _exchange(server, "stall=1", stream=stream, read=0.2)


def test_stall_fault_completes_for_a_patient_client(server: LocalModelServer) -> None:
    """A client that waits out the stall gets the whole, valid answer."""
    assert _exchange(server, "stall=0.1", stream=False).json()["status"] == "completed"


def test_not_json_fault_answers_an_html_page(server: LocalModelServer) -> None:
    """`not_json` answers 200 with an HTML page, as a misconfigured proxy does."""
    reply = _exchange(server, "not_json", stream=True)
    assert (reply.status_code, reply.headers["content-type"].split(";")[0]) == (200, "text/html")


@pytest.mark.asyncio
async def test_cut_fault_in_process_raises_what_httpx_raises() -> None:
    """In-process there is no socket: `cut` surfaces as httpx.RemoteProtocolError mid-body."""
    transport = httpx.ASGITransport(create_app(AutoPolicy()))
    async with httpx.AsyncClient(transport=transport, base_url="http://local", headers=AUTH) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            await client.post("/v1/responses", json=_body(False), headers={"x-localmodel-fault": "cut"})


@pytest.mark.parametrize("fault", [*DEFAULT_MIX, Fault(fail="server_error", delay=0.5)], ids=str)
def test_fault_text_form_round_trips(fault: Fault) -> None:
    """`str(fault)` is the text form that `Fault.parse` reads back."""
    assert Fault.parse(str(fault)) == fault


def test_fault_mix_is_repeatable_from_its_seed() -> None:
    """Two plans with the same seed fail the same requests with the same faults."""
    first, second = (FaultPlan(mix=FaultMix(rate=0.3, seed=7)) for _ in range(2))
    draws = [[plan.next(stream=n % 2 == 0) for n in range(200)] for plan in (first, second)]
    assert draws[0] == draws[1]


def test_fault_mix_fails_about_its_rate() -> None:
    """With rate 0.2, about a fifth of 2,000 requests get a fault."""
    plan = FaultPlan(mix=FaultMix(rate=0.2, seed=1))
    failed = sum(plan.next(stream=True) != Fault() for _ in range(2_000))
    assert 340 <= failed <= 460


def test_fault_mix_never_truncates_a_request_that_is_not_streamed() -> None:
    """`truncate` only changes a stream, so a non-streamed request never draws it."""
    plan = FaultPlan(mix=FaultMix(rate=1.0, seed=3, kinds=(Fault(truncate=True), Fault(status=500))))
    assert {plan.next(stream=False) for _ in range(50)} == {Fault(status=500)}


@pytest.mark.parametrize(
    ("rate", "kinds"), [(1.5, DEFAULT_MIX), (float("nan"), DEFAULT_MIX), (0.2, ()), (0.2, (Fault(),))]
)
def test_fault_mix_refuses_nonsense(rate: float, kinds: tuple[Fault, ...]) -> None:
    """A rate outside 0..1 or an empty list of kinds is an error, not silently ignored."""
    with pytest.raises(ValueError):  # noqa: PT011 - the message varies with the mistake
        FaultMix(rate=rate, kinds=kinds)


def test_server_counts_injected_faults_by_kind() -> None:
    """`injected_faults` counts each request's fault by its text form."""
    with LocalModelServer(AutoPolicy(), faults=[Fault(status=503), Fault(status=503), Fault(drop=True)]) as s:
        with httpx.Client(headers=AUTH) as client:
            for _ in range(4):
                with contextlib.suppress(httpx.RemoteProtocolError):
                    client.post(f"{s.base_url}/responses", json=_body(False))
        assert s.injected_faults == {"status=503": 2, "drop": 1}
