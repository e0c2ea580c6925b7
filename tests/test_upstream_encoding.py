"""What the scrubber cannot see is not relayed: a hostile upstream on 127.0.0.1 that
compresses its answers (gzip, deflate, double layers, encodings nobody asked for) and echoes
the key it was sent, in its body, its headers and its streamed events.

Through the middleware's default client (httpx over aiohttp) and an injected httpx client
(and httpx's MockTransport, whose answers httpx has decoded already), the client always
gets a body it can decode, with no `Content-Encoding` the gateway did not apply and no key;
decoded bytes count against `maxResponseSize` / `max_response_bytes`, so a gzip bomb is a
502 that stops reading at the limit; every relayed header and every summary field (the
answer's streamed text included) is free of the key.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import logging
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager

from aiproxy_middleware import AIProxyMiddleware
from aiproxy_middleware.wire import encodings
from helpers import chat, inner_app
from upstream_server import RawServer, response_head

KEY = "sk-SECRET-upstream-encoding-1234"
APISIX_KEY = "sk-SECRET-apisix-encoding-5678"
KEYS = (KEY, APISIX_KEY)
CHAT = chat("m")
STREAM = {**CHAT, "stream": True}
CLIENTS = ["default", "injected"]
DIALECTS = ["higress", "apisix"]


# ---- encodings, as a hostile upstream spells them ------------------------------------------

def _raw_deflate(data: bytes) -> bytes:
    c = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return c.compress(data) + c.flush()


ENCODED: dict[str, tuple[str, Callable[[bytes], bytes]]] = {
    "gzip": ("gzip", gzip.compress),
    "x-gzip": ("x-gzip", gzip.compress),
    "upper-case": ("GZIP", gzip.compress),
    "spaced": ("  gzip ", gzip.compress),
    "deflate": ("deflate", zlib.compress),
    "raw-deflate": ("deflate", _raw_deflate),
    "gzip-gzip": ("gzip, gzip", lambda b: gzip.compress(gzip.compress(b))),
    "deflate-gzip": ("deflate,gzip", lambda b: gzip.compress(zlib.compress(b))),
    "identity-gzip": ("identity, gzip", gzip.compress),
    "two-headers": ("gzip\r\ncontent-encoding: gzip", lambda b: gzip.compress(gzip.compress(b))),
    "identity": ("identity", lambda b: b),
}
if encodings.BROTLI is not None:
    ENCODED["br"] = ("br", encodings.BROTLI.compress)

UNDECODABLE: dict[str, tuple[str, Callable[[bytes], bytes]]] = {
    "compress": ("compress", gzip.compress),
    "zstd": ("zstd", gzip.compress),
    "gzip-then-unknown": ("gzip, x-unknown", gzip.compress),
    "key-as-encoding": (KEY, gzip.compress),
    "corrupt-gzip": ("gzip", lambda b: b"\x1f\x8b\x08\x00garbage" + b),
    "truncated-gzip": ("gzip", lambda b: gzip.compress(b)[:-12]),
    "gzip-labelled-deflate": ("deflate", gzip.compress),
}
if encodings.BROTLI is None:
    UNDECODABLE["br-without-brotli"] = ("br", gzip.compress)


@pytest.mark.parametrize("case", [c for c in ENCODED if c not in ("two-headers", "identity")])
def test_the_decoder_takes_any_split_of_the_bytes(case):
    encoding, encode = ENCODED[case]
    plain = b"".join(content_event(f"piece {i}") for i in range(2000))
    body = encode(plain)
    for size in (1, 7, 4096, len(body)):
        decoder = encodings.decoder_for(encoding, len(plain))
        out = [decoder.feed(body[i:i + size]) for i in range(0, len(body), size)]
        assert b"".join(out) + decoder.close() == plain
    with pytest.raises(encodings.TooBig):  # one byte over the limit
        decoder = encodings.decoder_for(encoding, len(plain) - 1)
        decoder.feed(body)
        decoder.close()


# ---- the hostile upstream --------------------------------------------------------------------

def _auth(head: bytes) -> str:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() in (b"authorization", b"api-key"):
            return value.strip().decode()
    return ""


def _path(head: bytes) -> str:
    return head.split(b" ", 2)[1].decode()


def echo_event(auth: str) -> bytes:
    return b'data: {"error": {"message": "invalid key: %s", "type": "auth"}}\n\n' % auth.encode()


def content_event(text: str) -> bytes:
    event = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
             "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}
    return b"data: " + json.dumps(event).encode() + b"\n\n"


def echo_headers(auth: str) -> bytes:
    """Headers echoing the credential, spelled a few ways."""
    token = auth.split(" ", 1)[-1]
    return (f"x-debug-auth: {auth}\r\nx-token: {token}\r\n"
            f"link: <https://x.test/?k={token}>\r\n").encode()


def echoing(status: int, encoding: str, encode: Callable[[bytes], bytes],
            sse: bool = False) -> Callable[..., Any]:
    """Answers `status` with a body quoting the request's credential, encoded."""
    async def handler(server: RawServer, reader: Any, writer: Any) -> None:
        head, _ = server.requests[-1]
        auth = _auth(head)
        if sse:
            plain = (content_event(f"you sent {auth}") + echo_event(auth) + b"data: [DONE]\n\n")
            kind = b"text/event-stream"
        else:
            plain = json.dumps({"error": {"message": f"bad key: {auth}", "type": "auth",
                                          "code": status}}).encode()
            kind = b"application/json"
        body = encode(plain)
        writer.write(response_head(status, kind, len(body), echo_headers(auth)
                                   + f"content-encoding: {encoding}\r\n".encode()) + body)
        await writer.drain()
    return handler


