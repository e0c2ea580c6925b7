"""The image-URL rule (`imageFetch`): which URLs Gemini, Vertex and Bedrock routes may make
the gateway fetch, and that a refused URL makes no request; the `context` file's URL comes
from config only."""

from __future__ import annotations

import ipaddress

import httpx
import pytest

from aiproxy_middleware.transforms import fetch_policy
from aiproxy_middleware import load_config
from aiproxy_middleware.errors import ConfigError, ProxyError
from aiproxy_middleware.transforms.fetch_policy import ImagePolicy, Vetted, denied_kind, literal_ip
from helpers import PUBLIC_IP, sent_json
from upstream_server import Served

GEMINI_URL = ("https://generativelanguage.googleapis.com/v1beta/models/"
              "gemini-2.5-flash:generateContent")
GEMINI_ANSWER = {"candidates": [{"content": {"role": "model", "parts": [{"text": "a cat"}]},
                                 "finishReason": "STOP", "index": 0}],
                 "usageMetadata": {"promptTokenCount": 1, "candidatesTokenCount": 1,
                                   "totalTokenCount": 2}}
PNG = b"\x89PNG\r\n\x1a\nfake"


def config(**image_fetch: object) -> dict:
    conf: dict = {"provider": {"type": "gemini", "apiTokens": ["g-key"]}}
    if image_fetch:
        conf["imageFetch"] = image_fetch
    return conf


def chat(*urls: str) -> dict:
    parts = [{"type": "text", "text": "what is it?"}]
    parts += [{"type": "image_url", "image_url": {"url": u}} for u in urls]
    return {"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": parts}]}


def refused(r: httpx.Response, url: str) -> str:
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["code"] == "image_url_not_allowed" and error["param"] == "messages"
    assert url in error["message"]
    return error["message"]


DENIED = [
    ("http://127.0.0.1/a.png", "loopback"),
    ("http://localhost:8080/a.png", "loopback"),
    ("http://10.1.2.3/a.png", "private"),
    ("http://172.16.5.4/a.png", "private"),
    ("http://192.168.1.1/a.png", "private"),
    ("http://169.254.169.254/latest/meta-data/", "link-local"),
    ("http://100.100.100.200/latest/meta-data/", "shared (CGNAT)"),
    ("http://0.0.0.0/a.png", "unspecified"),
    ("http://224.0.0.1/a.png", "multicast"),
    ("http://240.0.0.1/a.png", "reserved"),
    ("http://255.255.255.255/a.png", "reserved"),
    ("http://[::1]/a.png", "loopback"),
    ("http://[::]/a.png", "unspecified"),
    ("http://[fe80::1]/a.png", "link-local"),
    ("http://[fd00:ec2::254]/latest/meta-data/", "unique-local"),
    ("http://[::ffff:127.0.0.1]/a.png", "loopback"),
    ("http://[::ffff:a9fe:a9fe]/a.png", "link-local"),
    ("http://[64:ff9b::a00:1]/a.png", "private"),
    ("http://2130706433/a.png", "loopback"),
    ("http://0x7f.1/a.png", "loopback"),
    ("http://0x7f000001/a.png", "loopback"),
    ("http://017700000001/a.png", "loopback"),
    ("http://127.1/a.png", "loopback"),
    ("HTTP://127.0.0.1/a.png", "loopback"),
    ("https://127.0.0.1:8443/a.png", "loopback"),
]


@pytest.mark.parametrize("url, kind", DENIED)
async def test_private_addresses_are_refused_by_default_and_not_fetched(gateway, respx_mock,
                                                                        url, kind):
    anything = respx_mock.route().respond(200, content=PNG,
                                          headers={"content-type": "image/png"})
    r = await gateway(config()).post("/v1/chat/completions", json=chat(url))
    message = refused(r, url)
    assert kind in message
    assert anything.call_count == 0  # neither the image nor Gemini was asked


