"""No configured credential (API token, service-account key, access token, AWS secret,
signature) appears in a log record, an answer (body or headers), a summary, a metric or a
config error, whatever fails: a hostile upstream that echoes the request's auth back,
refused connections, DNS failures, timeouts, invalid answers, a failed token exchange,
unexpected exceptions, invalid config."""

from __future__ import annotations

import json
import logging
import re
import traceback
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from asgi_lifespan import LifespanManager
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from aiproxy_middleware import AIProxyMiddleware
from aiproxy_middleware import load_config
from aiproxy_middleware.errors import ConfigError
from aiproxy_middleware.safety.secrets import expand, scrub, scrub_text, scrubber
from helpers import inner_app
from upstream_server import Served, free_port

OPENAI = "sk-SECRET-openai-1234"
AZURE = "azSECRETazure5678abcdef"
CLAUDE = "sk-ant-SECRET-claude-9012"
GEMINI = "AIzaSECRET-gemini-3456"
VERTEX_EXPRESS = "AQ.SECRET-vertex-express-77"
ACCESS_TOKEN = "ya29.SECRET-vertex-access-token"
AWS_ID = "AKIDSECRETID00000001"
AWS_SECRET = "wJalrSECRET/K7MDENG+bPxRfiCY/AWSKEY"
AWS_SESSION = "FwoGZXIvYXdzSECRET/session+token=="
BEDROCK_API_KEY = "ABSKSECRET-bedrock-api-key"
HUNYUAN_ID = "AKIDSECRETtencent0000000000000001"
HUNYUAN_KEY = "hySECRETtencentkey0123456789abcd"
HUNYUAN_TOKEN = "sk-SECRET-hunyuan-openai"
BAIDU = "bce-v3/ALTAK-SECRET/baidu7890"
SPARK_KEY, SPARK_SECRET = "SECRETsparkkey01", "SECRETsparksecret02"
APISIX_HEADER = "sk-SECRET-apisix-header"
APISIX_QUERY = "SECRET-apisix-query-value"
MULTI_A, MULTI_B = "sk-SECRET-multi-a", "sk-SECRET-multi-b"
APISIX_AWS_SECRET = "apisixSECRET/aws+secret/key"
USERINFO_PASSWORD = "SECRET-userinfo-pass"

PRIVATE = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PEM = PRIVATE.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
PEM_LINES = [line for line in PEM.splitlines() if not line.startswith("-----")]
SERVICE_ACCOUNT = {"type": "service_account", "project_id": "my-proj", "private_key_id": "kid-1",
                   "private_key": PEM, "client_email": "gw@my-proj.iam.gserviceaccount.com",
                   "token_uri": "https://oauth2.googleapis.com/token"}

CONFIGURED = [OPENAI, AZURE, CLAUDE, GEMINI, VERTEX_EXPRESS, ACCESS_TOKEN, AWS_SECRET,
              AWS_SESSION, BEDROCK_API_KEY, HUNYUAN_KEY, HUNYUAN_TOKEN, BAIDU, SPARK_KEY,
              SPARK_SECRET, APISIX_HEADER, APISIX_QUERY, MULTI_A, MULTI_B, APISIX_AWS_SECRET,
              USERINFO_PASSWORD, PEM_LINES[3], PEM_LINES[-1], "PRIVATE KEY"]

CHAT = {"messages": [{"role": "user", "content": "hi"}]}
BEDROCK_MODEL = "anthropic.claude-3-haiku-20240307-v1:0"

# ---- providers, each with the URL it calls ----------------------------------------------

