"""Sending a call upstream and relaying the answer to the client through ASGI `send`."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx

from .anthropic import MessageStream, convert_answer, error_event, error_json
from .errors import ProxyError, upstream_timeout, upstream_unreachable
from .messages import AnswerRules
from .provider import Call, Provider

logger = logging.getLogger("aiproxy_middleware")

JSON = b"application/json"
USER_AGENT = "aiproxy-middleware"
# Upstream response headers that describe the upstream connection, not the answer. The
# gateway asks for an uncompressed answer; if one comes compressed anyway, its bytes pass
# through untouched and so does its Content-Encoding.
_DROP = frozenset({b"connection", b"keep-alive", b"transfer-encoding", b"content-length",
                   b"date", b"server", b"proxy-connection", b"upgrade", b"trailer", b"te",
                   b"set-cookie", b"alt-svc"})


class Relay:
    """Owns one request's upstream exchange and its ASGI response."""

    __slots__ = ("provider", "send", "started", "anthropic", "answers")

    def __init__(self, provider: Provider, send: Any, anthropic: bool = False,
                 answers: AnswerRules | None = None) -> None:
        self.provider = provider
        self.send = send
        self.started = False
        self.anthropic = anthropic
        """Answer in Anthropic's Messages format: the gateway's errors always; an OpenAI
        call's answer converted (a call to the provider's own Messages API is relayed)."""
        self.answers = answers
        """Reasoning rules for a chat answer (OpenAI format only), after the provider's
        conversion."""

    async def run(self, call: Call, shared: httpx.AsyncClient, receive: Any) -> None:
        provider = self.provider
        try:
            await provider.prepare(call, shared)
        except (TimeoutError, httpx.TimeoutException):
            raise self._timeout() from None
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None
        if call.answer is not None:
            await self._respond(200, [(b"content-type", JSON)], call.answer)
            return
        up = provider.request(call) if call.endpoint is not None else provider.original_request(call)
        headers = up.headers
        headers.setdefault("Content-Type", "application/json")
        headers["Accept-Encoding"] = "identity"
        headers.setdefault("User-Agent", USER_AGENT)
        if call.stream:
            headers.setdefault("Accept", "text/event-stream")
        client = provider.client(shared)
        request = client.build_request(up.method, up.url, headers=headers, content=up.body,
                                       timeout=provider.timeout)
        if call.stream or call.endpoint is None:
            # Under protocol original the answer says whether it streams (Gemini's
            # `:streamGenerateContent` does, whatever the body holds).
            await self._stream(call, client, request, receive)
            return
        try:
            async with asyncio.timeout(provider.timeout):
                response = await client.send(request, stream=True)
                try:
                    data = await _read_raw(response)
                finally:
                    await response.aclose()
        except (TimeoutError, httpx.TimeoutException):
            raise self._timeout() from None
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None
        await self._answer(call, response, data)

    async def _answer(self, call: Call, response: httpx.Response, data: bytes) -> None:
        status = response.status_code
        converted = False
        if status >= 400:
            error = self.provider.convert_error(call, status, data)
            if error is not None:
                status, data = error
                converted = True
            else:
                logger.warning("aiproxy: %s answered %d", self.provider.name, status)
        elif call.endpoint is not None:
            body = self.provider.convert_response(call, data)
            if body is not None:
                data, converted = body, True
            if self.answers is not None:
                data = self.answers.answer(data)
        if self.anthropic and call.endpoint is not None:
            data, converted = convert_answer(status, data, call.model), True
        await self._respond(status, [(b"content-type", JSON)] if converted
                            else _headers(response), data)

    async def _stream(self, call: Call, client: httpx.AsyncClient, request: httpx.Request,
                      receive: Any) -> None:
        converter = self.provider.stream_converter(call) if call.endpoint is not None else None
        plain = converter is None
        if self.anthropic and call.endpoint is not None:
            converter = MessageStream(call.model, converter)
        upstream_headers = converter is None
        if self.answers is not None and call.endpoint is not None and not self.anthropic:
            converter = self.answers.stream(converter)
        response: httpx.Response | None = None
        error: ProxyError | None = None
        watcher = _DisconnectWatcher(receive)
        try:
            async with asyncio.timeout(self.provider.timeout):
                response = await client.send(request, stream=True)
                if response.status_code >= 400 or _is_json(response) or (
                        plain and not _is_sse(response)):
                    await self._answer(call, response, await _read_raw(response))
                else:
                    await self._relay(response, converter, upstream_headers)
        except (TimeoutError, httpx.TimeoutException):
            error = self._timeout()
        except httpx.TransportError as exc:
            error = self._unreachable(exc)
        except asyncio.CancelledError:
            if not watcher.disconnected:
                raise
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
        finally:
            watcher.stop()
            if response is not None:
                await response.aclose()
        if error is not None:
            await self._fail_stream(error)

    async def _relay(self, response: httpx.Response, converter: Any,
                     upstream_headers: bool) -> None:
        headers = _headers(response)
        if not upstream_headers:
            headers = [(b"content-type", b"text/event-stream")]
        if not any(name.lower() == b"cache-control" for name, _ in headers):
            headers.append((b"cache-control", b"no-cache"))
        await self.send({"type": "http.response.start", "status": response.status_code,
                         "headers": headers})
        self.started = True
        send = self.send
        async for chunk in response.aiter_raw():
            if converter is not None:
                chunk = converter.feed(chunk)
            if chunk:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        tail = converter.close() if converter is not None else b""
        await send({"type": "http.response.body", "body": tail, "more_body": False})

    async def _fail_stream(self, error: ProxyError) -> None:
        if not self.started:
            raise error
        logger.warning("aiproxy: stream from %s ended early: %s", self.provider.name, error.message)
        body = (error_event(error.status, error.message) if self.anthropic
                else b"data: " + error.body() + b"\n\n")
        await self.send({"type": "http.response.body", "body": body, "more_body": False})

    async def fail(self, error: ProxyError) -> None:
        """Answer `error` as OpenAI error JSON, or end a started stream with it."""
        if self.started:
            await self._fail_stream(error)
            return
        body = error_json(error.status, error.message) if self.anthropic else error.body()
        await self._respond(error.status, [(b"content-type", JSON)], body)

    async def _respond(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        headers.append((b"content-length", str(len(body)).encode()))
        if status == 405:
            headers.append((b"allow", b"POST"))
        self.started = True
        await self.send({"type": "http.response.start", "status": status, "headers": headers})
        await self.send({"type": "http.response.body", "body": body})

    def _timeout(self) -> ProxyError:
        p = self.provider
        logger.warning("aiproxy: %s (%s) timed out after %d ms", p.name, p.host, p.config.timeout)
        return upstream_timeout(f"provider {p.name!r} ({p.host}) did not answer within"
                                f" {p.config.timeout} ms")

    def _unreachable(self, exc: httpx.TransportError) -> ProxyError:
        p = self.provider
        reason = _reason(exc)
        logger.warning("aiproxy: %s (%s) unreachable: %s", p.name, p.host, reason)
        return upstream_unreachable(f"could not reach provider {p.name!r} at {p.host}: {reason}")


def _reason(exc: httpx.TransportError) -> str:
    """A short account of a transport failure that cannot carry a secret."""
    if isinstance(exc, httpx.ConnectError):
        text = str(exc).lower()
        if "refused" in text:
            return "connection refused"
        if "name" in text or "resolve" in text or "nodename" in text or "getaddrinfo" in text:
            return "host name could not be resolved"
        return "connection failed"
    if isinstance(exc, httpx.RemoteProtocolError):
        return "the connection was closed before a complete answer"
    if isinstance(exc, httpx.ReadError):
        return "the connection broke while reading the answer"
    if isinstance(exc, httpx.WriteError):
        return "the connection broke while sending the request"
    return type(exc).__name__


def _headers(response: httpx.Response) -> list[tuple[bytes, bytes]]:
    return [(k, v) for k, v in response.headers.raw if k.lower() not in _DROP]


async def _read_raw(response: httpx.Response) -> bytes:
    """The whole answer as the upstream sent it (not decompressed: it is relayed as is)."""
    try:
        chunks = [chunk async for chunk in response.aiter_raw()]
    except httpx.StreamConsumed:  # an in-process answer built from bytes (the mock's)
        return response.content
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _is_json(response: httpx.Response) -> bool:
    """A JSON answer to a streamed request is a whole answer (or an error), not a stream."""
    return response.headers.get("content-type", "").startswith("application/json")


def _is_sse(response: httpx.Response) -> bool:
    return response.headers.get("content-type", "").startswith("text/event-stream")


class _DisconnectWatcher:
    """Cancels the current task when the client disconnects, until stopped.

    uvicorn drops what is sent after a disconnect without an error, so a relay learns that
    its client is gone only from `receive`.
    """

    __slots__ = ("disconnected", "_done", "_task", "_watch")

    def __init__(self, receive: Any) -> None:
        self.disconnected = False
        self._done = False
        self._task = asyncio.current_task()
        self._watch = asyncio.ensure_future(self._run(receive))

    async def _run(self, receive: Any) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        if not self._done:
            self.disconnected = True
            self._task.cancel()  # type: ignore[union-attr]

    def stop(self) -> None:
        self._done = True
        self._watch.cancel()
