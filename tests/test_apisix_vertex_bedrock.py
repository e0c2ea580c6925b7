"""APISIX's `vertex-ai` and `bedrock` providers, driven as the core drives them: built by
its APISIX profile, then each Call relayed through the provider's `request` and `client`."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from aiproxy_middleware.config.apisix.schema import (ApisixTarget, Auth, AwsAuth, GcpAuth, LlmOptions,
                                              Override, ProviderConf)
from aiproxy_middleware.errors import ConfigError, ProxyError
from aiproxy_middleware.wire.openai import ChatCompletionRequest, EmbeddingsRequest
from aiproxy_middleware.wire.json_body import JsonBody
from aiproxy_middleware.provider import Call, Endpoint, Provider
from aiproxy_middleware.pipeline.relay import Relay
from helpers import OPENAI_ANSWER, SSE_ANSWER, aws_event, chat, chunks, sent_json
from aiproxy_middleware.config.apisix.profiles import (PROFILES, apisix_provider_class,
                                                     build_provider)
from aiproxy_middleware.providers import _gcp, get_provider
from aiproxy_middleware.providers.bedrock import Bedrock
from aiproxy_middleware.providers.bedrock_apisix import BedrockApisix, deep_merge
from aiproxy_middleware.providers.vertex_openai import VertexOpenAI, apisix_ttl
from test_bedrock import botocore_sign
from test_vertex import TOKEN_FAILURES

WHERE = "routes[0].instances[1]"


def target(provider: str, *, auth: Auth | None = None, conf: ProviderConf | None = None,
           endpoint: str | None = None, override: Override | None = None) -> ApisixTarget:
    if endpoint is not None:
        override = Override(endpoint=endpoint, **({} if override is None else {
            f: getattr(override, f) for f in override.__struct_fields__ if f != "endpoint"}))
    return ApisixTarget(provider, auth or Auth(), conf, endpoint, override, 30000, WHERE)


def make_call(body: dict[str, Any], endpoint: Endpoint = Endpoint.CHAT) -> Call:
    """A Call as the core builds one: the body already shaped, no token."""
    data = json.dumps(body).encode()
    json_body = JsonBody.decode(data)
    request = json_body.typed(ChatCompletionRequest if endpoint is Endpoint.CHAT
                              else EmbeddingsRequest)
    stream = bool(getattr(request, "stream", False))
    return Call(endpoint, json_body, request, body.get("model", ""), body.get("model", ""), "",
                stream, endpoint.value, "", [], stream)


async def relay(provider: Provider, call: Call, shared: httpx.AsyncClient) -> tuple[int, bytes]:
    """The status and body the client gets."""
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        await asyncio.Event().wait()
        return {}

    r = Relay(provider, send)
    try:
        await r.run(call, shared, receive)
    except ProxyError as exc:
        await r.fail(exc)
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    return status, b"".join(m.get("body", b"") for m in sent
                            if m["type"] == "http.response.body")


# ======== vertex-ai ======================================================================

PRIVATE = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PEM = PRIVATE.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
KEY = {"type": "service_account", "project_id": "my-proj", "private_key": PEM,
       "client_email": "gw@my-proj.iam.gserviceaccount.com"}  # no token_uri: the default
SECRET_BITS = [PEM.splitlines()[5], "PRIVATE KEY", "ya29."]
TOKEN_URI = "https://oauth2.googleapis.com/token"
CONF = ProviderConf(project_id="my-proj", region="us-central1")
HOST = "https://us-central1-aiplatform.googleapis.com"
CHAT_URL = (f"{HOST}/v1beta1/projects/my-proj/locations/us-central1/endpoints/openapi/"
            "chat/completions")
PREDICT_URL = (f"{HOST}/v1/projects/my-proj/locations/us-central1/publishers/google/models/"
               "text-embedding-005:predict")
CHAT = chat("google/gemini-2.5-flash", temperature=0.3, max_completion_tokens=7)
EMBED = {"model": "text-embedding-005", "input": ["a b", "c d e"]}
PREDICTIONS = {"predictions": [
    {"embeddings": {"values": [0.0123, -1.0], "statistics": {"token_count": 3,
                                                             "truncated": False}}},
    {"embeddings": {"values": [0.5, 2.0], "statistics": {"token_count": 4}}}]}
ANSWER_BYTES = json.dumps(OPENAI_ANSWER).encode()


def token(access: str = "ya29.first", expires_in: int | None = 3599) -> httpx.Response:
    body: dict[str, Any] = {"access_token": access, "token_type": "Bearer"}
    if expires_in is not None:
        body["expires_in"] = expires_in
    return httpx.Response(200, json=body)


def vertex(gcp: GcpAuth | None = None, conf: ProviderConf | None = CONF,
           **kwargs: Any) -> Provider:
    assert apisix_provider_class("vertex-ai") is VertexOpenAI
    gcp = GcpAuth(service_account_json=json.dumps(KEY)) if gcp is None else gcp
    return build_provider(target("vertex-ai", auth=Auth(gcp=gcp), conf=conf, **kwargs))


def b64decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def verified_claims(request: httpx.Request) -> dict[str, Any]:
    """The token request's JWT claims, after checking its form, header and signature."""
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    form = parse_qs(request.content.decode())
    assert set(form) == {"grant_type", "assertion"}
    assert form["grant_type"] == ["urn:ietf:params:oauth:grant-type:jwt-bearer"]
    header, claims, signature = form["assertion"][0].split(".")
    PRIVATE.public_key().verify(b64decode(signature), f"{header}.{claims}".encode(),
                                padding.PKCS1v15(), hashes.SHA256())  # raises if invalid
    assert json.loads(b64decode(header)) == {"alg": "RS256", "typ": "JWT"}
    return json.loads(b64decode(claims))


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(_gcp, "_now", c)
    return c