PROVIDERS: dict[str, tuple[dict[str, Any], str]] = {
    "openai": ({"type": "openai", "apiTokens": [OPENAI]}, "gpt-4o"),
    "azure": ({"type": "azure", "apiTokens": [AZURE], "azureServiceUrl":
               "https://res.openai.azure.com/openai/deployments/gpt/chat/completions"
               "?api-version=2024-10-21"}, "gpt-4o"),
    "claude": ({"type": "claude", "apiTokens": [CLAUDE]}, "claude-sonnet-4-5"),
    "gemini": ({"type": "gemini", "apiTokens": [GEMINI]}, "gemini-2.5-flash"),
    "vertex": ({"type": "vertex", "vertexAuthKey": json.dumps(SERVICE_ACCOUNT),
                "vertexRegion": "us-central1", "vertexProjectId": "my-proj"}, "gemini-2.5-flash"),
    "vertex-claude": ({"type": "vertex", "vertexAuthKey": SERVICE_ACCOUNT,
                       "vertexRegion": "us-east5", "vertexProjectId": "my-proj"},
                      "claude-sonnet-4-5@20250929"),
    "vertex-express": ({"type": "vertex", "apiTokens": [VERTEX_EXPRESS]}, "gemini-2.5-flash"),
    "bedrock": ({"type": "bedrock", "awsRegion": "us-west-2", "awsAccessKey": AWS_ID,
                 "awsSecretKey": AWS_SECRET, "awsSessionToken": AWS_SESSION}, BEDROCK_MODEL),
    "bedrock-api-key": ({"type": "bedrock", "awsRegion": "us-west-2",
                         "apiTokens": [BEDROCK_API_KEY]}, BEDROCK_MODEL),
    "hunyuan": ({"type": "hunyuan", "hunyuanAuthId": HUNYUAN_ID, "hunyuanAuthKey": HUNYUAN_KEY},
                "hunyuan-lite"),
    "hunyuan-openai": ({"type": "hunyuan", "apiTokens": [HUNYUAN_TOKEN]}, "hunyuan-lite"),
    "baidu": ({"type": "baidu", "apiTokens": [BAIDU]}, "ernie-4.0"),
    "spark": ({"type": "spark", "apiTokens": [f"{SPARK_KEY}:{SPARK_SECRET}"]}, "generalv3.5"),
}


def apisix_routes() -> list[dict[str, Any]]:
    """APISIX routes with secrets in `auth.header`, `auth.query`, `auth.gcp`, `auth.aws`
    and ai-proxy-multi instances."""
    return [
        {"path": "/apisix", "provider": "openai-compatible",
         "auth": {"header": {"Authorization": f"Bearer {APISIX_HEADER}"},
                  "query": {"key": APISIX_QUERY}},
         "override": {"endpoint": "https://llm.test/v1/chat/completions"},
         "logging": {"summaries": True, "payloads": True}},
        {"path": "/multi", "fallback_strategy": ["http_429", "http_5xx"],
         "logging": {"summaries": True, "payloads": True}, "instances": [
             {"name": "a", "provider": "openai-compatible", "weight": 1, "priority": 10,
              "auth": {"header": {"Authorization": f"Bearer {MULTI_A}"}},
              "override": {"endpoint": "https://a.test/v1/chat/completions"}},
             {"name": "b", "provider": "openai-compatible", "weight": 1, "priority": 0,
              "auth": {"header": {"api-key": MULTI_B}},
              "override": {"endpoint": "https://b.test/v1/chat/completions"}}]},
        {"path": "/multi-no-retry", "fallback_strategy": ["http_429"], "max_retries": 0,
         "instances": [
             {"name": "a", "provider": "openai-compatible", "weight": 1, "priority": 10,
              "auth": {"header": {"Authorization": f"Bearer {MULTI_A}"}},
              "override": {"endpoint": "https://a.test/v1/chat/completions"}},
             {"name": "b", "provider": "openai-compatible", "weight": 1, "priority": 0,
              "auth": {"header": {"api-key": MULTI_B}},
              "override": {"endpoint": "https://b.test/v1/chat/completions"}}]},
        {"path": "/apisix-vertex", "provider": "vertex-ai",
         "provider_conf": {"project_id": "my-proj", "region": "us-central1"},
         "auth": {"gcp": {"service_account_json": json.dumps(SERVICE_ACCOUNT)}}},
        {"path": "/apisix-bedrock", "provider": "bedrock",
         "provider_conf": {"region": "us-west-2"},
         "auth": {"aws": {"access_key_id": AWS_ID, "secret_access_key": APISIX_AWS_SECRET,
                          "session_token": AWS_SESSION}}},
    ]


