"""Upstream answers that are not what they claim (issue 11, point 5).

- An error page (HTML, plain text, an empty body) or an error in JSON of another shape
  reaches OpenAI-format clients as OpenAI's error JSON with the upstream's status, and
  Anthropic clients (`/v1/messages`) as Anthropic's: the official SDKs raise the status's
  error class with a parseable body whose message names the provider and quotes a short,
  single-line, scrubbed excerpt. Errors already in the family's shape go on byte for byte;
  `protocol: original` relays the provider's own answer as it is.
- A success answer that is not a JSON object is a 502 `bad_upstream_response`.
- A URL setting with `user:password@` and apiTokens (or an APISIX `override.endpoint` with
  one) is a config error naming the field; a URL's user:password alone is Basic auth.
"""

from __future__ import annotations

import json
from typing import Any

import anthropic
import httpx
import openai
import pytest
import respx

from aiproxy_middleware import AIProxyMiddleware, ConfigError, load_config
from helpers import CHAT, OPENAI_ANSWER, SSE_ANSWER, inner_app
from upstream_server import Served, Upstream

try:  # anthropic >= 2.12 takes clients of httpx2 (httpx's successor), not httpx
    import httpx2 as sdk_httpx
except ImportError:  # pragma: no cover
    sdk_httpx = httpx

KEY = "sk-upstream-SECRET-0123456789"
OPENAI_URL = "https://api.openai.com/v1/chat/completions"
CLAUDE_URL = "https://api.anthropic.com/v1/messages"
OPENAI = {"provider": {"type": "openai", "apiTokens": [KEY]}}
CLAUDE = {"provider": {"type": "claude", "apiTokens": [KEY]}}
MESSAGE = {"model": "claude-test", "max_tokens": 16,
           "messages": [{"role": "user", "content": "hi"}]}
NGINX_502 = (b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
             b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
             b"</body>\r\n</html>\r\n")
# A long page: styles, a script, and text well past the excerpt's length.
LONG_503 = (b"<!DOCTYPE html><html><head><title>Service Unavailable</title><style>body {"
            + b"color: red; " * 200 + b"}</style><script>var x = '<b>';</script></head><body>"
            + b"<p>The server is temporarily unable to service your request.</p>" * 50
            + b"</body></html>")

# (status, content type, body, SDK error class, what the message must quote)
PAGES = [
    (502, "text/html", NGINX_502, openai.InternalServerError, "502 Bad Gateway"),
    (503, "text/html; charset=utf-8", LONG_503, openai.InternalServerError,
     "Service Unavailable"),
    (500, "text/html", b"<h1>Internal Server Error</h1>\n<p>oops\r\nline two</p>",
     openai.InternalServerError, "Internal Server Error oops line two"),
    (500, "text/html", b"<p>Down for <!-- x --> maintenance</p><script>if (a < b) { c = '<'",
     openai.InternalServerError, "Down for maintenance"),  # (an unclosed script: left out)
    (429, "text/plain", b"Too Many Requests\n", openai.RateLimitError, "Too Many Requests"),
    (401, "text/plain", b"Unauthorized", openai.AuthenticationError, "Unauthorized"),
    (404, None, b"", openai.NotFoundError, "empty body"),
    (502, "application/json", b"{not json", openai.InternalServerError, "{not json"),
    (400, "application/json", b'{"detail": "model foo does not exist"}',
     openai.BadRequestError, "model foo does not exist"),
    (422, "application/json", b'{"detail": [{"loc": ["body", "model"], "msg": "missing"}]}',
     openai.UnprocessableEntityError, '"msg": "missing"'),
    (500, "application/json", b'"a bare JSON string"', openai.InternalServerError,
     "a bare JSON string"),
    (400, "application/json", b'{"error": "context length exceeded"}', openai.BadRequestError,
     "context length exceeded"),
    (403, "application/json", b'{"message": "region not allowed", "code": 1234}',
     openai.PermissionDeniedError, "region not allowed"),
]