async def test_chat_goes_to_the_openapi_endpoint_with_a_verified_token(respx_mock, upstream,
                                                                       clock):
    tokens = respx_mock.post(TOKEN_URI).mock(side_effect=[token()])
    chat = respx_mock.post(CHAT_URL).respond(
        content=ANSWER_BYTES, headers={"content-type": "application/json"})
    call = make_call(CHAT)
    status, body = await relay(vertex(), call, upstream)
    assert status == 200 and body == ANSWER_BYTES  # the answer as it came
    claims = verified_claims(tokens.calls.last.request)
    assert claims == {"iss": KEY["client_email"], "aud": TOKEN_URI,
                      "scope": "https://www.googleapis.com/auth/cloud-platform",
                      "iat": int(clock.now), "exp": int(clock.now) + 3600}
    assert claims["exp"] - claims["iat"] == 3600
    sent = chat.calls.last.request
    assert str(sent.url) == CHAT_URL
    assert sent.headers["authorization"] == "Bearer ya29.first"
    assert sent.content == json.dumps(CHAT).encode()  # the body as the core shaped it


async def test_stream_passes_through(respx_mock, upstream, clock):
    respx_mock.post(TOKEN_URI).mock(side_effect=[token()])
    chat = respx_mock.post(CHAT_URL).respond(
        content=SSE_ANSWER, headers={"content-type": "text/event-stream"})
    status, body = await relay(vertex(), make_call(dict(CHAT, stream=True)), upstream)
    assert status == 200 and body == SSE_ANSWER
    assert sent_json(chat)["stream"] is True


def test_global_region_uses_the_global_host():
    up = vertex(conf=ProviderConf(project_id="my-proj", region="global")).request(
        make_call(CHAT))
    assert up.url == ("https://aiplatform.googleapis.com/v1beta1/projects/my-proj/locations/"
                      "global/endpoints/openapi/chat/completions")


