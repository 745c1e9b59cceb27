"""Run results and errors survive a trip through JSON as the same values and classes."""

from __future__ import annotations

import json

import pytest

from agent import (
    AgentError,
    APIConnectionError,
    AuthenticationError,
    MaxTurnsExceeded,
    RateLimitError,
    ResponseFailedError,
    RunError,
    RunResult,
    ToolCallRecord,
    Usage,
)
from agent.durable import error_from_json, error_to_json, result_from_json, result_to_json


def sample_result() -> RunResult:
    record = ToolCallRecord("add", "c1", '{"a":1}', "2", "ok", None, 0.25, 1)
    return RunResult(
        output="2",
        items=[{"role": "user", "content": "add"}],
        tool_calls=(record,),
        usage=Usage(requests=2, input_tokens=10, output_tokens=3, total_tokens=13),
        turns=2,
        response_ids=("resp_1", "resp_2"),
        status="incomplete",
        incomplete_reason="max_output_tokens",
        last_response={"id": "resp_2", "metadata": {"model_id": "x"}},
    )


def test_a_result_round_trips_through_json_text() -> None:
    """result_from_json(json(result_to_json(r))) == r, tuples included."""
    result = sample_result()
    assert result_from_json(json.loads(json.dumps(result_to_json(result)))) == result


@pytest.mark.parametrize(
    "error",
    [
        AuthenticationError("bad key", status=401, code="invalid_api_key", request_id="req_1"),
        RateLimitError("slow down", status=429, retry_after=2.5, transient=True),
        ResponseFailedError("boom", code="server_error", body={"id": "r"}, transient=True),
        APIConnectionError("refused"),
        MaxTurnsExceeded("too many turns"),
    ],
)
def test_an_error_round_trips_as_its_own_class(error: AgentError) -> None:
    """Class, message, status, code and the rest come back; str() is the same."""
    back = error_from_json(json.loads(json.dumps(error_to_json(error))))
    assert type(back) is type(error)
    assert str(back) == str(error)
    assert vars(back) == vars(error)


def test_an_unknown_error_class_comes_back_as_run_error() -> None:
    """A class name this runtime does not know (a newer writer) is a RunError with its message."""
    back = error_from_json({"type": "FutureError", "message": "from a newer runtime"})
    assert type(back) is RunError
    assert str(back) == "from a newer runtime"


def test_an_error_body_that_is_not_json_is_kept_as_text() -> None:
    """An API error whose body is not JSON data is stored as its text, not refused."""
    error = AuthenticationError("bad", status=401, body=b"raw bytes")
    assert json.dumps(error_to_json(error))