def full_config() -> dict[str, Any]:
    routes: list[dict[str, Any]] = [
        {"path": f"/{name}", "provider": {**conf, "modelMapping": {"*": model}}}
        for name, (conf, model) in PROVIDERS.items()]
    return {"routes": routes + apisix_routes(), "metrics": {"path": "/metrics"},
            "logging": {"summaries": True, "payloads": True}}


# ---- a hostile upstream ------------------------------------------------------------------


class Hostile:
    """Answers every call with `status` and a body (and headers) quoting the request: its
    URL, every header, and its body. The token endpoint answers a token, unless told to
    fail."""

    def __init__(self) -> None:
        self.status = 401
        self.token_status = 200
        self.seen: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        if request.url.host == "oauth2.googleapis.com":
            if self.token_status != 200:
                return self.echo(request, self.token_status, error_description=True)
            return httpx.Response(200, json={"access_token": ACCESS_TOKEN, "expires_in": 3600,
                                             "token_type": "Bearer"})
        return self.echo(request, self.status)

    @staticmethod
    def echo(request: httpx.Request, status: int, error_description: bool = False
             ) -> httpx.Response:
        quoted = json.dumps({"url": str(request.url), "headers": dict(request.headers),
                             "body": request.content.decode("utf-8", "replace")})
        message = f"denied: you sent {quoted}"
        body: dict[str, Any] = {
            "error": {"message": message, "type": "authentication_error", "code": status,
                      "status": "UNAUTHENTICATED"},
            "type": "error", "message": message, "Response": {
                "Error": {"Code": "AuthFailure", "Message": message}, "RequestId": "r"}}
        if error_description:
            body = {"error": "invalid_grant", "error_description": message}
        headers = {f"x-echo-{name}": value for name, value in request.headers.items()
                   if name not in ("content-length", "content-type")}
        headers["x-echo-url"] = str(request.url)
        return httpx.Response(status, json=body, headers=headers)


# ---- what the gateway said ---------------------------------------------------------------


class Seen:
    """Everything the gateway showed: answers, log records, summaries, error messages."""

    def __init__(self) -> None:
        self.texts: list[tuple[str, str]] = []

    def add(self, where: str, text: Any) -> None:
        self.texts.append((where, text if isinstance(text, str) else json.dumps(text,
                                                                                default=str)))

    def response(self, where: str, r: httpx.Response) -> None:
        self.add(f"{where} body", r.content.decode("utf-8", "replace"))
        self.add(f"{where} headers", "\n".join(f"{k}: {v}" for k, v in r.headers.multi_items()))

    def logs(self, caplog: pytest.LogCaptureFixture) -> None:
        self.add("caplog.text", caplog.text)
        for record in caplog.records:
            where = f"log {record.name}"
            self.add(where, record.getMessage())
            if record.exc_text:
                self.add(where, record.exc_text)
            if record.exc_info and record.exc_info[1] is not None:
                self.add(where, "".join(traceback.format_exception(*record.exc_info)))
            self.add(where, {k: v for k, v in record.__dict__.items()
                             if k not in ("exc_info", "msg", "args")})

    def assert_clean(self, secrets: list[str]) -> None:
        assert self.texts
        for secret in secrets:
            forms = {secret, secret.replace("/", "\\/"), quote(secret, safe=""),
                     quote(secret, safe="/")}
            for where, text in self.texts:
                for form in forms:
                    assert form not in text, f"{secret!r} shown in {where}: {text[:2000]}"


@pytest.fixture
def seen(caplog) -> Seen:
    caplog.set_level(logging.DEBUG)
    return Seen()