async def test_embeddings_are_converted_to_predict_and_back(respx_mock, upstream, clock):
    respx_mock.post(TOKEN_URI).mock(side_effect=[token()])
    route = respx_mock.post(PREDICT_URL).respond(json=PREDICTIONS)
    status, body = await relay(vertex(), make_call(EMBED, Endpoint.EMBEDDINGS), upstream)
    assert status == 200, body
    assert sent_json(route) == {"instances": [{"content": "a b"}, {"content": "c d e"}]}
    assert route.calls.last.request.headers["authorization"] == "Bearer ya29.first"
    answer = json.loads(body)
    assert answer["object"] == "list" and answer["model"] == "text-embedding-005"
    assert [(d["object"], d["index"], d["embedding"]) for d in answer["data"]] == [
        ("embedding", 0, [0.0123, -1.0]), ("embedding", 1, [0.5, 2.0])]
    assert answer["usage"] == {"prompt_tokens": 7, "total_tokens": 7}


async def test_token_ttl_like_apisix_5_then_10_with_max_ttl_8(respx_mock, upstream, clock):
    tokens = respx_mock.post(TOKEN_URI).mock(side_effect=[
        token("ya29.one", 5), token("ya29.two", 10), token("ya29.three", 10)])
    chat = respx_mock.post(CHAT_URL).respond(json=OPENAI_ANSWER)
    provider = vertex(GcpAuth(service_account_json=json.dumps(KEY), max_ttl=8))
    start = clock.now
    seen = []
    for offset in (0, 4.9, 5, 12.9, 13):  # ttl 5 (not above 60, under 8), then 10 -> 8
        clock.now = start + offset
        assert (await relay(provider, make_call(CHAT), upstream))[0] == 200
        seen.append(chat.calls.last.request.headers["authorization"])
    assert seen == ["Bearer ya29.one"] * 2 + ["Bearer ya29.two"] * 2 + ["Bearer ya29.three"]
    assert tokens.call_count == 3


@pytest.mark.parametrize("expires_in, early, max_ttl, ttl", [
    (3600, 60, None, 3540), (30, 60, None, 30), (60, 60, None, 60), (61, 60, None, 1),
    (3600, 0, None, 3600), (3600, 60, 100, 100), (5, 60, 8, 5), (10, 60, 8, 8)])
def test_apisix_ttl(expires_in, early, max_ttl, ttl):
    assert apisix_ttl(early, max_ttl)(expires_in) == ttl


async def test_token_without_expires_in_lives_3600_less_expire_early(respx_mock, upstream,
                                                                      clock):
    tokens = respx_mock.post(TOKEN_URI).mock(side_effect=[token("ya29.a", None),
                                                          token("ya29.b", None)])
    respx_mock.post(CHAT_URL).respond(json=OPENAI_ANSWER)
    provider = vertex(GcpAuth(service_account_json=json.dumps(KEY), expire_early_secs=100))
    start = clock.now
    for offset, exchanges in ((0, 1), (3499, 1), (3500, 2)):
        clock.now = start + offset
        assert (await relay(provider, make_call(CHAT), upstream))[0] == 200
        assert tokens.call_count == exchanges


async def test_concurrent_requests_share_one_exchange(respx_mock, upstream, clock):
    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.05)
        return token()

    tokens = respx_mock.post(TOKEN_URI).mock(side_effect=slow)
    chat = respx_mock.post(CHAT_URL).respond(json=OPENAI_ANSWER)
    provider = vertex()
    results = await asyncio.gather(*(relay(provider, make_call(CHAT), upstream)
                                     for _ in range(8)))
    assert [status for status, _ in results] == [200] * 8
    assert tokens.call_count == 1 and chat.call_count == 8