# ---- configs and the gateway ---------------------------------------------------------------

def config(dialect: str, url: str, **extra: Any) -> dict[str, Any]:
    if dialect == "higress":
        return {"provider": {"type": "openai", "apiTokens": [KEY],
                             "openaiCustomUrl": f"{url}/v1"}, **extra}
    route = {"path": "/v1/chat/completions", "provider": "openai-compatible",
             "auth": {"header": {"Authorization": f"Bearer {APISIX_KEY}"}},
             "override": {"endpoint": f"{url}/v1/chat/completions"}}
    if "maxResponseSize" in extra:
        route["max_response_bytes"] = extra.pop("maxResponseSize")
    if "logging" in extra:
        route["logging"] = extra.pop("logging")
    return {"routes": [route], **extra}


@contextlib.asynccontextmanager
async def gateway(conf: dict[str, Any], client: str = "default",
                  summaries: list[Any] | None = None) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the middleware, which uses its default client or an injected one."""
    injected = httpx.AsyncClient() if client == "injected" else None
    app = AIProxyMiddleware(inner_app(), config=conf, http_client=injected)
    if summaries is not None:
        app.add_summary_hook(summaries.append)
    try:
        async with LifespanManager(app):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app), timeout=10,
                                         base_url="http://gateway.test") as c:
                yield c
    finally:
        if injected is not None:
            await injected.aclose()


def assert_clean(r: httpx.Response) -> None:
    """What the client got: decodable (no encoding it cannot undo), with no key anywhere."""
    assert "content-encoding" not in r.headers, r.headers
    text = r.content.decode()  # (httpx would raise here on an encoding it cannot undo)
    for key in KEYS:
        for form in (key, key.lower()):
            assert form not in text, text
            assert all(form not in v for v in r.headers.values()), r.headers


# ---- the tests -------------------------------------------------------------------------------

@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream-request"])
@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("case", list(ENCODED))
async def test_encoded_error_echoing_the_key_is_decoded_and_scrubbed(case, client, stream):
    encoding, encode = ENCODED[case]
    async with RawServer(echoing(401, encoding, encode)) as up:
        for dialect in DIALECTS:
            async with gateway(config(dialect, up.url), client) as c:
                r = await c.post("/v1/chat/completions", json=STREAM if stream else CHAT)
            assert r.status_code == 401, (dialect, r.text)
            assert_clean(r)
            assert r.json()["error"]["message"].startswith("bad key: ***"), r.text
            assert r.headers["x-debug-auth"] == "***" and r.headers["x-token"] == "***"
    # The gateway asked for no encoding (whatever its client would have asked for).
    assert all(b"accept-encoding: identity\r\n" in head.lower() for head, _ in up.requests)


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("case", list(UNDECODABLE))
async def test_an_encoding_the_gateway_cannot_undo_is_a_502(case, client):
    encoding, encode = UNDECODABLE[case]
    async with RawServer(echoing(401, encoding, encode)) as up:
        for dialect in DIALECTS:
            for body in (CHAT, STREAM):
                async with gateway(config(dialect, up.url), client) as c:
                    r = await c.post("/v1/chat/completions", json=body)
                assert r.status_code == 502, (dialect, r.text)
                assert r.json()["error"]["code"] == "bad_upstream_response"
                assert_clean(r)


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("case", ["gzip", "gzip-gzip", "deflate", "raw-deflate", "identity"])
async def test_encoded_stream_echoing_the_key_is_decoded_and_scrubbed(case, client):
    """A 200 event stream, compressed, whose content and error event echo the key: the
    client gets plain events, none with the key, and the stream's headers scrubbed."""
    encoding, encode = ENCODED[case]
    async with RawServer(echoing(200, encoding, encode, sse=True)) as up:
        for dialect in DIALECTS:
            async with gateway(config(dialect, up.url), client) as c:
                r = await c.post("/v1/chat/completions", json=STREAM)
            assert r.status_code == 200 and r.headers["content-type"] == "text/event-stream"
            assert_clean(r)
            assert b"invalid key: ***" in r.content and b"you sent ***" in r.content
            assert r.content.endswith(b"data: [DONE]\n\n")
            assert r.headers["x-debug-auth"] == "***"


