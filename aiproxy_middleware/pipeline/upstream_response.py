"""What an upstream's HTTP response says about itself, read without reading its body:
framing, content type, which headers may be relayed, and why a connection failed."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Awaitable
from typing import Any

import httpx

from aiproxy_middleware.runtime.transport import Answer

# Upstream response headers that describe the upstream connection, not the answer. The
# gateway asks for an uncompressed answer and decodes one that comes compressed anyway
# (encodings.py): what it relays is never encoded, so no Content-Encoding goes with it.
_DROP = frozenset({b"connection", b"keep-alive", b"transfer-encoding", b"content-length",
                   b"date", b"server", b"proxy-connection", b"upgrade", b"trailer", b"te",
                   b"set-cookie", b"alt-svc", b"content-encoding"})


def failure_reason(exc: httpx.TransportError) -> str:
    """A short account of a transport failure that cannot carry a secret."""
    if isinstance(exc, httpx.ConnectError):
        # (what the error says, and what it was raised from: an injected httpx client's
        # says "All connection attempts failed", its cause says why)
        causes = _causes(exc)
        text = " ".join(str(e) for e in causes).lower()
        if any(isinstance(e, ssl.SSLCertVerificationError) for e in causes) \
                or "certificate" in text:
            return "its TLS certificate could not be verified"
        if any(isinstance(e, ConnectionRefusedError) for e in causes) or "refused" in text:
            return "connection refused"
        if any(isinstance(e, socket.gaierror) for e in causes) or "name resolution" in text \
                or "resolve" in text or "nodename" in text or "getaddrinfo" in text:
            return "host name could not be resolved"
        return "connection failed"
    if isinstance(exc, httpx.RemoteProtocolError):
        return "the connection was closed before a complete answer"
    if isinstance(exc, httpx.ReadError):
        return "the connection broke while reading the answer"
    if isinstance(exc, httpx.WriteError):
        return "the connection broke while sending the request"
    return type(exc).__name__


def _causes(exc: BaseException) -> list[BaseException]:
    """`exc` and what it was raised from (a few levels: enough for httpx's layers)."""
    found = [exc]
    while len(found) < 8:
        cause = found[-1].__cause__ or found[-1].__context__
        if cause is None or cause in found:
            break
        found.append(cause)
    return found


def framing(response: httpx.Response) -> tuple[bytes | None, bytes | None]:
    """The answer's Content-Length and Content-Encoding (one pass: `headers.get` costs
    more than this whole loop; the direct path's `Answer` reads aiohttp's parse)."""
    if isinstance(response, Answer):
        return response.framing()
    length: bytes | None = None
    encoding: bytes | None = None
    for name, value in response.headers.raw:
        if len(name) == 14 and name.lower() == b"content-length":
            length = value
        elif len(name) == 16 and name.lower() == b"content-encoding":
            encoding = value if encoding is None else encoding + b"," + value
    return length, encoding


def relayed_headers(response: httpx.Response | Answer) -> list[tuple[bytes, bytes]]:
    raw = response.raw_headers if type(response) is Answer else response.headers.raw
    return [(k, v) for k, v in raw if k.lower() not in _DROP]


async def one_chunk(data: bytes) -> Any:
    yield data


def read_raw(response: httpx.Response | Answer) -> Awaitable[bytes]:
    """The whole answer as the upstream sent it (one with no Content-Encoding): the direct
    path's own read, awaited by the caller with no coroutine in between."""
    if type(response) is Answer:
        return response.raw_body()
    return _read_chunks(response)


async def _read_chunks(response: httpx.Response) -> bytes:
    chunks = [chunk async for chunk in response.aiter_raw()]
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def content_type(response: httpx.Response) -> str:
    """The answer's Content-Type as sent ("" when it has none): read once, then given to
    the checks below."""
    kind: str = response.headers.get("content-type", "")  # (httpx's `get` gives Any)
    return kind


def is_json(kind: str) -> bool:
    """A JSON answer to a streamed request is a whole answer (or an error), not a stream."""
    return kind.startswith("application/json")


def not_a_stream(kind: str, plain: bool) -> bool:
    """Whether a success answer to a stream request (of content type `kind`) is neither a
    stream nor JSON: an HTML page, say. A converted stream may have the provider's own
    type (Bedrock's is binary), so only a text type other than SSE rules it out."""
    kind = kind.lower()
    if not kind or kind.startswith(("text/event-stream", "application/json")):
        return False
    return plain or kind.startswith("text/")


def is_sse(kind: str) -> bool:
    return kind.startswith("text/event-stream")