@pytest.mark.parametrize("answer", TOKEN_FAILURES)
@pytest.mark.parametrize("stream", [False, True])
async def test_failed_exchange_is_a_502_naming_no_secret(respx_mock, upstream, clock, caplog,
                                                         answer, stream):
    caplog.set_level(logging.DEBUG)
    respx_mock.post(TOKEN_URI).mock(side_effect=[answer])
    chat = respx_mock.post(CHAT_URL).respond(json=OPENAI_ANSWER)
    status, body = await relay(vertex(), make_call(dict(CHAT, stream=stream)), upstream)
    assert status == 502
    error = json.loads(body)["error"]
    assert error["type"] == "upstream_error" and error["code"] == "auth_failed"
    assert error["message"].startswith("could not get a Vertex AI access token: ")
    assert chat.call_count == 0
    for bit in SECRET_BITS + ["assertion"]:
        assert bit not in body.decode() and bit not in caplog.text


async def test_service_account_from_the_environment(respx_mock, upstream, clock, monkeypatch):
    other = {**KEY, "client_email": "env@my-proj.iam.gserviceaccount.com"}
    monkeypatch.setenv("GCP_SERVICE_ACCOUNT", json.dumps(other))
    tokens = respx_mock.post(TOKEN_URI).mock(side_effect=[token()])
    respx_mock.post(CHAT_URL).respond(json=OPENAI_ANSWER)
    assert (await relay(vertex(GcpAuth()), make_call(CHAT), upstream))[0] == 200
    assert verified_claims(tokens.calls.last.request)["iss"] == other["client_email"]


async def test_key_scope_and_token_uri_are_used(respx_mock, upstream, clock):
    key = {**KEY, "token_uri": "https://tokens.test/oauth", "private_key_id": "kid-9",
           "scope": ["https://www.googleapis.com/auth/cloud-platform",
                     "https://www.googleapis.com/auth/userinfo.email"]}
    tokens = respx_mock.post("https://tokens.test/oauth").mock(side_effect=[token()])
    respx_mock.post(CHAT_URL).respond(json=OPENAI_ANSWER)
    provider = vertex(GcpAuth(service_account_json=json.dumps(key)))
    assert (await relay(provider, make_call(CHAT), upstream))[0] == 200
    form = parse_qs(tokens.calls.last.request.content.decode())
    header, claims, _ = form["assertion"][0].split(".")
    assert json.loads(b64decode(header))["kid"] == "kid-9"
    claims = json.loads(b64decode(claims))
    assert claims["aud"] == "https://tokens.test/oauth"
    assert claims["scope"] == " ".join(key["scope"])


async def test_without_gcp_auth_no_token_is_fetched(respx_mock, upstream):
    provider = build_provider(target("vertex-ai", conf=CONF))
    assert provider.client(upstream) is upstream
    chat = respx_mock.post(CHAT_URL).respond(json=OPENAI_ANSWER)
    assert (await relay(provider, make_call(CHAT), upstream))[0] == 200
    assert "authorization" not in chat.calls.last.request.headers


async def test_override_endpoint_alone_serves_both_apis(respx_mock, upstream, clock):
    endpoint = "http://127.0.0.1:1980/v1/custom"
    provider = vertex(conf=None, endpoint=endpoint + "?x=1")
    assert provider.request(make_call(CHAT)).url == endpoint  # the core adds the query
    respx_mock.post(TOKEN_URI).mock(side_effect=[token()])
    route = respx_mock.post(endpoint).respond(json=PREDICTIONS)
    status, body = await relay(provider, make_call(EMBED, Endpoint.EMBEDDINGS), upstream)
    assert status == 200 and json.loads(body)["usage"]["total_tokens"] == 7
    assert sent_json(route) == {"instances": [{"content": "a b"}, {"content": "c d e"}]}
    # With provider_conf too, the default URLs are given and the core rewrites them.
    both = vertex(endpoint="http://127.0.0.1:1980")
    assert both.request(make_call(CHAT)).url == CHAT_URL