@pytest.mark.parametrize("ips, kind", [
    (["10.0.0.5"], "private"),
    (["169.254.169.254"], "link-local"),
    (["::1"], "loopback"),
    (["::ffff:192.168.0.1"], "private"),
    ([PUBLIC_IP, "10.0.0.5"], "private"),  # any private answer refuses the name
    (["10.0.0.5", PUBLIC_IP], "private"),
])
async def test_names_resolving_to_private_addresses_are_refused(gateway, respx_mock, dns, ips,
                                                                kind):
    dns["images.example.com"] = ips
    anything = respx_mock.route().respond(200, content=PNG,
                                          headers={"content-type": "image/png"})
    url = "https://images.example.com/cat.png"
    message = refused(await gateway(config()).post("/v1/chat/completions", json=chat(url)), url)
    assert f"images.example.com resolves to a {kind} address" in message
    assert not any(ip in message for ip in ips)  # the internal address is not disclosed
    assert anything.call_count == 0


async def test_a_refused_loopback_server_records_nothing(gateway, respx_mock):
    hits: list[str] = []

    async def app(scope, receive, send):
        hits.append(scope["path"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": PNG})

    respx_mock.route(host="127.0.0.1").pass_through()
    async with Served(app) as server:
        url = f"{server.url}/secret.png"
        refused(await gateway(config()).post("/v1/chat/completions", json=chat(url)), url)
    assert hits == []


async def test_public_host_is_fetched(gateway, respx_mock, dns):
    dns["cdn.example.com"] = [PUBLIC_IP, "2606:2800:21f:cb07:6820:80da:af6b:8b2c"]
    image = respx_mock.get("https://cdn.example.com/cat.png").respond(
        content=PNG, headers={"content-type": "image/png"})
    gemini = respx_mock.post(GEMINI_URL).respond(json=GEMINI_ANSWER)
    r = await gateway(config()).post("/v1/chat/completions",
                                     json=chat("https://cdn.example.com/cat.png"))
    assert r.status_code == 200, r.text
    assert image.call_count == 1
    parts = sent_json(gemini)["contents"][0]["parts"]
    assert parts[1]["inlineData"]["mimeType"] == "image/png"


async def test_redirects_are_not_followed(gateway, respx_mock):
    image = respx_mock.get("https://img.test/cat.png").respond(
        302, headers={"location": "http://169.254.169.254/latest/meta-data/"})
    inner = respx_mock.get(host="169.254.169.254").respond(200, content=PNG)
    r = await gateway(config()).post("/v1/chat/completions",
                                     json=chat("https://img.test/cat.png"))
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["code"] == "image_fetch_failed" and "redirects are not followed" in error["message"]
    assert image.call_count == 1 and inner.call_count == 0


@pytest.mark.parametrize("allow, deny, url, why", [
    (["img.test"], [], "https://other.test/a.png", "other.test is not one of the allowed hosts"),
    (["*.images.test"], [], "https://images.test/a.png",
     "images.test is not one of the allowed hosts"),
    ([], ["bad.test"], "https://bad.test/a.png", "bad.test is a denied host"),
    ([], ["BAD.test"], "https://Bad.Test./a.png", "bad.test is a denied host"),
    ([], ["*.evil.test"], "https://a.b.evil.test/a.png", "a.b.evil.test is a denied host"),
    (["*.test"], ["x.img.test"], "https://x.img.test/a.png", "x.img.test is a denied host"),
    ([], [PUBLIC_IP], "https://img.test/a.png", "img.test resolves to a denied address"),
    ([], ["8.8.8.8"], "http://134744072/a.png", "8.8.8.8 is a denied host"),
])
async def test_host_patterns(gateway, respx_mock, allow, deny, url, why):
    anything = respx_mock.route().respond(200, content=PNG,
                                          headers={"content-type": "image/png"})
    client = gateway(config(allowHosts=allow, denyHosts=deny))
    message = refused(await client.post("/v1/chat/completions", json=chat(url)), url)
    assert why in message
    assert anything.call_count == 0


@pytest.mark.parametrize("allow, url", [
    (["img.test"], "https://img.test/a.png"),
    (["IMG.test."], "https://img.test/a.png"),
    (["*.images.test"], "https://a.images.test/a.png"),
    (["*.images.test"], "https://a.b.images.test/a.png"),
])
async def test_allowed_hosts_are_fetched(gateway, respx_mock, allow, url):
    image = respx_mock.get(url).respond(content=PNG, headers={"content-type": "image/png"})
    respx_mock.post(GEMINI_URL).respond(json=GEMINI_ANSWER)
    r = await gateway(config(allowHosts=allow, denyHosts=["bad.test"])).post(
        "/v1/chat/completions", json=chat(url))
    assert r.status_code == 200, r.text
    assert image.call_count == 1


async def test_allow_hosts_does_not_lift_the_private_address_check(gateway, respx_mock, dns):
    dns["intranet.test"] = ["10.0.0.7"]
    anything = respx_mock.route().respond(200)
    url = "http://intranet.test/a.png"
    r = await gateway(config(allowHosts=["intranet.test"])).post("/v1/chat/completions",
                                                                 json=chat(url))
    assert "resolves to a private address" in refused(r, url)
    assert anything.call_count == 0


def image_server(seen: list[dict]):
    async def app(scope, receive, send):
        seen.append({"path": scope["path"], "headers": dict(scope["headers"])})
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"image/png")]})
        await send({"type": "http.response.body", "body": PNG})
    return app