def derived(hostile: Hostile) -> list[str]:
    """The credentials the gateway computed: signatures, the access token, the signed JWT
    assertion, as the hostile upstream saw them."""
    found = [ACCESS_TOKEN]
    for request in hostile.seen:
        auth = request.headers.get("authorization", "")
        found += re.findall(r"Signature=([0-9a-f]{64})", auth)
        if request.url.host == "oauth2.googleapis.com":
            form = dict(httpx.QueryParams(request.content.decode()))
            found.append(form["assertion"])
            found.append(form["assertion"].rsplit(".", 1)[1])  # the signature part
    return found


# ---- the tests ---------------------------------------------------------------------------


@pytest.mark.parametrize("status", [401, 403, 429, 500])
@pytest.mark.parametrize("stream", [False, True])
async def test_hostile_upstream_errors_echoing_the_auth(gateway, respx_mock, seen, caplog,
                                                        status, stream):
    hostile = Hostile()
    hostile.status = status
    respx_mock.route().mock(side_effect=hostile)
    summaries: list[Any] = []
    client = gateway(full_config())
    client._transport.app.add_summary_hook(summaries.append)  # type: ignore[attr-defined]
    paths = [f"/{name}/v1/chat/completions" for name in PROVIDERS]
    paths += ["/apisix", "/multi", "/multi-no-retry", "/apisix-vertex", "/apisix-bedrock"]
    for path in paths:
        r = await client.post(path, json={**CHAT, "model": "m", "stream": stream})
        assert r.status_code in (status, 502) if path.startswith("/multi") else \
            r.status_code == status, (path, r.status_code, r.text)
        seen.response(path, r)
    # Every provider sent its credentials, and the upstream quoted them back, masked.
    assert len(hostile.seen) >= len(paths)
    masked = [where for where, text in seen.texts if "***" in text]
    for name in ("/openai", "/gemini", "/vertex", "/bedrock", "/hunyuan", "/apisix"):
        assert f"{name}/v1/chat/completions body" in masked or f"{name} body" in masked, name
    r = await client.get("/metrics")
    assert r.status_code == 200
    seen.response("metrics", r)
    for s in summaries:
        seen.add("summary", s.as_dict())
        assert "authorization" not in json.dumps(s.as_dict()).lower()
    seen.logs(caplog)
    seen.assert_clean(CONFIGURED + derived(hostile))


async def test_answers_with_the_credentials_in_them(gateway, respx_mock, seen, caplog):
    """A whole answer is scrubbed as well as an error: a 200 quoting the request (relayed
    as it is for a passthrough provider) and an in-band error (Hunyuan's and Spark's
    `200` with an error inside, made into the client's error message)."""
    def quoting(request: httpx.Request) -> httpx.Response:
        if request.url.host == "oauth2.googleapis.com":
            return httpx.Response(200, json={"access_token": ACCESS_TOKEN})
        quoted = json.dumps(dict(request.headers))
        return httpx.Response(200, json={
            "id": "c", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": quoted},
                         "finish_reason": "stop"}],
            "Response": {"Error": {"Code": "AuthFailure", "Message": quoted}, "RequestId": "r"},
            "code": 11200, "message": quoted, "sid": "s"},
            headers={"x-echo": request.headers.get("authorization", "none")})
    hostile = Hostile()
    respx_mock.route().mock(side_effect=lambda r: (hostile.seen.append(r), quoting(r))[1])
    client = gateway(full_config())
    for path in ["/openai/v1/chat/completions", "/hunyuan/v1/chat/completions",
                 "/spark/v1/chat/completions", "/baidu/v1/chat/completions", "/apisix"]:
        r = await client.post(path, json={**CHAT, "model": "m"})
        seen.response(path, r)
        assert "***" in r.text, (path, r.text)
    seen.logs(caplog)
    seen.assert_clean(CONFIGURED + derived(hostile))