async def test_google_errors_become_openai_errors(respx_mock, upstream):
    provider = build_provider(target("vertex-ai", conf=CONF))
    respx_mock.post(CHAT_URL).mock(side_effect=[
        httpx.Response(404, json=[{"error": {"code": 404, "message": "Model not found",
                                             "status": "NOT_FOUND"}}]),
        httpx.Response(400, json={"error": {"message": "bad", "type": "invalid_request_error",
                                            "code": None}})])
    status, body = await relay(provider, make_call(CHAT), upstream)
    assert status == 404 and json.loads(body)["error"] == {
        "message": "Model not found", "type": "not_found_error", "code": "NOT_FOUND",
        "param": None}
    status, body = await relay(provider, make_call(CHAT), upstream)
    assert status == 400 and json.loads(body)["error"]["message"] == "bad"


def test_vertex_class_attributes():
    assert PROFILES["vertex-ai"].max_tokens == "max_completion_tokens"
    assert not PROFILES["vertex-ai"].drops_model and not PROFILES["vertex-ai"].signs
    assert get_provider("vertex-ai") is None  # an APISIX name only
    assert vertex().name == "vertex-ai"


REQUIRES = f"{WHERE}: vertex-ai requires either provider_conf (project_id + region) or" \
           " override.endpoint"
INVALID = f"{WHERE}.auth.gcp.service_account_json: invalid gcp service_account_json: "


@pytest.mark.parametrize("kwargs, starts, says", [
    ({"conf": None}, REQUIRES, ""),
    ({"conf": ProviderConf(project_id="my-proj")}, REQUIRES, ""),
    ({"conf": ProviderConf(region="us-central1")}, REQUIRES, ""),
    ({"gcp": GcpAuth(service_account_json="{not json")}, INVALID, "not valid JSON"),
    ({"gcp": GcpAuth(service_account_json="[1]")}, INVALID, "JSON object"),
    ({"gcp": GcpAuth(service_account_json=json.dumps(
        {k: v for k, v in KEY.items() if k != "client_email"}))}, INVALID, "client_email"),
    ({"gcp": GcpAuth(service_account_json=json.dumps(
        {k: v for k, v in KEY.items() if k != "private_key"}))}, INVALID, "private_key"),
    ({"gcp": GcpAuth(service_account_json=json.dumps({**KEY, "private_key": PEM[:300]}))},
     INVALID, "private_key"),
    ({"gcp": GcpAuth(service_account_json=json.dumps({**KEY, "token_uri": "file:///x"}))},
     INVALID, "token_uri"),
    ({"gcp": GcpAuth()}, f"{WHERE}.auth.gcp.service_account_json: ", "GCP_SERVICE_ACCOUNT"),
    ({"conf": ProviderConf(project_id="my-proj", region="us/../x")},
     f"{WHERE}.provider_conf.region: ", "not a region"),
    ({"conf": ProviderConf(project_id="p/x?y", region="us-central1")},
     f"{WHERE}.provider_conf.project_id: ", "not a project id"),
    ({"conf": None, "endpoint": "ftp://x/y"}, f"{WHERE}.override.endpoint: ", "http(s)"),
    ({"conf": None, "endpoint": "https://x.test"}, f"{WHERE}.override.endpoint: ", "path"),
])
def test_vertex_config_errors(monkeypatch, kwargs, starts, says):
    monkeypatch.delenv("GCP_SERVICE_ACCOUNT", raising=False)
    with pytest.raises(ConfigError) as info:
        vertex(**kwargs)
    message = str(info.value)
    assert message.startswith(starts) and says in message
    if starts == REQUIRES:
        assert message == REQUIRES
    assert all(bit not in message for bit in SECRET_BITS)


def test_invalid_key_in_the_environment_says_where_it_came_from(monkeypatch):
    monkeypatch.setenv("GCP_SERVICE_ACCOUNT", "{nope")
    with pytest.raises(ConfigError, match=r"^routes\[0\]\.instances\[1\]\.auth\.gcp\."
                       r"service_account_json: invalid gcp service_account_json \(from the"
                       r" GCP_SERVICE_ACCOUNT environment variable\): not valid JSON"):
        vertex(GcpAuth())


