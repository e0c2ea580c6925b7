"""HTTPS to an upstream on 127.0.0.1 with a throwaway CA, on both ways the middleware's
upstream calls go (upstream_paths.py: its own client type, `GatewayClient`, and an injected
httpx client with httpx's own pool).

- A client that trusts the CA gets the chat answer and the event stream intact.
- A client that does not (the system's CAs), or a certificate issued for another name, is
  a 502 in OpenAI's error format naming the provider, without the token, and nothing is
  logged with a traceback; the upstream never sees the request.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import logging
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from aiproxy_middleware import AIProxyMiddleware
from aiproxy_middleware.runtime.transport import GatewayClient, default_client
from helpers import chat, inner_app
from upstream_paths import PATHS
from upstream_server import (RawServer, assert_no_secret_or_traceback, chunk, read_http_request,
                             response_head)

TOKEN = "sk-tls-SECRET"
CHAT = chat("m")
ANSWER = json.dumps({
    "id": "c", "object": "chat.completion", "created": 1, "model": "m",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "over tls"},
                 "finish_reason": "stop"}]}).encode()
STREAM = chunk("over") + chunk(" tls") + chunk(None, "stop") + b"data: [DONE]\n\n"


# ---- a throwaway CA and its server certificates ------------------------------------------

def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _issue(subject: str, key: ec.EllipticCurvePrivateKey, issuer: tuple[str, Any] | None,
           names: list[x509.GeneralName]) -> x509.Certificate:
    """A certificate for `key`: the CA's own when `issuer` is None, else a server's for
    `names`, signed by `issuer` (its name and key)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    signer_name, signer_key = issuer or (subject, key)
    builder = (x509.CertificateBuilder()
               .subject_name(_name(subject)).issuer_name(_name(signer_name))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                              critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                   signer_key.public_key()), critical=False))
    if issuer is None:
        builder = (builder.add_extension(x509.BasicConstraints(ca=True, path_length=0), True)
                   .add_extension(x509.KeyUsage(
                       digital_signature=False, content_commitment=False, key_encipherment=False,
                       data_encipherment=False, key_agreement=False, key_cert_sign=True,
                       crl_sign=True, encipher_only=False, decipher_only=False), True))
    else:
        builder = (builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
                   .add_extension(x509.SubjectAlternativeName(names), False)
                   .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                                  False))
    return builder.sign(signer_key, hashes.SHA256())


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@dataclass
class Pki:
    ca_pem: str
    local: ssl.SSLContext       # a server's, for 127.0.0.1 and localhost
    elsewhere: ssl.SSLContext   # a server's, for another name only

    def trusting(self) -> ssl.SSLContext:
        """A client context that trusts the CA (and nothing else)."""
        return ssl.create_default_context(cadata=self.ca_pem)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    where = tmp_path_factory.mktemp("pki")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _issue("aiproxy test CA", ca_key, None, [])

    def server(names: list[x509.GeneralName], stem: str) -> ssl.SSLContext:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _issue(stem, key, ("aiproxy test CA", ca_key), names)
        chain, secret = Path(where, f"{stem}.pem"), Path(where, f"{stem}.key")
        chain.write_bytes(_pem(cert) + _pem(ca))
        secret.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                             serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption()))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(chain, secret)
        return context

    local = server([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    x509.DNSName("localhost")], "local")
    elsewhere = server([x509.DNSName("elsewhere.test")], "elsewhere")
    return Pki(_pem(ca).decode(), local, elsewhere)


# ---- the upstream and the gateway ----------------------------------------------------------

async def answers(server: RawServer, reader: Any, writer: Any) -> None:
    """A chat completion, or an event stream if one was asked for, for each request on the
    connection until the other end closes it."""
    while True:
        _, body = server.requests[-1]
        if json.loads(body).get("stream"):
            writer.write(response_head(content_type=b"text/event-stream", length=len(STREAM))
                         + STREAM)
        else:
            writer.write(response_head(length=len(ANSWER)) + ANSWER)
        await writer.drain()
        server.requests.append(await read_http_request(reader))