async def test_allow_private_networks_fetches_from_a_local_server(gateway, respx_mock):
    seen: list[dict] = []
    gemini = respx_mock.post(GEMINI_URL).respond(json=GEMINI_ANSWER)
    respx_mock.route(host="127.0.0.1").pass_through()
    async with Served(image_server(seen)) as server:
        url = f"{server.url}/cat.png"
        r = await gateway(config(allowPrivateNetworks=True)).post("/v1/chat/completions",
                                                                  json=chat(url))
    assert r.status_code == 200, r.text
    assert [s["path"] for s in seen] == ["/cat.png"]
    assert sent_json(gemini)["contents"][0]["parts"][1]["inlineData"]["mimeType"] == "image/png"


async def test_the_fetch_connects_to_the_checked_address_not_a_new_lookup(gateway, respx_mock,
                                                                           dns):
    # `pinned.test` resolves (for the check) to 127.0.0.1 only; the system's resolver knows
    # no such name. The fetch reaching the local server proves it used the checked address,
    # with the URL's host in the Host header.
    dns["pinned.test"] = ["127.0.0.1"]
    seen: list[dict] = []
    respx_mock.post(GEMINI_URL).respond(json=GEMINI_ANSWER)
    respx_mock.route(host="pinned.test").pass_through()
    async with Served(image_server(seen)) as server:
        url = f"http://pinned.test:{server.port}/cat.png"
        r = await gateway(config(allowPrivateNetworks=True)).post("/v1/chat/completions",
                                                                  json=chat(url))
    assert r.status_code == 200, r.text
    assert seen[0]["headers"][b"host"] == f"pinned.test:{server.port}".encode()


async def test_a_pinned_client_connects_to_no_other_host():
    seen: list[dict] = []
    async with Served(image_server(seen)) as server:
        vetted = Vetted(httpx.URL(f"http://a.test:{server.port}/"), "a.test", ("127.0.0.1",))
        async with ImagePolicy(allow_private=True).client([vetted]) as client:
            assert (await client.get(f"http://a.test:{server.port}/x")).status_code == 200
            with pytest.raises(httpx.ConnectError, match="not checked"):
                await client.get(f"http://b.test:{server.port}/x")
            with pytest.raises(httpx.ConnectError, match="not checked"):
                await client.get(f"http://127.0.0.1:{server.port}/x")
    assert [s["path"] for s in seen] == ["/x"]