# ======== bedrock ========================================================================

AWS = AwsAuth(access_key_id="AKIDEXAMPLE",
              secret_access_key="wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
BEDROCK_HOST = "https://bedrock-runtime.us-west-2.amazonaws.com"
MODEL = "anthropic.claude-sonnet-4-5-20250929-v1:0"
ARN = ("arn:aws:bedrock:us-west-2:123456789012:inference-profile/"
       "us.anthropic.claude-sonnet-4-5-20250929-v1:0")
ARN_PATH = ("arn%3Aaws%3Abedrock%3Aus-west-2%3A123456789012%3Ainference-profile%2F"
            "us.anthropic.claude-sonnet-4-5-20250929-v1%3A0")
BEDROCK_CHAT = {"model": MODEL, "max_tokens": 100, "messages": [
    {"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]}
CONVERSE = {"messages": [{"role": "user", "content": [{"text": "hi"}]}],
            "system": [{"text": "Be brief."}], "inferenceConfig": {"maxTokens": 100}}
CONVERSE_ANSWER = {"output": {"message": {"role": "assistant", "content": [{"text": "Hello"}]}},
                   "stopReason": "end_turn",
                   "usage": {"inputTokens": 3, "outputTokens": 1, "totalTokens": 4}}


def bedrock(aws: AwsAuth | None = AWS, conf: ProviderConf | None = ProviderConf(
        region="us-west-2"), auth: Auth | None = None, **kwargs: Any) -> Provider:
    assert apisix_provider_class("bedrock") is BedrockApisix
    return build_provider(target("bedrock", auth=auth or Auth(aws=aws), conf=conf, **kwargs))


def assert_signed(request: httpx.Request, token: str | None = None) -> None:
    """The request's signature is the one botocore's SigV4Auth makes for it, at its time."""
    theirs = botocore_sign(str(request.url), request.content, request.headers["x-amz-date"],
                           token, {"Content-Type": request.headers["content-type"]},
                           (AWS.access_key_id, AWS.secret_access_key))
    assert request.headers["authorization"] == theirs.headers["Authorization"]
    assert request.headers.get("x-amz-security-token") == token


@pytest.mark.parametrize("session_token", [None, "FQoGZXIvYXdzEBYaDSESSION/TOKEN+=="])
async def test_converse_is_signed_with_an_arn_model_as_one_segment(respx_mock, upstream,
                                                                   session_token):
    route = respx_mock.post(f"{BEDROCK_HOST}/model/{ARN_PATH}/converse").respond(
        json=CONVERSE_ANSWER)
    aws = AwsAuth(AWS.access_key_id, AWS.secret_access_key, session_token)
    status, body = await relay(bedrock(aws), make_call(dict(BEDROCK_CHAT, model=ARN)), upstream)
    assert status == 200, body
    sent = route.calls.last.request
    assert sent.url.raw_path.decode() == f"/model/{ARN_PATH}/converse"
    assert sent_json(route) == CONVERSE  # and no model: the URL names it
    assert_signed(sent, session_token)
    answer = json.loads(body)
    assert answer["object"] == "chat.completion" and answer["model"] == ARN
    assert answer["choices"][0]["message"]["content"] == "Hello"
    assert answer["usage"]["total_tokens"] == 4


async def test_stream_goes_to_converse_stream_and_is_converted(respx_mock, upstream):
    stream = b"".join([
        aws_event("messageStart", {"role": "assistant"}),
        aws_event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Hé"}}),
        aws_event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "llo"}}),
        aws_event("contentBlockStop", {"contentBlockIndex": 0}),
        aws_event("messageStop", {"stopReason": "end_turn"}),
        aws_event("metadata", {"usage": {"inputTokens": 3, "outputTokens": 2, "totalTokens": 5}})])
    route = respx_mock.post(f"{BEDROCK_HOST}/model/{MODEL.replace(':', '%3A')}/"
                            "converse-stream").respond(
        content=stream, headers={"content-type": "application/vnd.amazon.eventstream"})
    status, body = await relay(bedrock(), make_call(dict(BEDROCK_CHAT, stream=True)), upstream)
    assert status == 200
    sent = route.calls.last.request
    assert sent.headers["accept"] == "application/vnd.amazon.eventstream"
    assert "stream" not in sent_json(route)
    assert_signed(sent)
    got = chunks(body)
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in got
                   if c["choices"]) == "Héllo"
    assert got[-1]["usage"]["total_tokens"] == 5


