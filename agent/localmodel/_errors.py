"""OpenAI-style error answers.

Every refusal of the local model server travels as a `Rejection`, raised wherever the problem is found
(authentication, body validation, fault injection, a failing policy) and rendered once, by the app, as
the JSON body the real API sends: `{"error": {"message", "type", "param", "code"}}`. Keeping the shape
in one place is what lets clients exercise their real error handling against this server.

    Exception
    └── Rejection          an HTTP error answer: status, message, type, param, code, extra headers
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.responses import JSONResponse

__all__ = ["Rejection", "invalid_request", "invalid_type", "json_type_name", "missing_parameter"]

_JSON_TYPE_NAMES: tuple[tuple[type, str], ...] = (
    (bool, "a boolean"),
    (int, "an integer"),
    (float, "a decimal"),
    (str, "a string"),
    (list, "an array"),
)


class Rejection(Exception):
    """An error answer, raised where the problem is found and rendered by the app."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        """The JSON body, exactly as the real API shapes it."""
        error = {"message": self.message, "type": self.type, "param": self.param, "code": self.code}
        return {"error": error}

    def to_response(self) -> JSONResponse:
        """The Starlette response carrying this error."""
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def invalid_request(message: str, param: str | None = None, code: str | None = None) -> Rejection:
    """A 400 `invalid_request_error`, the answer to every malformed request."""
    return Rejection(400, message, param=param, code=code)


def json_type_name(value: object) -> str:
    """The article and JSON type name OpenAI's messages use: 'an object', 'a string', ..."""
    if value is None:
        return "null"
    # bool before int: in Python a bool is an int, in JSON it is not.
    return next((name for kind, name in _JSON_TYPE_NAMES if isinstance(value, kind)), "an object")


def missing_parameter(param: str) -> Rejection:
    """The API's 400 for a required parameter left out."""
    return invalid_request(
        f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter"
    )


def invalid_type(param: str, expected: str, value: object) -> Rejection:
    """The API's 400 for a parameter of the wrong JSON type."""
    return invalid_request(
        f"Invalid type for '{param}': expected {expected}, but got {json_type_name(value)} instead.",
        param=param,
        code="invalid_type",
    )