async def test_rebinding_after_the_check_gains_nothing(respx_mock, dns, monkeypatch):
    # The name answers a public address to the check, then a private one: the connection
    # goes to the checked public address.
    answers = iter([[PUBLIC_IP], ["127.0.0.1"]])

    async def rebinding(host: str, port: int) -> list:
        return [(0, 0, 0, "", (ip, port)) for ip in next(answers)]
    monkeypatch.setattr(fetch_policy, "_getaddrinfo", rebinding)
    connected: list[str] = []

    async def record(self, host, port, *args, **kwargs):
        connected.append(host)
        raise fetch_policy.httpcore.ConnectError("no network in tests")
    monkeypatch.setattr(fetch_policy.httpcore.AnyIOBackend, "connect_tcp", record)
    respx_mock.route(host="rebind.test").pass_through()
    policy = ImagePolicy()
    vetted = await policy.vet("http://rebind.test/a.png")
    assert vetted.addresses == (PUBLIC_IP,)
    async with policy.client([vetted]) as client:
        with pytest.raises(httpx.ConnectError):
            await client.get("http://rebind.test/a.png")
    assert connected == [PUBLIC_IP]


async def test_unresolvable_names_and_other_schemes_are_refused(dns):
    policy = ImagePolicy()
    with pytest.raises(ProxyError, match="could not be resolved"):
        dns["nowhere.test"] = []
        await policy.vet("http://nowhere.test/a.png")
    with pytest.raises(ProxyError, match="only http and https URLs are fetched") as info:
        await policy.vet("ftp://img.test/a.png")
    assert info.value.status == 400 and info.value.code == "image_url_not_allowed"
    with pytest.raises(ProxyError, match="not a valid URL"):
        await policy.vet("http://[::1/a.png")


@pytest.mark.parametrize("host, ip", [
    ("2130706433", "127.0.0.1"), ("0x7f.1", "127.0.0.1"), ("0x7F000001", "127.0.0.1"),
    ("017700000001", "127.0.0.1"), ("127.1", "127.0.0.1"), ("10.1", "10.0.0.1"),
    ("[::1]", "::1"), ("::ffff:10.0.0.1", "::ffff:a00:1"),
    ("example.com", None), ("deadbeef", None), ("abc.de", None), ("0x", None),
])
def test_literal_ips(host, ip):
    found = literal_ip(host)
    assert (str(found) if found is not None else None) == ip


@pytest.mark.parametrize("address, kind", [
    ("8.8.8.8", None), (PUBLIC_IP, None), ("2606:4700::1111", None), ("::ffff:8.8.8.8", None),
    ("100.64.0.1", "shared (CGNAT)"), ("100.127.255.254", "shared (CGNAT)"),
    ("192.0.0.8", "private"), ("198.18.0.1", "private"), ("203.0.113.9", "private"),
    ("fe80::1%eth0", "link-local"), ("ff02::1", "multicast"), ("2002:7f00:1::", "loopback"),
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "private"),  # Teredo
])
def test_denied_kinds(address, kind):
    assert denied_kind(ipaddress.ip_address(address)) == kind


def test_config_defaults_and_validation():
    policy = load_config(config()).image_fetch.policy
    assert policy == ImagePolicy(False, (), ())
    policy = load_config(config(allowPrivateNetworks=True, allowHosts=["*.cdn.test"],
                                denyHosts=["10.0.0.1", "[::1]"])).image_fetch.policy
    assert policy.allow_private and policy.allow_hosts == ("*.cdn.test",)
    assert policy.deny_hosts == ("10.0.0.1", "[::1]")
    for bad, where in [
        ({"allowHosts": ["bad host"]}, "imageFetch.allowHosts[0]: "),
        ({"allowHosts": ["ok.test", "http://x.test/"]}, "imageFetch.allowHosts[1]: "),
        ({"denyHosts": ["*"]}, "imageFetch.denyHosts[0]: "),
        ({"denyHosts": ["a.*.test"]}, "imageFetch.denyHosts[0]: "),
        ({"denyHosts": [5]}, "imageFetch.denyHosts[0]: "),
        ({"denyHosts": "x.test"}, "imageFetch.denyHosts: "),
        ({"allowPrivateNetworks": "yes"}, "imageFetch.allowPrivateNetworks: "),
        ({"allowPrivate": True}, "imageFetch.allowPrivate: unknown field"),
    ]:
        with pytest.raises(ConfigError) as info:
            load_config({**config(), "imageFetch": bad})
        assert str(info.value).startswith(where), str(info.value)