@pytest.mark.parametrize("endpoint, url", [
    ("http://localhost:4566", f"http://localhost:4566/model/{ARN_PATH}/converse"),
    ("https://bedrock.internal.test:443/", f"https://bedrock.internal.test/model/{ARN_PATH}"
                                           "/converse"),
    (f"https://gw.test:8443/custom/{ARN_PATH}/converse?tag=a%20b",
     f"https://gw.test:8443/custom/{ARN_PATH}/converse?tag=a%20b"),
])
async def test_override_endpoint_is_applied_before_signing(respx_mock, upstream, endpoint, url):
    route = respx_mock.post(url).respond(json=CONVERSE_ANSWER)
    provider = bedrock(endpoint=endpoint)
    status, _ = await relay(provider, make_call(dict(BEDROCK_CHAT, model=ARN)), upstream)
    assert status == 200
    sent = route.calls.last.request
    assert str(sent.url) == url
    assert_signed(sent)  # botocore signs over the URL's own host (and port)
    canonical = SigV4Auth(None, "bedrock", "us-west-2").headers_to_sign(AWSRequest(
        "POST", url, headers={"Content-Type": "application/json"}))
    assert canonical["host"] == httpx.URL(url).netloc.decode()
    assert provider.base_url() == url.split("/custom")[0].split("/model")[0]


async def test_auth_query_and_headers_are_sent_and_the_query_signed(respx_mock, upstream):
    auth = Auth(aws=AWS, query={"x-gw": "k 1/2", "tag": "auth"},
                header={"X-Tenant": "t1", "authorization": "Bearer nope", "Host": "evil.test"})
    route = respx_mock.post(url__startswith=BEDROCK_HOST).respond(json=CONVERSE_ANSWER)
    provider = bedrock(auth=auth, endpoint=f"{BEDROCK_HOST}/?tag=endpoint&b=1")
    assert (await relay(provider, make_call(BEDROCK_CHAT), upstream))[0] == 200
    sent = route.calls.last.request
    assert sent.url.query.decode() == "b=1&x-gw=k%201%2F2&tag=auth"
    assert sent.headers["x-tenant"] == "t1" and sent.headers["host"] == (
        "bedrock-runtime.us-west-2.amazonaws.com")
    [authorization] = sent.headers.get_list("authorization")
    assert authorization.startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
    assert_signed(sent)


@pytest.mark.parametrize("force, expected", [
    (False, dict(CONVERSE, inferenceConfig={"maxTokens": 100, "topP": 0.5},
                 additionalModelRequestFields={"top_k": 5})),
    (True, dict(CONVERSE, inferenceConfig={"maxTokens": 999, "topP": 0.5},
                additionalModelRequestFields={"top_k": 5}, system=[{"text": "Override."}])),
])
async def test_request_body_override_is_deep_merged(respx_mock, upstream, force, expected):
    extra = {"inferenceConfig": {"maxTokens": 999, "topP": 0.5},
             "additionalModelRequestFields": {"top_k": 5}, "system": [{"text": "Override."}]}
    override = Override(request_body={"bedrock-converse": extra,
                                      "openai-chat": {"temperature": 1}},
                        request_body_force_override=force)
    route = respx_mock.post(url__startswith=BEDROCK_HOST).respond(json=CONVERSE_ANSWER)
    provider = bedrock(override=override)
    for _ in range(2):  # the config's override is never changed by a request
        assert (await relay(provider, make_call(BEDROCK_CHAT), upstream))[0] == 200
        assert sent_json(route) == expected
        assert_signed(route.calls.last.request)
    assert extra["inferenceConfig"] == {"maxTokens": 999, "topP": 0.5}


