"""Upstream answers that are not what they claim, made into what the client's API promises.

An error page from a proxy in front of the provider (`text/html`, plain text, an empty
body), or an error in JSON of another shape (`{"detail": ...}`, a bare string), reaches the
client as its API family's error JSON, with the upstream's status: OpenAI's
`{"error": {"message", "type", "code", "param"}}`, or Anthropic's
`{"type": "error", "error": {"type", "message"}}` for a native Messages call. An error
already in that shape goes on byte for byte. The message names the provider and quotes
what the upstream said: a JSON error's own message, or a short single-line excerpt of any
other body, with the route's credentials masked (the body was scrubbed before; the text is
scrubbed again once decoded, unescaped and cut, before it is shortened).

A success answer that is not a JSON object is a 502 `bad_upstream_response` (see the relay).
Nothing here applies under `protocol: original`, whose answers are the provider's own.
"""

from __future__ import annotations

import html
import logging
import re
from typing import TYPE_CHECKING, Any, Literal

import msgspec

from aiproxy_middleware.errors import ProxyError, upstream_invalid
from aiproxy_middleware.pipeline.upstream_response import relayed_headers
from aiproxy_middleware.shapes import SKIM_ABOVE, decode_json
from aiproxy_middleware.wire.anthropic_answers import error_json

if TYPE_CHECKING:
    import httpx

    from aiproxy_middleware.provider import Provider
    from aiproxy_middleware.safety.secrets import Scrubber

logger = logging.getLogger("aiproxy_middleware")

EXCERPT = 200
"""Characters of a non-JSON body quoted in the error message."""
MESSAGE = 1000
"""Characters of an upstream JSON error's own message carried over."""
_WINDOW = 4096  # bytes of a body read for its excerpt (the rest is never looked at)

# The types OpenAI-format errors take by status (as the converting providers give them).
_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
          404: "not_found_error", 429: "rate_limit_error"}
# Line breaks of every kind, controls, and the invisible or direction-changing characters
# that could make a log line or a terminal show something else than it holds.
_UNSEEN = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff]")
_SPACES = re.compile(r"\s+")
_MESSAGE_KEYS = ("error", "message", "detail", "msg", "error_msg", "errorMessage")


class _OpenAIDetail(msgspec.Struct):
    message: str


class _OpenAIShape(msgspec.Struct):
    error: _OpenAIDetail


class _AnthropicDetail(msgspec.Struct):
    type: str
    message: str


class _AnthropicShape(msgspec.Struct):
    type: Literal["error"]
    error: _AnthropicDetail


def _shaped(body: bytes, shape: type[Any]) -> bool:
    """Whether `body` is a JSON object of `shape` (other fields skipped unread)."""
    try:
        msgspec.json.decode(body, type=shape)
    except (msgspec.DecodeError, RecursionError, UnicodeDecodeError):
        return False
    return True


def error_answer(provider: Provider[Any], status: int, body: bytes, response: httpx.Response,
                 scrub: Scrubber, anthropic: bool
                 ) -> tuple[bytes, list[tuple[bytes, bytes]] | None]:
    """The client's error body for an upstream error answer `body` (already scrubbed),
    Anthropic's shape when `anthropic`, else OpenAI's, and its headers; `body` and None
    (the upstream's headers) when it is in that shape already."""
    if _shaped(body, _AnthropicShape if anthropic else _OpenAIShape):
        return body, None
    message, code, param = _said(provider, status, body, response, scrub)
    if anthropic:
        body = error_json(status, message)
    else:
        kind = _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
        body = ProxyError(status, message, kind, code or "upstream_error", param).body()
    headers = _kept(scrub.headers(relayed_headers(response)))
    headers.append((b"content-type", b"application/json"))
    return body, headers


def not_json(provider: Provider[Any], status: int, body: bytes, response: httpx.Response,
             scrub: Scrubber) -> ProxyError:
    """The 502 for a success answer that is not a JSON object."""
    logger.warning("aiproxy: %s (%s) answered HTTP %d with a body that is not a JSON object",
                   provider.name, provider.host, status)
    return upstream_invalid(f"{_who(provider)} answered HTTP {status} with a body that is"
                            f" not a JSON object{_quoted(body, response, scrub)}")