async def test_the_upstream_did_get_the_credentials(gateway, respx_mock):
    """The counterpart of the test above: the secrets it looks for were really sent (so
    their absence from answers and logs is the scrubbing's doing), and the Gemini key is
    a header, never in a URL."""
    hostile = Hostile()
    respx_mock.route().mock(side_effect=hostile)
    client = gateway(full_config())
    for path in ["/openai", "/gemini", "/vertex", "/vertex-express", "/bedrock", "/hunyuan",
                 "/spark", "/apisix", "/apisix-bedrock"]:
        await client.post(f"{path}/v1/chat/completions" if path != "/apisix"
                          and not path.startswith("/apisix-") else path,
                          json={**CHAT, "model": "m"})
    sent = "\n".join(f"{r.url}\n{dict(r.headers)}" for r in hostile.seen)
    for secret in [OPENAI, GEMINI, VERTEX_EXPRESS, ACCESS_TOKEN, AWS_SESSION, APISIX_HEADER,
                   APISIX_QUERY, f"{SPARK_KEY}:{SPARK_SECRET}"]:
        assert secret in sent, secret
    assert len(derived(hostile)) > 3  # the signatures and the assertion
    gemini = [r for r in hostile.seen if r.url.host == "generativelanguage.googleapis.com"]
    assert gemini and all(GEMINI not in str(r.url) for r in gemini)
    assert gemini[0].headers["x-goog-api-key"] == GEMINI
    express = [r for r in hostile.seen if r.url.host == "aiplatform.googleapis.com"]
    assert express and all(VERTEX_EXPRESS not in str(r.url) for r in express)


async def test_failed_token_exchange(gateway, respx_mock, seen, caplog):
    hostile = Hostile()
    respx_mock.route().mock(side_effect=hostile)
    client = gateway(full_config())
    for status in (400, 401, 500):
        hostile.token_status = status
        for path in ("/vertex/v1/chat/completions", "/apisix-vertex"):
            r = await client.post(path, json={**CHAT, "model": "m"})
            assert r.status_code == 502 and r.json()["error"]["code"] == "auth_failed", r.text
            assert "invalid_grant" in r.json()["error"]["message"]
            seen.response(path, r)
    assert any(r.url.host == "oauth2.googleapis.com" for r in hostile.seen)
    seen.logs(caplog)
    seen.assert_clean(CONFIGURED + derived(hostile))


async def test_token_endpoint_unreachable(gateway, respx_mock, seen, caplog):
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"refused {request.content.decode()}", request=request)
    respx_mock.route(host="oauth2.googleapis.com").mock(side_effect=refuse)
    client = gateway(full_config())
    r = await client.post("/vertex/v1/chat/completions", json={**CHAT, "model": "m"})
    assert r.status_code == 502
    seen.response("vertex", r)
    seen.logs(caplog)
    seen.assert_clean(CONFIGURED)


async def test_invalid_answers(gateway, respx_mock, seen, caplog):
    """Answers that are not what the provider speaks: never quoted (they could hold
    anything)."""
    def garbage(request: httpx.Request) -> httpx.Response:
        if request.url.host == "oauth2.googleapis.com":
            return httpx.Response(200, json={"access_token": ACCESS_TOKEN})
        return httpx.Response(200, content=f"<html>{dict(request.headers)}".encode(),
                              headers={"content-type": "application/json"})
    respx_mock.route().mock(side_effect=garbage)
    client = gateway(full_config())
    for name in ["gemini", "claude", "vertex", "bedrock", "hunyuan", "spark"]:
        r = await client.post(f"/{name}/v1/chat/completions", json={**CHAT, "model": "m"})
        assert r.status_code == 502, (name, r.text)
        seen.response(name, r)
    seen.logs(caplog)
    seen.assert_clean(CONFIGURED)


async def test_unexpected_exception_with_a_secret_in_its_message(gateway, respx_mock, seen,
                                                                 caplog, monkeypatch):
    """The traceback is logged (by design), but a secret in it is masked."""
    from aiproxy_middleware.providers.gemini import Gemini

    def boom(self: Any, call: Any, body: bytes) -> bytes:
        raise RuntimeError(f"boom {GEMINI} {call.token}")
    monkeypatch.setattr(Gemini, "convert_response", boom)
    respx_mock.route().respond(200, json={"candidates": []})
    client = gateway(full_config())
    r = await client.post("/gemini/v1/chat/completions", json={**CHAT, "model": "m"})
    assert r.status_code == 500
    assert r.json()["error"]["message"] == "the gateway failed to handle this request"
    seen.response("gemini", r)
    seen.logs(caplog)
    assert "RuntimeError: boom ***" in caplog.text  # the traceback is still there
    seen.assert_clean(CONFIGURED)