def injected(kind: str, verify: ssl.SSLContext | None) -> httpx.AsyncClient | None:
    """The client a test gives the middleware on path `kind`: one trusting `verify`, or with
    no `verify`, none for the default path (the middleware opens its own, with the
    system's CAs) and httpx's own default for the httpx path."""
    if kind == "default":
        return None if verify is None else default_client(verify=verify)
    return httpx.AsyncClient(trust_env=False, **({} if verify is None else {"verify": verify}))


@pytest.fixture
async def gateway() -> AsyncIterator[Any]:
    """`gateway(kind, url, verify)`: a client of a middleware whose upstream calls go the
    way `injected(kind, verify)` says; every client is closed at the end."""
    opened: list[Any] = []

    def make(kind: str, url: str, verify: ssl.SSLContext | None = None) -> httpx.AsyncClient:
        upstream = injected(kind, verify)
        app = AIProxyMiddleware(inner_app(), http_client=upstream, config={"provider": {
            "type": "openai", "apiTokens": [TOKEN], "openaiCustomUrl": f"{url}/v1",
            "timeout": 5000}})  # (far above what a test waits for)
        assert isinstance(app.http_client, GatewayClient if kind == "default"
                          else httpx.AsyncClient)
        assert upstream is None or app.http_client is upstream
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app),
                                   base_url="http://gateway.test", timeout=5)
        opened.extend([client, app, upstream])
        return client

    yield make
    for each in opened:
        if each is not None:
            await each.aclose()


@pytest.fixture(autouse=True)
def clean_logs(caplog: pytest.LogCaptureFixture) -> Any:
    """No log record carries the token or a traceback."""
    caplog.set_level(logging.DEBUG)
    yield
    assert_no_secret_or_traceback(caplog, TOKEN)


def refused(r: httpx.Response, up: RawServer, host: str = "127.0.0.1") -> None:
    """A 502 in OpenAI's error format naming the provider and its host and saying the
    certificate is why, without the token and not taken for a DNS failure; the upstream
    never saw the request."""
    assert r.status_code == 502, r.text
    assert r.headers["content-type"] == "application/json"
    error = r.json()["error"]
    assert {"message", "type", "code"} <= set(error)
    assert error["code"] == "upstream_unreachable"
    assert f"provider 'openai' at {host}:{up.port}" in error["message"]
    assert "could not be resolved" not in error["message"]
    assert "TLS certificate could not be verified" in error["message"]
    assert TOKEN not in r.text and "Traceback" not in r.text
    assert up.requests == []


# ---- tests ----------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", PATHS)
async def test_a_client_trusting_the_ca_gets_the_chat_and_the_stream_intact(pki, gateway, kind):
    async with RawServer(answers, tls=pki.local) as up:
        assert up.url.startswith("https://")
        client = gateway(kind, up.url, pki.trusting())
        r = await client.post("/v1/chat/completions", json=CHAT)
        assert r.status_code == 200 and r.content == ANSWER
        r = await client.post("/v1/chat/completions", json={**CHAT, "stream": True})
        assert r.status_code == 200 and r.content == STREAM
    assert len(up.requests) == 2 and up.opened == 1  # the connection was kept and reused
    assert all(f"Bearer {TOKEN}".encode() in head for head, _ in up.requests)


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("kind", PATHS)
async def test_a_client_not_trusting_the_ca_is_502(pki, gateway, kind, stream):
    async with RawServer(answers, tls=pki.local) as up:
        client = gateway(kind, up.url)
        r = await client.post("/v1/chat/completions", json={**CHAT, "stream": stream})
    refused(r, up)


@pytest.mark.parametrize("host", [
    "127.0.0.1", "localhost"])
@pytest.mark.parametrize("kind", PATHS)
async def test_a_certificate_for_another_name_is_502(pki, gateway, kind, host):
    """The certificate is the trusted CA's, but for `elsewhere.test`: 502, on an address
    and on a host name (localhost: 127.0.0.1 where the server listens)."""
    async with RawServer(answers, tls=pki.elsewhere) as up:
        client = gateway(kind, up.url.replace("127.0.0.1", host), pki.trusting())
        r = await client.post("/v1/chat/completions", json=CHAT)
    refused(r, up, host)
