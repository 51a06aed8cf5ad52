"""Errors the gateway answers with, in OpenAI's error shape.

Contract: every refusal is a `GatewayError` (HTTP status, message, type, code, optional headers
such as Retry-After, optional extra fields such as tier and waited_ms); `to_response()` renders
`{"error": {"message", "type", "param", "code", ...extra}}` so the openai SDK raises its usual
exception classes (401 AuthenticationError, 429 RateLimitError, ...); `render()` gives the same
body and headers as bytes for the bare-ASGI request path. No request ends in silence.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi.responses import JSONResponse


class GatewayError(Exception):
    def __init__(self, status: int, message: str, type_: str, code: str, *, param: str | None = None,
                 headers: dict[str, str] | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type_, code, param
        self.headers, self.extra = headers or {}, extra

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code,
                          **self.extra}}

    def to_response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)

    def render(self) -> tuple[bytes, list[tuple[bytes, bytes]]]:
        """(JSON body, ASGI headers with content-type and content-length)."""
        body = json.dumps(self.body(), ensure_ascii=False, separators=(",", ":")).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        headers += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in self.headers.items()]
        return body, headers


def unauthorized(message: str = "missing or invalid API key") -> GatewayError:
    return GatewayError(401, message, "authentication_error", "invalid_api_key",
                        headers={"WWW-Authenticate": "Bearer"})


def bad_request(message: str, param: str | None = None) -> GatewayError:
    return GatewayError(400, message, "invalid_request_error", "invalid_request", param=param)
