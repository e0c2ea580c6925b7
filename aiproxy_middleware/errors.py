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

    def body(self) -> bytes:
        return msgspec.json.encode(
            ErrorResponse(ErrorDetail(self.message, self.type, self.code, self.param)))


def bad_request(message: str, code: str = "invalid_request", param: str | None = None) -> ProxyError:
    return ProxyError(400, message, "invalid_request_error", code, param)


def upstream_unreachable(message: str) -> ProxyError:
    return ProxyError(502, message, "upstream_error", "upstream_unreachable")


def upstream_invalid(message: str) -> ProxyError:
    return ProxyError(502, message, "upstream_error", "bad_upstream_response")


def upstream_timeout(message: str) -> ProxyError:
    return ProxyError(504, message, "upstream_error", "upstream_timeout")