async def test_validation_errors(gateway, respx_mock, seen, caplog):
    respx_mock.route().mock(side_effect=Hostile())
    client = gateway(full_config())
    for path in ["/openai/v1/chat/completions", "/gemini/v1/chat/completions", "/apisix",
                 "/bedrock/v1/embeddings", "/openai/v1/nothing"]:
        for kwargs in ({"content": b"{not json"}, {"json": {"model": "m"}},
                       {"json": {"model": "m", "messages": "x"}},
                       {"content": b"x", "headers": {"content-type": "text/plain"}}):
            r = await client.post(path, **kwargs)
            assert 400 <= r.status_code < 500, (path, kwargs, r.text)
            seen.response(path, r)
    seen.logs(caplog)
    seen.assert_clean(CONFIGURED)


# ---- real sockets: refused, DNS failure, timeout, a hostile local server -----------------


def _echo_app(status: int = 401, delay: float = 0.0):
    async def app(scope: dict, receive: Any, send: Any) -> None:
        import asyncio

        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        if delay:
            await asyncio.sleep(delay)
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        body = json.dumps({"error": {"message": f"bad key: {headers}", "type": "x"}}).encode()
        echo = [(b"x-echo-" + k, v) for k, v in scope["headers"]]
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), *echo]})
        await send({"type": "http.response.body", "body": body})
    return app


@pytest.mark.parametrize("own_client", [False, True])
async def test_real_sockets(seen, caplog, own_client):
    """Refused, unresolvable, too slow, and a hostile server, through the default client
    (aiohttp) and through an injected httpx client (whose own log lines name URLs)."""
    closed = free_port()
    async with Served(_echo_app()) as hostile, Served(_echo_app(200, delay=2)) as slow:
        # (A URL's user and password are the upstream's Basic auth: with no apiTokens.)
        routes = [
            ("/refused", f"http://127.0.0.1:{closed}/v1", 5000, [OPENAI]),
            ("/refused-userinfo", f"http://user:{USERINFO_PASSWORD}@127.0.0.1:{closed}/v1",
             5000, []),
            ("/dns", "http://nowhere.invalid/v1", 5000, [OPENAI]),
            ("/slow", f"{slow.url}/v1", 200, [OPENAI]),
            ("/hostile", f"{hostile.url}/v1", 5000, [OPENAI]),
            ("/hostile-userinfo", f"http://user:{USERINFO_PASSWORD}@127.0.0.1:{hostile.port}/v1",
             5000, []),
        ]
        config = {"routes": [{"path": p, "provider": {
            "type": "openai", "apiTokens": tokens, "openaiCustomUrl": url, "timeout": t}}
            for p, url, t, tokens in routes] + [{
                "path": "/apisix", "provider": "openai-compatible", "timeout": 5000,
                "auth": {"header": {"Authorization": f"Bearer {APISIX_HEADER}"},
                         "query": {"key": APISIX_QUERY}},
                "override": {"endpoint": f"{hostile.url}/v1/chat/completions"}}]}
        injected = httpx.AsyncClient() if own_client else None
        app = AIProxyMiddleware(inner_app(), config=config, http_client=injected)
        async with LifespanManager(app):
            client = httpx.AsyncClient(transport=httpx.ASGITransport(app),
                                       base_url="http://gateway.test")
            expected = {"/refused": 502, "/refused-userinfo": 502, "/dns": 502, "/slow": 504,
                        "/hostile": 401, "/hostile-userinfo": 401, "/apisix": 401}
            for path, status in expected.items():
                for stream in (False, True):
                    url = path if path == "/apisix" else f"{path}/v1/chat/completions"
                    r = await client.post(url, json={**CHAT, "model": "m", "stream": stream})
                    assert r.status_code == status, (path, r.text)
                    seen.response(path, r)
                    if path.startswith("/refused"):
                        assert f"at 127.0.0.1:{closed}:" in r.json()["error"]["message"]
        if injected is not None:
            await injected.aclose()
    seen.logs(caplog)
    if own_client:
        assert "HTTP Request: POST" in caplog.text  # httpx's own line, URL masked
    seen.assert_clean(CONFIGURED)


