"""OpenAI-shaped errors: `{"error": {"message", "type", "param", "code"}}` with an HTTP status.

Contract: handlers raise `APIError(status, message, param=..., code=...)`; the app turns it into
the JSON body OpenAI's clients parse (the `openai` SDK raises `BadRequestError`,
`NotFoundError`, ... from the status and shows `message`). `type` follows the status as
OpenAI does; `code` is a short machine-readable reason, `param` the offending field or None.
"""
from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse
from pydantic import ValidationError

_TYPES = {
    400: "invalid_request_error",
    404: "not_found_error",
    413: "invalid_request_error",
    500: "internal_server_error",
    503: "service_unavailable",
}


class APIError(Exception):
    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code

    def body(self) -> dict[str, Any]:
        return error_body(self.status, self.message, param=self.param, code=self.code)

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status)


def error_body(status: int, message: str, *, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": _TYPES.get(status, "invalid_request_error"),
                      "param": param, "code": code}}


def bad_request(message: str, *, param: str | None = None, code: str = "invalid_value") -> APIError:
    return APIError(400, message, param=param, code=code)


def from_validation_error(exc: ValidationError) -> APIError:
    """A 400 naming the first bad field of a request body, as `a.b.0: what is wrong`."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    param = ".".join(str(part) for part in first["loc"]) or None
    kind = first["type"]
    alternatives = [e for e in errors if e["loc"][:1] == first["loc"][:1]]
    if len(alternatives) > 1 and kind != "missing":
        # A union field (prompt, stop, ...): pydantic reports one error per accepted type, with
        # the type's name in the location; name the field and list what each type wanted.
        param = str(first["loc"][0])
        wanted = "; ".join(dict.fromkeys(e["msg"] for e in alternatives))
        return APIError(400, f"{param} has the wrong type (got {_short(first.get('input'))}): {wanted}",
                        param=param, code="invalid_type")
    if kind == "missing":
        message = f"{param} is required"
    elif kind == "extra_forbidden":
        message = f"{param} is not a recognized field"
    else:
        message = f"{param}: {first['msg']} (got {_short(first.get('input'))})"
    code = "missing_required_parameter" if kind == "missing" else "invalid_type"
    if kind.startswith(("greater_than", "less_than")):
        code = "invalid_value"
    return APIError(400, message, param=param, code=code)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