async def test_context_file_url_comes_from_config_only(gateway, respx_mock):
    """The `context` file is fetched from `serviceName:servicePort` with the configured
    `fileUrl`'s path and host; nothing in the client's request changes where it goes."""
    file = respx_mock.get("http://files.internal:8080/ctx/about.txt").respond(text="Tea.")
    respx_mock.post("https://api.openai.com/v1/chat/completions").respond(json={
        "id": "c", "object": "chat.completion", "created": 1, "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"},
                     "finish_reason": "stop"}]})
    other = respx_mock.get(host="169.254.169.254").respond(200)
    client = gateway({"provider": {"type": "openai", "apiTokens": ["k"], "context": {
        "fileUrl": "http://docs.example.com/ctx/about.txt", "serviceName": "files.internal",
        "servicePort": 8080}}})
    r = await client.post(
        "/v1/chat/completions?fileUrl=http://169.254.169.254/&serviceName=169.254.169.254",
        headers={"host": "169.254.169.254", "x-forwarded-host": "169.254.169.254"},
        json={"model": "m", "messages": [{"role": "user", "content": "hi"}],
              "context": {"fileUrl": "http://169.254.169.254/"},
              "fileUrl": "http://169.254.169.254/"})
    assert r.status_code == 200
    assert file.call_count == 1 and other.call_count == 0
    assert file.calls.last.request.headers["host"] == "docs.example.com"


def _self_signed(tmp_path, name: str) -> tuple[str, str, str]:
    """A key and certificate for `name` (their own CA): key path, cert path, cert PEM."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    key_path, cert_path = tmp_path / f"{name}.key", tmp_path / f"{name}.pem"
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    cert_path.write_text(pem)
    return str(key_path), str(cert_path), pem


@pytest.mark.parametrize("cert_name, ok", [("pinned.test", True), ("other.test", False)])
async def test_tls_is_verified_against_the_url_host_name(gateway, respx_mock, dns, monkeypatch,
                                                         tmp_path, cert_name, ok):
    import asyncio
    import ssl

    import uvicorn
    from upstream_server import free_port

    key, cert, pem = _self_signed(tmp_path, cert_name)
    trusting = ssl.create_default_context(cadata=pem)
    monkeypatch.setattr(fetch_policy, "_SSL", trusting)
    dns["pinned.test"] = ["127.0.0.1"]
    seen: list[dict] = []
    respx_mock.post(GEMINI_URL).respond(json=GEMINI_ANSWER)
    respx_mock.route(host="pinned.test").pass_through()
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(image_server(seen), host="127.0.0.1", port=port,
                                           log_level="critical", lifespan="off",
                                           ssl_keyfile=key, ssl_certfile=cert))
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            await asyncio.sleep(0.01)
        url = f"https://pinned.test:{port}/cat.png"
        r = await gateway(config(allowPrivateNetworks=True)).post("/v1/chat/completions",
                                                                  json=chat(url))
    finally:
        server.should_exit = True
        await task
    if ok:
        assert r.status_code == 200, r.text
        assert seen[0]["headers"][b"host"] == f"pinned.test:{port}".encode()
    else:
        assert r.status_code == 400 and r.json()["error"]["code"] == "image_fetch_failed"
        assert seen == []