@pytest.mark.parametrize("force, max_tokens", [(False, 50), (True, 999)])
async def test_llm_options_max_tokens_then_request_body(respx_mock, upstream, force, max_tokens):
    override = Override(llm_options=LlmOptions(max_tokens=50), request_body_force_override=force,
                        request_body={"bedrock-converse": {"inferenceConfig": {"maxTokens": 999}}})
    route = respx_mock.post(url__startswith=BEDROCK_HOST).respond(json=CONVERSE_ANSWER)
    call = make_call(dict(BEDROCK_CHAT, max_completion_tokens=300))
    assert (await relay(bedrock(override=override), call, upstream))[0] == 200
    assert sent_json(route)["inferenceConfig"] == {"maxTokens": max_tokens}


def test_deep_merge():
    body = {"a": {"b": 1, "c": [1, 2]}, "d": "x", "e": {"f": 1}}
    extra = {"a": {"b": 2, "c": [3], "g": {"h": 1}}, "d": {"y": 1}, "e": "scalar", "i": [1]}
    kept = json.loads(json.dumps(body))
    deep_merge(kept, extra, force=False)
    assert kept == {"a": {"b": 1, "c": [1, 2], "g": {"h": 1}}, "d": "x", "e": {"f": 1},
                    "i": [1]}
    forced = json.loads(json.dumps(body))
    deep_merge(forced, extra, force=True)
    assert forced == {"a": {"b": 2, "c": [3], "g": {"h": 1}}, "d": {"y": 1}, "e": "scalar",
                      "i": [1]}
    forced["a"]["g"]["h"] = 9
    assert extra["a"]["g"] == {"h": 1}  # copied, not shared


async def test_titan_embeddings_are_signed(respx_mock, upstream):
    model = "amazon.titan-embed-text-v2:0"
    route = respx_mock.post(f"{BEDROCK_HOST}/model/amazon.titan-embed-text-v2%3A0/invoke"
                            ).respond(json={"embedding": [0.5], "inputTextTokenCount": 2})
    call = make_call({"model": model, "input": "hello"}, Endpoint.EMBEDDINGS)
    status, body = await relay(bedrock(), call, upstream)
    assert status == 200 and json.loads(body)["data"][0]["embedding"] == [0.5]
    assert sent_json(route) == {"inputText": "hello"}
    assert_signed(route.calls.last.request)


def test_bedrock_class_attributes():
    assert PROFILES["bedrock"].signs and not PROFILES["bedrock"].drops_model
    assert PROFILES["bedrock"].max_tokens == "max_tokens"
    assert get_provider("bedrock") is Bedrock  # the config type keeps its own class
    assert bedrock().name == "bedrock"


@pytest.mark.parametrize("kwargs, message", [
    ({"conf": None}, f"{WHERE}: bedrock requires provider_conf.region"),
    ({"conf": ProviderConf(project_id="p")}, f"{WHERE}: bedrock requires provider_conf.region"),
    ({"aws": None}, f"{WHERE}: bedrock requires auth.aws"),
    ({"conf": ProviderConf(region="us-west-2.evil.test/")},
     f"{WHERE}.provider_conf.region: not a region name: 'us-west-2.evil.test/'"),
    ({"endpoint": "bedrock.test"}, f"{WHERE}.override.endpoint: not an http(s) URL:"
                                   " 'bedrock.test'"),
])
def test_bedrock_config_errors(kwargs, message):
    with pytest.raises(ConfigError) as info:
        bedrock(**kwargs)
    assert str(info.value) == message
