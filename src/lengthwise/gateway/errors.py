"""Errors in the OpenAI format, so that OpenAI clients raise the right exception type."""

from __future__ import annotations

import json

from starlette.responses import Response

#: OpenAI's error `type` for each status the gateway itself produces.
_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    405: "invalid_request_error",
    408: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    431: "invalid_request_error",
    499: "client_closed_request",
    500: "internal_error",
    502: "upstream_error",
    503: "service_unavailable",
    504: "upstream_timeout",
}


class GatewayError(Exception):
    """An error answered to the client as-is; raised anywhere while a request is handled."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.headers = headers or {}

    def payload(self) -> dict[str, object]:
        return {
            "error": {
                "message": self.message,
                "type": _TYPES.get(self.status, "error"),
                "param": self.param,
                "code": self.code,
            }
        }

    def response(self) -> Response:
        return Response(
            json.dumps(self.payload()), status_code=self.status, headers=self.headers, media_type="application/json"
        )

    def sse_event(self) -> bytes:
        """The error as the last events of a stream that already started (vLLM's framing)."""
        return f"data: {json.dumps(self.payload())}\n\ndata: [DONE]\n\n".encode()


def bad_request(message: str, param: str | None = None) -> GatewayError:
    return GatewayError(400, message, code="invalid_request", param=param)