@pytest.fixture
async def sdks(upstream):
    """`openai_sdk(config)` and `anthropic_sdk(config)` talking to the middleware in-process."""
    clients: list[Any] = []

    def app(config: Any) -> AIProxyMiddleware:
        return AIProxyMiddleware(inner_app(), config=config, http_client=upstream)

    def openai_sdk(config: Any, base: str = "http://gw/v1") -> openai.AsyncOpenAI:
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app(config)))
        clients.append(http)
        return openai.AsyncOpenAI(base_url=base, api_key="client-key", http_client=http,
                                  max_retries=0)

    def anthropic_sdk(config: Any, base: str = "http://gw") -> anthropic.AsyncAnthropic:
        http = sdk_httpx.AsyncClient(transport=sdk_httpx.ASGITransport(app=app(config)))
        clients.append(http)
        return anthropic.AsyncAnthropic(base_url=base, api_key="client-key", http_client=http,
                                        max_retries=0)

    yield openai_sdk, anthropic_sdk
    for client in clients:
        await client.aclose()


def page(mock: Any, url: str, status: int, kind: str | None, body: bytes) -> respx.Route:
    headers = {"content-type": kind} if kind else {}
    return mock.post(url).respond(status, content=body, headers=headers)


def single_line_quote(message: str, provider: str = "openai",
                      host: str = "api.openai.com") -> None:
    """What every rewritten message holds: the provider, no line break, a bounded quote."""
    assert f"provider {provider!r} ({host})" in message
    assert "\n" not in message and "\r" not in message
    assert len(message) < 400


async def openai_error(sdk: openai.AsyncOpenAI, stream: bool,
                       path: str = "chat") -> openai.APIStatusError:
    with pytest.raises(openai.APIStatusError) as info:
        if path == "embeddings":
            await sdk.embeddings.create(model="m", input="hi")
        else:
            await sdk.chat.completions.create(**CHAT, stream=stream)
    return info.value


# ---- error pages and foreign JSON errors, openai SDK -------------------------------------


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("status, kind, body, error, quoted", PAGES,
                         ids=[f"{p[0]}-{(p[1] or 'none').split(';')[0]}-{i}"
                              for i, p in enumerate(PAGES)])
async def test_error_page_becomes_openai_error(sdks, respx_mock, status, kind, body, error,
                                               quoted, stream):
    page(respx_mock, OPENAI_URL, status, kind, body)
    err = await openai_error(sdks[0](OPENAI), stream)
    assert type(err) is error and err.status_code == status
    assert err.response.headers["content-type"] == "application/json"
    assert isinstance(err.body, dict) and isinstance(err.body["message"], str)
    message = err.body["message"]
    single_line_quote(message)
    assert quoted in message
    assert f"HTTP {status}" in message
    assert err.type == ("server_error" if status >= 500 else err.type)
    if b"<" in body:
        assert "<" not in message.partition("): ")[2]  # tags and scripts dropped
    if len(body) > 1000:
        assert message.endswith("...") and len(message.partition("): ")[2]) <= 203
    if b"1234" in body:
        assert err.code == "1234"  # a foreign error's code is carried over


@pytest.mark.parametrize("stream", [False, True])
async def test_openai_shaped_errors_go_on_byte_for_byte_others_are_reshaped(
        gateway, respx_mock, stream):
    """A valid OpenAI error body (spacing, extra fields and all) is not rewritten; the
    same route's HTML page is."""
    shaped = (b'{ "error" : {"message": "Rate limit reached", "type": "requests",'
              b' "param": null, "code": "rate_limit_exceeded"}, "extra": [1, 2] }')
    respx_mock.post(OPENAI_URL).mock(side_effect=[
        httpx.Response(429, content=shaped, headers={"content-type": "application/json",
                                                     "retry-after": "7"}),
        httpx.Response(503, content=NGINX_502, headers={
            "content-type": "text/html", "retry-after": "3", "x-request-id": "req-1",
            "etag": '"page"', "content-language": "en"})])
    client = gateway(OPENAI)
    first = await client.post("/v1/chat/completions", json={**CHAT, "stream": stream})
    assert first.status_code == 429 and first.content == shaped
    assert first.headers["retry-after"] == "7"
    second = await client.post("/v1/chat/completions", json={**CHAT, "stream": stream})
    assert second.status_code == 503
    assert second.headers["content-type"] == "application/json"
    error = second.json()["error"]
    assert set(error) == {"message", "type", "code", "param"}
    assert error["type"] == "server_error" and error["code"] == "upstream_error"
    # when to try again and the upstream's request id still hold; the page's own do not
    assert second.headers["retry-after"] == "3" and second.headers["x-request-id"] == "req-1"
    assert "etag" not in second.headers and "content-language" not in second.headers