# ---- config errors -----------------------------------------------------------------------


def config_error(source: Any) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(source)
    return str(info.value)


def test_config_errors_never_quote_secrets(tmp_path, seen, caplog):
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text(f'provider:\n  type: openai\n  apiTokens: ["{OPENAI}"\n  bogus: 1\n')
    bad_yaml2 = tmp_path / "bad2.yaml"
    bad_yaml2.write_text(f"provider:\n  type: openai\n  apiTokens: [{OPENAI}]\n"
                         f"  key: {GEMINI}: x\n")
    tab_yaml = tmp_path / "tab.yaml"
    tab_yaml.write_text(f"provider:\n\ttype: openai\n\tapiTokens: [{OPENAI}]\n")
    sources: list[Any] = [
        bad_yaml, bad_yaml2, tab_yaml,
        {"provider": {"type": "openai", "apiTokens": [OPENAI], "apiToken": OPENAI}},
        {"provider": {"type": "openai", "apiTokens": OPENAI}},
        {"provider": {"type": "openai", "apiTokens": [OPENAI], "timeout": OPENAI}},
        {"provider": {"type": "azure", "apiTokens": [AZURE], "azureServiceUrl":
                      f"ftp://user:{USERINFO_PASSWORD}@res.openai.azure.com/openai"}},
        {"provider": {"type": "azure", "apiTokens": [AZURE, OPENAI], "azureServiceUrl":
                      "https://res.openai.azure.com/openai/deployments/d?api-version=1"}},
        {"provider": {"type": "openai", "apiTokens": [OPENAI],
                      "openaiCustomUrl": f"gopher://u:{USERINFO_PASSWORD}@h/v1"}},
        {"provider": {"type": "ollama", "ollamaServerHost":
                      f"http://u:{USERINFO_PASSWORD}@h/path"}},
        {"provider": {"type": "vertex", "vertexAuthKey": {**SERVICE_ACCOUNT, "private_key":
                                                          PEM.replace("MII", "XXX")},
                      "vertexRegion": "us-central1", "vertexProjectId": "p"}},
        {"provider": {"type": "vertex", "vertexAuthKey": json.dumps(SERVICE_ACCOUNT)[:-5],
                      "vertexRegion": "us-central1", "vertexProjectId": "p"}},
        {"provider": {"type": "vertex", "vertexAuthKey": json.dumps(SERVICE_ACCOUNT),
                      "apiTokens": [VERTEX_EXPRESS]}},
        {"provider": {"type": "bedrock", "awsRegion": "us-west-2", "awsAccessKey": AWS_ID,
                      "awsSecretKey": AWS_SECRET, "awsSesionToken": AWS_SESSION}},
        {"provider": {"type": "bedrock", "awsRegion": "us west", "awsAccessKey": AWS_ID,
                      "awsSecretKey": AWS_SECRET}},
        {"provider": {"type": "hunyuan", "hunyuanAuthKey": HUNYUAN_KEY}},
        {"routes": [{"path": "/a", "provider": "openai", "auth": {
            "header": {"Authorization": f"Bearer {APISIX_HEADER}"},
            "query": {"key": APISIX_QUERY}, "qurey": {"k": APISIX_QUERY}}}]},
        {"routes": [{"path": "/a", "provider": "openai", "auth": {
            "header": {"Authorization": f"Bearer {APISIX_HEADER}", "bad name": "x"}}}]},
        {"routes": [{"path": "/a", "provider": "openai", "auth": {
            "header": {"Authorization": 5, "x-key": APISIX_HEADER}}}]},
        {"routes": [{"path": "/a", "provider": "vertex-ai", "provider_conf": {
            "project_id": "p", "region": "r"}, "auth": {"gcp": {
                "service_account_json": json.dumps(SERVICE_ACCOUNT)[:-3]}}}]},
        {"routes": [{"path": "/a", "provider": "bedrock", "provider_conf": {"region": "x"},
                     "auth": {"aws": {"secret_access_key": APISIX_AWS_SECRET}}}]},
        {"routes": [{"path": "/a", "provider": "openai", "override": {
            "endpoint": f"htp://u:{USERINFO_PASSWORD}@h/v1?key={APISIX_QUERY}"}}]},
        {"routes": [{"path": "/a", "provider": "bedrock", "provider_conf": {"region": "us-west-2"},
                     "auth": {"aws": {"access_key_id": AWS_ID,
                                      "secret_access_key": APISIX_AWS_SECRET}},
                     "override": {"endpoint": f"ftp://u:{USERINFO_PASSWORD}@h/"}}]},
    ]
    for source in sources:
        seen.add(f"config error for {source!r:.60}", config_error(source))
    seen.logs(caplog)
    secrets = [s for s in CONFIGURED if s != "PRIVATE KEY"] + PEM_LINES
    seen.assert_clean(secrets)