@pytest.mark.parametrize("transport", ["mock-transport", "respx"])
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_injected_mock_clients(transport, stream, respx_mock):
    """An injected client whose answer httpx has already decoded (MockTransport builds it
    from bytes) or not (respx): either way the client can decode what it gets."""
    def answer(request: httpx.Request) -> httpx.Response:
        auth = request.headers["authorization"]
        if stream:
            plain, kind = content_event(f"you sent {auth}") + echo_event(auth), "text/event-stream"
        else:
            plain, kind = json.dumps({"error": {"message": f"bad key: {auth}"}}).encode(), \
                "application/json"
        return httpx.Response(200 if stream else 401, content=gzip.compress(plain), headers={
            "content-type": kind, "content-encoding": "gzip", "x-debug-auth": auth})
    if transport == "respx":
        respx_mock.route().mock(side_effect=answer)
        injected = httpx.AsyncClient()
    else:
        injected = httpx.AsyncClient(transport=httpx.MockTransport(answer))
    app = AIProxyMiddleware(inner_app(), http_client=injected, config={"provider": {
        "type": "openai", "apiTokens": [KEY]}})
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app),
                                 base_url="http://gateway.test") as c:
        r = await c.post("/v1/chat/completions", json=STREAM if stream else CHAT)
    await injected.aclose()
    assert r.status_code == (200 if stream else 401), r.text
    assert_clean(r)
    assert "***" in r.text and r.headers["x-debug-auth"] == "***"


# ---- gzip bombs ------------------------------------------------------------------------------