async def test_error_page_echoing_credentials_is_scrubbed(sdks, respx_mock):
    """A page that quotes the key (plainly, HTML-escaped, or as a JSON string escape) and
    the Authorization header: the client sees `***`, never the key."""
    escaped = "".join(f"&#{ord(c)};" for c in KEY)
    body = (f"<html><body><h1>401</h1><p>Key {escaped} is not valid.</p>"
            f"<pre>Authorization: Bearer {KEY}</pre></body></html>").encode()
    page(respx_mock, OPENAI_URL, 401, "text/html", body)
    err = await openai_error(sdks[0](OPENAI), False)
    assert isinstance(err, openai.AuthenticationError)
    assert KEY not in err.response.text and KEY[:12] not in err.response.text
    assert "Key *** is not valid" in err.body["message"]
    respx_mock.post(OPENAI_URL).respond(
        400, content=json.dumps({"detail": f"bad key {KEY}"}, ensure_ascii=True)
        .replace("SECRET", "\\u0053ECRET").encode(), headers={"content-type": "application/json"})
    err = await openai_error(sdks[0](OPENAI), False)
    assert KEY not in err.response.text and err.body["message"].endswith("bad key ***")


async def test_embeddings_error_page(sdks, respx_mock):
    page(respx_mock, "https://api.openai.com/v1/embeddings", 502, "text/html", NGINX_502)
    err = await openai_error(sdks[0](OPENAI), False, "embeddings")
    assert isinstance(err, openai.InternalServerError)
    single_line_quote(err.body["message"])


async def test_converting_provider_error_page(sdks, respx_mock):
    """A converting provider (claude) behind a proxy's page: OpenAI's error JSON too."""
    page(respx_mock, CLAUDE_URL, 504, "text/html", b"<title>504 Gateway Time-out</title>")
    err = await openai_error(sdks[0](CLAUDE), False)
    assert isinstance(err, openai.InternalServerError) and err.status_code == 504
    single_line_quote(err.body["message"], "claude", "api.anthropic.com")
    assert "504 Gateway Time-out" in err.body["message"]


# ---- a success answer that is not a JSON object ----------------------------------------


BROKEN = [
    ("application/json", b'{"id": "chatcmpl-1", "choices": [{"index": 0, "message": {'),
    ("application/json", b'[{"id": "chatcmpl-1"}]'),
    ("application/json", b'"ok"'),
    ("application/json", b""),
    ("text/html", b"<html><body>Welcome to nginx!</body></html>"),
    (None, b"OK"),
    # past the tap's skimming size: read by the skimmer, which must refuse it too
    ("application/json", b'{"usage": {}, "pad": "' + b"x" * (300 << 10) + b'", "choices": [}'),
]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("kind, body", BROKEN, ids=[f"b{i}" for i in range(len(BROKEN))])
async def test_success_that_is_not_json_is_502(sdks, respx_mock, kind, body, stream):
    page(respx_mock, OPENAI_URL, 200, kind, body)
    err = await openai_error(sdks[0](OPENAI), stream)
    assert isinstance(err, openai.InternalServerError) and err.status_code == 502
    assert err.code == "bad_upstream_response"
    single_line_quote(err.body["message"])
    # (a stream request answered with a page was a 502 before: "not an event stream")
    assert "HTTP 200" in err.body["message"] or "not an event stream" in err.body["message"]


async def test_embeddings_success_that_is_not_json_is_502(sdks, respx_mock):
    page(respx_mock, "https://api.openai.com/v1/embeddings", 200, "application/json", b"{")
    err = await openai_error(sdks[0](OPENAI), False, "embeddings")
    assert err.status_code == 502 and err.code == "bad_upstream_response"


async def test_good_answers_still_pass(sdks, respx_mock):
    """(The check costs nothing that shows: the answer is parsed once, by the tap.)"""
    respx_mock.post(OPENAI_URL).mock(side_effect=[
        httpx.Response(200, json=OPENAI_ANSWER),
        httpx.Response(200, content=SSE_ANSWER, headers={"content-type": "text/event-stream"})])
    sdk = sdks[0](OPENAI)
    answer = await sdk.chat.completions.create(**CHAT)
    assert answer.choices[0].message.content == "hello"
    stream = await sdk.chat.completions.create(**CHAT, stream=True)
    assert "".join([c.choices[0].delta.content or "" async for c in stream]) == "hello"


# ---- /v1/messages: anthropic SDK, native and converted ---------------------------------


async def anthropic_error(sdk: anthropic.AsyncAnthropic, stream: bool) -> anthropic.APIStatusError:
    with pytest.raises(anthropic.APIStatusError) as info:
        await sdk.messages.create(**MESSAGE, stream=stream)
    return info.value