# ---- the scrubber itself -----------------------------------------------------------------


def test_scrub():
    body = json.dumps({"error": f"bad key Bearer {OPENAI} / {AWS_SECRET}"}).encode()
    assert scrub(body, [OPENAI, AWS_SECRET]) == b'{"error": "bad key Bearer *** / ***"}'
    escaped = json.dumps({"e": AWS_SECRET}).replace("/", "\\/").encode()
    assert AWS_SECRET.encode() not in escaped
    assert scrub(escaped, [AWS_SECRET]) == b'{"e": "***"}'
    # An auth header value: its credential part too; short values are not secrets.
    assert scrub(f"token {OPENAI}".encode(), [f"Bearer {OPENAI}"]) == b"token ***"
    assert scrub(b"a key of 5", ["key", "", "a"]) == b"a key of 5"
    sig = "a" * 64
    auth = f"AWS4-HMAC-SHA256 Credential=AKID/x, SignedHeaders=host, Signature={sig}"
    assert sig in expand([auth])
    assert scrub_text(f"sig {sig}!", [auth]) == "sig ***!"
    assert scrub(b"", [OPENAI]) == b""


@pytest.mark.parametrize("secrets", [
    [OPENAI],                                    # a capital in it: searched for only where it is
    ["0123456789abcdef0123456789abcdef"],        # a hex key: no rare byte, searched as it is
    [OPENAI, AZURE, "0123456789abcdef0123456789abcdef", "fedcba9876543210fedcba9876543210"],
    [AWS_SECRET, BAIDU, MULTI_A, MULTI_B],       # slashes (their JSON spelling too), shared prefixes
])
def test_a_scrubber_finds_each_secret_wherever_it_is(secrets):
    """A scrubber looks for each needle's rarest byte before the needle: every secret is
    still found at the start, the end and the middle of a long body, alone, beside the
    others, in its `Bearer` and JSON spellings; a body with the rare bytes but no secret,
    or none of them, comes back as it was (the same object)."""
    s = scrubber(secrets)
    filler = b'data: {"object":"chat.completion.chunk","delta":{"content":"an index"}}\n\n' * 300
    for secret in secrets:
        for form in (secret, f"Bearer {secret}", json.dumps(secret)[1:-1].replace("/", "\\/")):
            needle = form.encode()
            for body in (needle + filler, filler + needle, filler + needle + filler,
                         b"".join(x.encode() for x in secrets) + needle):
                out = s.body(body)
                assert all(x.encode() not in out for x in secrets), (secret, form)
                assert b"***" in out
    untouched = filler + b"QZJX " + " ".join(x[:-1] for x in secrets).encode()  # near misses
    assert s.body(untouched) is untouched
    assert s.body(filler) is filler
