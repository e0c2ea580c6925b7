"""Taking in what a client sends, before any route logic: the request path's form, and the
body within its size (413), type (415) and time (408)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from aiproxy_middleware.errors import ProxyError, bad_request
from aiproxy_middleware.pipeline.read_deadline import ReadDeadlines
from aiproxy_middleware.wire.anthropic_answers import error_json

logger = logging.getLogger("aiproxy_middleware")

Scope = dict[str, Any]


def first_values(headers: Sequence[tuple[bytes, bytes]]) -> dict[bytes, bytes]:
    """Each header's first value by its name (ASGI names are lower-case): one pass in C,
    where a loop per header looked for costs a request more."""
    try:
        return dict(reversed(headers))
    except TypeError:  # (a server that hands over another kind of iterable)
        return dict(reversed(list(headers)))


def _check_content_type(value: bytes) -> None:
    media = value.split(b";", 1)[0].strip().lower()
    if media != b"application/json" and not media.endswith(b"+json"):
        raise ProxyError(415, f"content type {media.decode('latin-1')!r} is not supported;"
                         " send application/json", "invalid_request_error",
                         "unsupported_media_type")


async def refuse_path(scope: Scope, send: Any, problem: str) -> None:
    """The 400 for a request path that is not origin-form or holds CR, LF or NUL, in the
    error format of the API the path names. The path is logged with `repr` (never as it
    is: it would forge log lines) and is not echoed to the client."""
    path = scope["path"]
    logger.warning("aiproxy: refused %s %r: %s", scope.get("method"), path[:200], problem)
    error = bad_request(problem, "invalid_path")
    anthropic = path.rstrip("/").endswith("/v1/messages")
    body = error_json(400, problem) if anthropic else error.body()
    await send({"type": "http.response.start", "status": 400,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def read_body(receive: Any, headers: list[tuple[bytes, bytes]], limit: int,
                    content_type: bool = False,
                    deadlines: ReadDeadlines | None = None) -> bytes:
    """The request body, within `limit` bytes (413), checked to be JSON (415) if asked,
    arrived within the `deadlines`' timeout (408)."""
    first = first_values(headers)
    if content_type:
        media = first.get(b"content-type")
        if media is not None and media != b"application/json":  # (as the SDKs send it)
            _check_content_type(media)
    length = first.get(b"content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise too_large(limit)
    chunks: list[bytes] = []
    size = 0
    task = deadlines.enter() if deadlines is not None else None
    try:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ProxyError(499, "the client closed the connection",
                                 "invalid_request_error", "client_closed")
            chunk = message.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > limit:
                    raise too_large(limit)
                chunks.append(chunk)
            if not message.get("more_body", False):
                break
    except asyncio.CancelledError:
        if task is not None and deadlines.expired(task):  # type: ignore[union-attr]
            raise deadlines.error() from None  # type: ignore[union-attr]
        raise
    finally:
        if task is not None:
            deadlines.leave(task)  # type: ignore[union-attr]
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def too_large(limit: int) -> ProxyError:
    """The 413 for a body over `limit` bytes."""
    return ProxyError(413, f"the request body is larger than {limit} bytes",
                      "invalid_request_error", "request_too_large")