def anthropic_body(err: anthropic.APIStatusError) -> dict[str, Any]:
    """The whole Anthropic error body the gateway answered."""
    body = json.loads(err.response.text)
    assert body["type"] == "error" and set(body["error"]) == {"type", "message"}
    return body["error"]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("config, url, provider, host", [
    (CLAUDE, CLAUDE_URL, "claude", "api.anthropic.com"),      # native Messages API
    (OPENAI, OPENAI_URL, "openai", "api.openai.com"),         # converted
], ids=["native", "converted"])
async def test_anthropic_clients_get_anthropic_errors(sdks, respx_mock, config, url, provider,
                                                      host, stream):
    page(respx_mock, url, 503, "text/html", NGINX_502.replace(b"502", b"503"))
    err = await anthropic_error(sdks[1](config), stream)
    assert isinstance(err, anthropic.InternalServerError) and err.status_code == 503
    error = anthropic_body(err)
    assert error["type"] == "overloaded_error"
    single_line_quote(error["message"], provider, host)
    assert "503 Bad Gateway" in error["message"]
    respx_mock.post(url).respond(200, content=b'{"id": "msg_1", "content": [',
                                 headers={"content-type": "application/json"})
    err = await anthropic_error(sdks[1](config), stream)
    assert isinstance(err, anthropic.InternalServerError) and err.status_code == 502
    single_line_quote(anthropic_body(err)["message"], provider, host)


async def test_native_anthropic_errors_go_on_byte_for_byte(sdks, respx_mock):
    shaped = (b'{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"},'
              b' "request_id": "req_1"}')
    respx_mock.post(CLAUDE_URL).mock(side_effect=[
        httpx.Response(529, content=shaped, headers={"content-type": "application/json"}),
        httpx.Response(400, json={"error": {"message": "max_tokens too large"}})])
    sdk = sdks[1](CLAUDE)
    err = await anthropic_error(sdk, False)
    assert err.status_code == 529 and err.response.content == shaped
    err = await anthropic_error(sdk, False)  # OpenAI's shape: Anthropic's, message carried
    assert isinstance(err, anthropic.BadRequestError)
    error = anthropic_body(err)
    assert error["type"] == "invalid_request_error"
    assert error["message"].endswith("HTTP 400: max_tokens too large")


# ---- APISIX routes, and protocol original ----------------------------------------------


APISIX = {"routes": [
    {"path": "/a/v1/chat/completions", "provider": "openai", "auth": {"header": {"Authorization": f"Bearer {KEY}"}}},
    {"path": "/msg/v1/messages", "provider": "anthropic",
     "auth": {"header": {"x-api-key": KEY}}},
]}


@pytest.mark.parametrize("stream", [False, True])
async def test_apisix_routes(sdks, respx_mock, stream):
    page(respx_mock, OPENAI_URL, 502, "text/html", NGINX_502)
    err = await openai_error(sdks[0](APISIX, "http://gw/a/v1"), stream)
    assert isinstance(err, openai.InternalServerError) and err.status_code == 502
    single_line_quote(err.body["message"])
    assert "502 Bad Gateway" in err.body["message"]
    page(respx_mock, OPENAI_URL, 200, "application/json", b"{")
    err = await openai_error(sdks[0](APISIX, "http://gw/a/v1"), stream)
    assert err.status_code == 502 and err.code == "bad_upstream_response"
    # native Anthropic Messages on an APISIX route: Anthropic's error shape
    page(respx_mock, CLAUDE_URL, 500, "text/plain", f"upstream failed for {KEY}".encode())
    err = await anthropic_error(sdks[1](APISIX, "http://gw/msg"), stream)
    assert isinstance(err, anthropic.InternalServerError)
    error = anthropic_body(err)
    assert error["message"].endswith("(text/plain): upstream failed for ***")


async def test_protocol_original_relays_the_providers_own_answer(gateway, respx_mock):
    """Unchanged (a guard): under protocol original the page is the provider's API's own."""
    respx_mock.get("https://api.openai.com/v1/models").respond(
        502, content=NGINX_502, headers={"content-type": "text/html"})
    respx_mock.post("https://api.openai.com/v1/responses").respond(
        200, content=b"{", headers={"content-type": "application/json"})
    client = gateway({"routes": [{"path": "/o", "provider": {
        "type": "openai", "apiTokens": [KEY], "protocol": "original"}}]})
    r = await client.get("/o/v1/models")
    assert r.status_code == 502 and r.content == NGINX_502
    assert r.headers["content-type"] == "text/html"
    r = await client.post("/o/v1/responses", json={"model": "m"})
    assert r.status_code == 200 and r.content == b"{"


