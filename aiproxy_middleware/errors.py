"""Errors the gateway raises and the OpenAI-format bodies it answers them with."""

from __future__ import annotations

import msgspec


class ConfigError(ValueError):
    """The configuration is invalid; the message names the field path and what is wrong."""


class ErrorDetail(msgspec.Struct):
    message: str
    type: str
    code: str | None = None
    param: str | None = None


class ErrorResponse(msgspec.Struct):
    error: ErrorDetail


class ProxyError(Exception):
    """An error answered to the client as OpenAI error JSON with an HTTP status."""

    def __init__(self, status: int, message: str, type: str, code: str | None = None,
                 param: str | None = None,
                 headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = headers
        """Response headers the answer carries (a 405's `Allow`)."""
        self.consumer: str | None = None
        """The consumer refused, when the gateway knew who was calling (a 403)."""

    def body(self) -> bytes:
        return msgspec.json.encode(
            ErrorResponse(ErrorDetail(self.message, self.type, self.code, self.param)))


STATUS_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error",
                      403: "permission_error", 404: "not_found_error", 429: "rate_limit_error"}


def error_type(status: int, overrides: dict[int, str] | None = None) -> str:
    """The OpenAI error `type` for an upstream's HTTP status: the common table, with a
    provider's own `overrides` (DeepL's 456 is a quota error, say); any other 5xx is a
    `server_error`, any other status an `invalid_request_error`."""
    if overrides and status in overrides:
        return overrides[status]
    return STATUS_ERROR_TYPES.get(
        status, "server_error" if status >= 500 else "invalid_request_error")


def bad_request(message: str, code: str = "invalid_request", param: str | None = None) -> ProxyError:
    return ProxyError(400, message, "invalid_request_error", code, param)


def upstream_unreachable(message: str) -> ProxyError:
    return ProxyError(502, message, "upstream_error", "upstream_unreachable")


def upstream_invalid(message: str) -> ProxyError:
    return ProxyError(502, message, "upstream_error", "bad_upstream_response")


def upstream_timeout(message: str) -> ProxyError:
    return ProxyError(504, message, "upstream_error", "upstream_timeout")