def _kept(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The upstream headers that still hold for an error body the gateway wrote: when to
    try again, rate limits, and the upstream's request id (the rest described its page)."""
    return [(k, v) for k, v in headers if k.lower() == b"retry-after"
            or b"ratelimit" in k.lower() or b"request-id" in k.lower()]


def _who(provider: Provider[Any]) -> str:
    return f"provider {provider.name!r} ({provider.host})"


def _said(provider: Provider[Any], status: int, body: bytes, response: httpx.Response,
          scrub: Scrubber) -> tuple[str, str | None, str | None]:
    """The message (naming the provider), code and param an upstream error body gives."""
    value: Any = None
    if body and len(body) <= SKIM_ABOVE:  # (a larger error body is quoted, not decoded)
        try:
            value = decode_json(body)
        except msgspec.DecodeError:
            value = None
    text, code, param = _carried(value)
    if text:
        text = _SPACES.sub(" ", _UNSEEN.sub(" ", scrub.text(text))).strip()
        if len(text) > MESSAGE:
            text = text[:MESSAGE] + "..."
        return f"{_who(provider)} answered HTTP {status}: {text}", code, param
    return f"{_who(provider)} answered HTTP {status}{_quoted(body, response, scrub)}", None, None


def _carried(value: Any) -> tuple[str | None, str | None, str | None]:
    """The message, code and param of a JSON error of another shape: a bare string, or an
    object with one of `_MESSAGE_KEYS` (a string, or an object with a string `message`)."""
    if isinstance(value, str):
        return value, None, None
    if not isinstance(value, dict):
        return None, None, None
    for key in _MESSAGE_KEYS:
        found = value.get(key)
        inner = found if isinstance(found, dict) else value
        if isinstance(found, dict):
            found = found.get("message")
        if isinstance(found, str) and found.strip():
            return found, _text(inner.get("code")), _text(inner.get("param"))
    return None, None, None


def _text(value: Any) -> str | None:
    """A carried-over code or param (a number becomes its digits; anything else, none)."""
    if isinstance(value, str):
        return value[:100]
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def _quoted(body: bytes, response: httpx.Response, scrub: Scrubber) -> str:
    """`" (text/html): <excerpt>"`: the body's type and a short, single-line, scrubbed
    excerpt of it (tags dropped from markup)."""
    kind = response.headers.get("content-type", "").partition(";")[0].strip()
    kind = _SPACES.sub(" ", _UNSEEN.sub(" ", scrub.text(kind)))[:80] or "no content type"
    if not body.strip():
        return f" ({kind}) with an empty body"
    text = body[:_WINDOW].decode("utf-8", "replace")
    if text.lstrip().startswith("<") or "html" in kind or "xml" in kind:
        text = html.unescape(_text_of(text))
    text = _SPACES.sub(" ", _UNSEEN.sub(" ", scrub.text(text))).strip()
    if len(text) > EXCERPT or len(body) > _WINDOW:
        text = text[:EXCERPT] + "..."
    return f" ({kind}): {text}"


def _text_of(markup: str) -> str:
    """What a person reads of a page: tags, comments, scripts and styles left out, each as
    one space; an unclosed one ends it. (Searches only forward: linear in the text, where
    a regex's lazy matches are quadratic on `<script<script...`.)"""
    lower = markup.lower()
    out, at = [], 0
    while True:
        start = markup.find("<", at)
        if start < 0:
            out.append(markup[at:])
            break
        out.append(markup[at:start])
        if lower.startswith(("<script", "<style"), start):
            close = lower.find("</script" if lower[start + 2] == "c" else "</style", start)
            end = -1 if close < 0 else markup.find(">", close)
        elif markup.startswith("<!--", start):
            end = markup.find("-->", start)
            end = -1 if end < 0 else end + 2
        else:
            end = markup.find(">", start)
        if end < 0:
            break
        out.append(" ")
        at = end + 1
    return "".join(out)