# ---- user:password@ in a URL setting -----------------------------------------------------


URL_SETTINGS = [
    ("openai", "openaiCustomUrl", "https://user:{pw}@llm.example/v1"),
    ("vllm", "vllmCustomUrl", "http://user:{pw}@10.0.0.5:8000/v1"),
    ("azure", "azureServiceUrl",
     "https://user:{pw}@res.openai.azure.com/openai/deployments/d?api-version=2024-10-21"),
    ("dify", "difyApiUrl", "https://user:{pw}@dify.example"),
    ("qwen", "qwenDomain", "user:{pw}@dashscope.example"),
    ("zhipuai", "zhipuDomain", "user:{pw}@api.z.ai"),
    ("doubao", "doubaoDomain", "user:{pw}@ark.example"),
]
PASSWORD = "url-PASSWORD-987654"


@pytest.mark.parametrize("kind, field, url", URL_SETTINGS, ids=[s[1] for s in URL_SETTINGS])
@pytest.mark.parametrize("routed", [False, True])
def test_url_password_with_api_tokens_is_a_config_error(kind, field, url, routed):
    provider = {"type": kind, "apiTokens": [KEY], field: url.format(pw=PASSWORD)}
    config = ({"routes": [{"path": "/a", "provider": {"type": "mock"}},
                          {"path": "/b", "provider": provider}]} if routed
              else {"provider": provider})
    with pytest.raises(ConfigError) as info:
        load_config(config)
    message = str(info.value)
    where = "routes[1].provider" if routed else "provider"
    assert message.startswith(f"{where}.{field}: ")
    assert "apiTokens" in message and "two credentials" in message
    assert PASSWORD not in message and KEY not in message
    # without apiTokens (a provider that takes none) the URL's user:password is Basic auth
    if kind == "vllm":
        del provider["apiTokens"]
        load_config(config)


@pytest.mark.parametrize("auth", [
    {"header": {"Authorization": f"Bearer {KEY}"}}, {"query": {"key": KEY}}, {}],
    ids=["header", "query", "none"])
@pytest.mark.parametrize("multi", [False, True])
def test_apisix_endpoint_with_password_is_a_config_error(auth, multi):
    endpoint = f"https://user:{PASSWORD}@llm.example/v1/chat/completions"
    if multi:
        route = {"path": "/a", "instances": [{"name": "one", "provider": "openai-compatible",
                                              "weight": 1, "auth": auth,
                                              "override": {"endpoint": endpoint}}]}
        where = "routes[0].instances[0].override.endpoint"
    else:
        route = {"path": "/a", "provider": "openai-compatible", "auth": auth,
                 "override": {"endpoint": endpoint}}
        where = "routes[0].override.endpoint"
    with pytest.raises(ConfigError) as info:
        load_config({"routes": [route]})
    message = str(info.value)
    assert message.startswith(f"{where}: ")
    assert ("two credentials" in message) == bool(auth)
    assert PASSWORD not in message and KEY not in message


async def test_url_password_on_a_real_socket(upstream_path):
    """On both ways upstream calls go (the gateway's own client, an injected httpx client)
    and a 127.0.0.1 upstream: `user:pw@` with apiTokens was a 500 on every call (now refused
    at load); the openai provider with no apiTokens sends the URL's Basic auth, not the
    client's key as well (was a 500)."""
    up = Upstream()
    async with Served(up) as server:
        url = server.url.replace("http://", f"http://user:{PASSWORD}@") + "/v1"
        with pytest.raises(ConfigError):
            upstream_path.middleware({"provider": {
                "type": "openai", "apiTokens": [KEY], "openaiCustomUrl": url}})
        app = upstream_path.middleware({"provider": {"type": "openai", "openaiCustomUrl": url}})
        try:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app)) as http:
                sdk = openai.AsyncOpenAI(base_url="http://gw/v1", api_key="client-key",
                                         http_client=http, max_retries=0)
                answer = await sdk.chat.completions.create(**CHAT)
            upstream_path.check(app)
        finally:
            await app.aclose()
    assert answer.choices[0].message.content == "from local"
    sent = up.requests[-1]["headers"]["authorization"]
    assert sent.startswith("Basic ") and "client-key" not in sent