def bomb_blocks(plain: bytes, mib: int) -> tuple[bytes, bytes]:
    """A gzip stream's start and a block that may follow it any number of times, each
    block decoding to `mib` MiB of `plain` repeated (cheap to make: the compressor's
    state is reset after each block, so every block is the same bytes)."""
    block = (plain * ((mib << 20) // len(plain) + 1))[:mib << 20]
    c = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    start = c.compress(block) + c.flush(zlib.Z_FULL_FLUSH)
    again = c.compress(block) + c.flush(zlib.Z_FULL_FLUSH)
    assert again == c.compress(block) + c.flush(zlib.Z_FULL_FLUSH)
    return start, again


SSE_PLAIN = content_event("x" * 40)


def bomb(sse: bool, endless: bool = False) -> Callable[..., Any]:
    """Answers a gzip body that decodes to 1 GiB (or, `endless`, until the gateway hangs
    up), with a Content-Length of its ~1 MiB of compressed bytes (or none)."""
    start, block = bomb_blocks(SSE_PLAIN if sse else b"\0", 1)
    body = start + block * 1023

    async def handler(server: RawServer, reader: Any, writer: Any) -> None:
        kind = b"text/event-stream" if sse else b"application/json"
        extra = b"content-encoding: gzip\r\n"
        if endless:
            writer.write(response_head(200, kind, None, extra) + start)
            while True:  # until the write fails: the gateway closed the connection
                writer.write(block)
                await writer.drain()
        writer.write(response_head(200, kind, len(body), extra) + body)
        await writer.drain()
        await server.until_peer_closes(reader)
    return handler


LIMIT = 4 << 20


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("dialect", DIALECTS)
async def test_a_gzip_bomb_over_the_limit_is_a_502(dialect, client):
    """1 GiB decoded from 1 MiB read: over a 4 MiB limit, a 502, and the gateway held
    about the limit in memory, not the bomb."""
    async with RawServer(bomb(sse=False)) as up:
        assert len(bomb_blocks(b"\0", 1)[1]) * 1024 < LIMIT  # compressed, it is under
        async with gateway(config(dialect, up.url, maxResponseSize=LIMIT), client) as c:
            tracemalloc.start()
            try:
                r = await c.post("/v1/chat/completions", json=CHAT)
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
        assert r.status_code == 502, r.text[:200]
        assert f"{LIMIT} bytes" in r.json()["error"]["message"]
        assert_clean(r)
        assert peak < 16 * LIMIT, peak
        assert await up.wait_peer_closed(within=5) is not None


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("dialect", DIALECTS)
async def test_an_endless_gzip_bomb_stops_being_read_at_the_limit(dialect, client):
    async with RawServer(bomb(sse=False, endless=True)) as up:
        async with gateway(config(dialect, up.url, maxResponseSize=LIMIT), client) as c:
            r = await c.post("/v1/chat/completions", json=CHAT)
        assert r.status_code == 502 and f"{LIMIT} bytes" in r.json()["error"]["message"]
        assert await up.wait_peer_closed(within=5) is not None


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("dialect", DIALECTS)
async def test_a_streamed_gzip_bomb_ends_the_stream_at_the_limit(dialect, client):
    async with RawServer(bomb(sse=True)) as up:
        async with gateway(config(dialect, up.url, maxResponseSize=LIMIT), client) as c:
            r = await c.post("/v1/chat/completions", json=STREAM)
        assert r.status_code == 200
        assert_clean(r)
        assert len(r.content) < LIMIT + 4096  # whole decoded events (if any), up to the limit
        assert b"\0" not in r.content and b"\x1f\x8b" not in r.content
        last = r.content.rstrip(b"\n").rsplit(b"\n\n", 1)[-1]
        assert f"{LIMIT} bytes".encode() in last and b'"error"' in last
        assert await up.wait_peer_closed(within=5) is not None


async def test_without_a_configured_limit_an_encoded_answer_is_still_bounded():
    """An APISIX route has no `max_response_bytes` by default: a compressed answer is
    still bounded, by `maxResponseSize`'s default (64 MiB)."""
    async with RawServer(bomb(sse=False)) as up:
        async with gateway(config("apisix", up.url)) as c:
            r = await c.post("/v1/chat/completions", json=CHAT)
        assert r.status_code == 502 and f"{64 << 20} bytes" in r.json()["error"]["message"]
        assert await up.wait_peer_closed(within=5) is not None


# ---- headers and summaries -------------------------------------------------------------------

def plain_answer(status: int, sse: bool, split: bool = False) -> Callable[..., Any]:
    """An unencoded answer echoing the credential in its headers and body; `split` sends
    the events in two writes that cut the key in half."""
    async def handler(server: RawServer, reader: Any, writer: Any) -> None:
        import asyncio

        head, _ = server.requests[-1]
        auth = _auth(head)
        token = auth.split(" ", 1)[-1]
        if status >= 400:  # an OpenAI error body: relayed with the upstream's headers
            body = json.dumps({"error": {"message": f"you sent {auth}",
                                         "type": "invalid_request_error"}}).encode()
            kind = b"application/json"
        elif sse:
            body = (content_event("key: " + token[:9]) + content_event(token[9:])
                    + content_event(f" / {auth}") + echo_event(auth) + b"data: [DONE]\n\n")
            kind = b"text/event-stream"
        else:
            body = json.dumps({"id": "c", "object": "chat.completion", "created": 1, "model": "m",
                               "choices": [{"index": 0, "message": {
                                   "role": "assistant", "content": f"you sent {auth}"},
                                   "finish_reason": "stop"}]}).encode()
            kind = b"application/json"
        writer.write(response_head(status, kind, None, echo_headers(auth)))
        if split:
            cut = body.index(token.encode()) + 5
            writer.write(body[:cut])
            await writer.drain()
            await asyncio.sleep(0.05)
            body = body[cut:]
        writer.write(body)
        await writer.drain()
    return handler


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize("status,sse", [(200, False), (200, True), (401, False), (429, True)],
                         ids=["whole", "stream", "error", "stream-error"])
async def test_every_relayed_header_is_scrubbed(status, sse, dialect, client):
    async with RawServer(plain_answer(status, sse)) as up:
        async with gateway(config(dialect, up.url), client) as c:
            r = await c.post("/v1/chat/completions", json=STREAM if sse else CHAT)
    assert r.status_code == status
    assert_clean(r)
    assert r.headers["x-debug-auth"] == "***" and r.headers["x-token"] == "***"
    assert r.headers["link"] == "<https://x.test/?k=***>"


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize("split", [False, True], ids=["one-read", "key-split-across-reads"])
async def test_streamed_error_events_and_payload_summaries_hold_no_key(
        split, dialect, client, caplog):
    """With payload logging on, a stream whose content and error event echo the key (in one
    read, or cut across two): neither the client, the summary, its log line nor a hook
    sees the key. The client's own request body is scrubbed in the summary too."""
    caplog.set_level(logging.INFO)
    summaries: list[Any] = []
    logged = {"summaries": True, "payloads": True}
    async with RawServer(plain_answer(200, True, split)) as up:
        conf = config(dialect, up.url, logging=logged)
        key = KEY if dialect == "higress" else APISIX_KEY
        body = {**STREAM, "messages": [{"role": "user", "content": f"is {key} mine?"}]}
        async with gateway(conf, client, summaries) as c:
            r = await c.post("/v1/chat/completions", json=body)
    assert r.status_code == 200
    assert_clean(r)
    assert b"invalid key: ***" in r.content
    assert len(summaries) == 1
    summary = summaries[0].as_dict()
    assert "***" in summary["response_text"], summary
    assert summary["request"]["messages"][0]["content"] == "is *** mine?"
    shown = json.dumps(summary) + caplog.text
    for key in KEYS:
        assert key not in shown


@pytest.mark.parametrize("client", CLIENTS)
async def test_anthropic_clients_get_scrubbed_converted_streams(client):
    """On /v1/messages the stream is converted to Anthropic events: still no key."""
    async with RawServer(plain_answer(200, True)) as up:
        async with gateway(config("higress", up.url), client) as c:
            r = await c.post("/v1/messages", json={**STREAM, "max_tokens": 10})
    assert r.status_code == 200
    assert_clean(r)
    assert b"***" in r.content
