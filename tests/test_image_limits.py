"""How much one request may make the gateway download (`imageFetch` limits) for the providers
that take image bytes only (Gemini, Vertex, Bedrock): too many images is a 400 before any
fetch, too many bytes a 413 before they are read, and only a few downloads run at once."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import httpx
import pytest

from aiproxy_middleware.transforms import fetch_policy
from aiproxy_middleware import load_config
from aiproxy_middleware.errors import ConfigError
from helpers import sent_json
from upstream_server import RawServer, Served, response_head

MiB = 1024 * 1024
GEMINI_ANSWER = {"candidates": [{"content": {"role": "model", "parts": [{"text": "a cat"}]},
                                 "finishReason": "STOP", "index": 0}],
                 "usageMetadata": {"promptTokenCount": 1, "candidatesTokenCount": 1,
                                   "totalTokenCount": 2}}
BEDROCK_ANSWER = {"output": {"message": {"role": "assistant", "content": [{"text": "a cat"}]}},
                  "stopReason": "end_turn",
                  "usage": {"inputTokens": 1, "outputTokens": 1, "totalTokens": 2}}
# name: (provider config, model, the provider's chat URL, its answer)
PROVIDERS = {
    "gemini": ({"type": "gemini", "apiTokens": ["g-key"]}, "gemini-2.5-flash",
               "https://generativelanguage.googleapis.com/v1beta/models/"
               "gemini-2.5-flash:generateContent", GEMINI_ANSWER),
    "vertex": ({"type": "vertex", "apiTokens": ["AQ.express-key"]}, "gemini-2.5-flash",
               "https://aiplatform.googleapis.com/v1/publishers/google/models/"
               "gemini-2.5-flash:generateContent", GEMINI_ANSWER),
    "bedrock": ({"type": "bedrock", "awsAccessKey": "AKIDEXAMPLE", "awsRegion": "us-west-2",
                 "awsSecretKey": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"}, "m",
                "https://bedrock-runtime.us-west-2.amazonaws.com/model/m/converse",
                BEDROCK_ANSWER),
}
PNG = b"\x89PNG\r\n\x1a\n"
DATA_URL = "data:image/png;base64," + base64.b64encode(PNG).decode()


@pytest.fixture(params=list(PROVIDERS))
def provider(request, respx_mock):
    """(name, config(**imageFetch), chat(*urls), the provider's respx route)."""
    conf, model, url, answer = PROVIDERS[request.param]
    route = respx_mock.post(url).respond(json=answer)

    def config(**image_fetch: Any) -> dict:
        return {"provider": conf, **({"imageFetch": image_fetch} if image_fetch else {})}

    def chat(*urls: str, per_message: int = 0) -> dict:
        parts = [{"type": "image_url", "image_url": {"url": u}} for u in urls]
        size = per_message or len(parts) or 1
        messages = [{"role": "user", "content": [{"type": "text", "text": "what is it?"},
                                                 *parts[i:i + size]]}
                    for i in range(0, max(len(parts), 1), size)]
        return {"model": model, "messages": messages}
    return request.param, config, chat, route


def sent_images(name: str, route: Any) -> list[str]:
    """The base64 image data the provider received, in order."""
    body = sent_json(route)
    if name == "bedrock":
        return [b["image"]["source"]["bytes"] for m in body["messages"] for b in m["content"]
                if "image" in b]
    return [p["inlineData"]["data"] for c in body["contents"] for p in c["parts"]
            if "inlineData" in p]


def error_of(r: httpx.Response, status: int, code: str) -> dict:
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == code
    assert error["param"] == "messages"
    return error


def image_answer(size: int) -> httpx.Response:
    return httpx.Response(200, content=b"\x89" * size, headers={"content-type": "image/png"})


@pytest.fixture
def lookups(monkeypatch) -> list[str]:
    """The host names the image-URL check resolved."""
    seen: list[str] = []
    resolve = fetch_policy._getaddrinfo

    async def record(host: str, port: int) -> list:
        seen.append(host)
        return await resolve(host, port)
    monkeypatch.setattr(fetch_policy, "_getaddrinfo", record)
    return seen


# ---- the number of images ---------------------------------------------------------------

TOO_MANY = {
    "21 http URLs": [f"https://img.test/{i}.png" for i in range(21)],
    "one URL 21 times": ["https://img.test/same.png"] * 21,
    "21 data URLs": [DATA_URL] * 21,
    "15 data and 6 http": [DATA_URL] * 15 + [f"https://img.test/{i}.png" for i in range(6)],
    "40 URLs of many hosts": [f"http://h{i}.test/big.png" for i in range(40)],
    "upper-case schemes": [f"HTTPS://img.test/{i}.png" for i in range(21)],
}


@pytest.mark.parametrize("per_message", [0, 3])
@pytest.mark.parametrize("urls", list(TOO_MANY.values()), ids=list(TOO_MANY))
async def test_too_many_images_is_400_before_any_lookup_or_fetch(gateway, respx_mock, provider,
                                                                 lookups, urls, per_message):
    _, config, chat, route = provider
    anything = respx_mock.route(host__regex=r".*\.test").mock(return_value=image_answer(10))
    r = await gateway(config()).post("/v1/chat/completions", json=chat(*urls,
                                                                        per_message=per_message))
    error = error_of(r, 400, "too_many_images")
    assert str(len(urls)) in error["message"] and "20" in error["message"]
    assert anything.call_count == 0 and lookups == [] and not route.called


async def test_max_images_is_configurable_and_inclusive(gateway, respx_mock, provider):
    name, config, chat, route = provider
    respx_mock.route(host="img.test").mock(return_value=image_answer(10))
    urls = [DATA_URL, "https://img.test/a.png", "https://img.test/b.png"]
    r = await gateway(config(maxImages=3)).post("/v1/chat/completions", json=chat(*urls))
    assert r.status_code == 200, r.text
    assert len(sent_images(name, route)) == 3
    r = await gateway(config(maxImages=2)).post("/v1/chat/completions", json=chat(*urls))
    error_of(r, 400, "too_many_images")
    assert route.call_count == 1


# ---- the bytes fetched ------------------------------------------------------------------

# (URL -> size served) per spelling; each is over a 1000-byte total and within 600 per image.
OVER_TOTAL = {
    "many small": [(f"https://img.test/{i}.png", 120) for i in range(9)],
    "a few large": [("https://img.test/a.png", 600), ("https://img.test/b.png", 600)],
    "one URL used four times": [("https://img.test/same.png", 300)] * 4,
    "data and http mixed": [(DATA_URL, 0)] * 5 + [(f"https://img.test/{i}.png", 400)
                                                  for i in range(3)],
    "many hosts": [(f"https://h{i}.test/x.png", 250) for i in range(5)],
}


@pytest.mark.parametrize("images", list(OVER_TOTAL.values()), ids=list(OVER_TOTAL))
async def test_images_over_the_total_are_413_and_the_provider_is_not_called(
        gateway, respx_mock, provider, images):
    _, config, chat, route = provider
    sizes = dict(images)
    respx_mock.route(host__regex=r".*\.test").mock(
        side_effect=lambda request: image_answer(sizes[str(request.url)]))
    client = gateway(config(maxTotalBytes=1000, maxImageBytes=600))
    r = await client.post("/v1/chat/completions", json=chat(*(u for u, _ in images)))
    error = error_of(r, 413, "images_too_large")
    assert "1000 bytes" in error["message"]
    assert not route.called


async def test_images_up_to_the_total_are_sent(gateway, respx_mock, provider):
    name, config, chat, route = provider
    respx_mock.route(host="img.test").mock(return_value=image_answer(250))
    client = gateway(config(maxTotalBytes=1000))
    r = await client.post("/v1/chat/completions", json=chat(*["https://img.test/a.png"] * 4))
    assert r.status_code == 200, r.text
    assert len(sent_images(name, route)) == 4


async def test_default_total_refuses_large_images_before_reading_them_all(gateway, respx_mock,
                                                                          provider):
    # Three images of 19 MiB are within the 20 MiB per image and over the 50 MiB in all.
    _, config, chat, route = provider
    body = b"\x89" * (19 * MiB)
    served: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        served.append(request.url.path)
        return httpx.Response(200, content=body, headers={"content-type": "image/png"})
    respx_mock.route(host="img.test").mock(side_effect=answer)
    urls = [f"https://img.test/{i}.png" for i in range(3)]
    r = await gateway(config()).post("/v1/chat/completions", json=chat(*urls))
    error_of(r, 413, "images_too_large")
    assert not route.called


async def test_an_image_over_its_own_cap_is_413_naming_it(gateway, respx_mock, provider):
    _, config, chat, route = provider
    respx_mock.get("https://img.test/big.png").mock(return_value=image_answer(501))
    respx_mock.get("https://img.test/ok.png").mock(return_value=image_answer(500))
    client = gateway(config(maxImageBytes=500))
    r = await client.post("/v1/chat/completions",
                          json=chat("https://img.test/ok.png", "https://img.test/big.png"))
    error = error_of(r, 413, "image_too_large")
    assert "https://img.test/big.png" in error["message"] and "500 bytes" in error["message"]
    assert not route.called


async def test_anthropic_messages_get_anthropic_errors(gateway, respx_mock):
    conf, model, url, answer = PROVIDERS["gemini"]
    route = respx_mock.post(url).respond(json=answer)
    respx_mock.route(host="img.test").mock(return_value=image_answer(600))
    client = gateway({"provider": conf, "imageFetch": {"maxTotalBytes": 1000}})

    def messages(n: int) -> dict:
        blocks = [{"type": "image", "source": {"type": "url", "url": f"https://img.test/{i}"}}
                  for i in range(n)]
        return {"model": model, "max_tokens": 10, "messages": [{"role": "user", "content": [
            {"type": "text", "text": "what?"}, *blocks]}]}
    for n, status, kind in [(21, 400, "invalid_request_error"), (2, 413, "request_too_large")]:
        r = await client.post("/v1/messages", json=messages(n))
        assert r.status_code == status, r.text
        assert r.json()["type"] == "error" and r.json()["error"]["type"] == kind
    assert not route.called


# ---- a huge or endless image is cut off -------------------------------------------------

async def endless(server: RawServer, reader: asyncio.StreamReader, writer: Any,
                  head: bytes, chunked: bool = False) -> None:
    writer.write(head)
    piece = b"\x89" * 65536
    while True:  # until the gateway closes the connection (ConnectionError)
        writer.write(b"10000\r\n" + piece + b"\r\n" if chunked else piece)
        await writer.drain()


ENDLESS = {
    "declared 10 GiB": dict(head=response_head(200, b"image/png", 10 * 1024 ** 3)),
    "declared 10 GiB, then stalls": dict(head=response_head(200, b"image/png", 10 * 1024 ** 3),
                                         stall=True),
    "no length, to the end of the connection": dict(head=response_head(200, b"image/png")),
    "chunked": dict(head=response_head(200, b"image/png", extra=b"transfer-encoding: chunked"
                                       b"\r\n").replace(b"connection: close\r\n", b""),
                    chunked=True),
}


@pytest.mark.parametrize("how", list(ENDLESS.values()), ids=list(ENDLESS))
@pytest.mark.parametrize("limits", [{}, {"maxImageBytes": 100_000}])
async def test_a_huge_image_is_cut_off_with_413(gateway, respx_mock, provider, how, limits):
    _, config, chat, route = provider

    async def handler(server: RawServer, reader: asyncio.StreamReader, writer: Any) -> None:
        if how.get("stall"):
            writer.write(how["head"])
            await server.until_peer_closes(reader)
        else:
            await endless(server, reader, writer, how["head"], how.get("chunked", False))
    respx_mock.route(host="127.0.0.1").pass_through()
    async with RawServer(handler) as server:
        client = gateway(config(allowPrivateNetworks=True, **limits))
        async with asyncio.timeout(20):  # a hang, not a duration, is what fails here
            r = await client.post("/v1/chat/completions", json=chat(f"{server.url}/big.png"))
            assert await server.wait_peer_closed(1, within=5) is not None
    error_of(r, 413, "image_too_large")
    assert not route.called


async def test_the_other_downloads_are_cancelled_at_the_first_refusal(gateway, respx_mock,
                                                                      provider):
    _, config, chat, route = provider

    async def handler(server: RawServer, reader: asyncio.StreamReader, writer: Any) -> None:
        head, _ = server.requests[-1]
        if b"/big" in head.split(b"\r\n")[0]:
            await endless(server, reader, writer, response_head(200, b"image/png"))
        else:  # never answers: its download is held open until cancelled
            await server.until_peer_closes(reader)
    respx_mock.route(host="127.0.0.1").pass_through()
    async with RawServer(handler) as server:
        urls = [f"{server.url}/slow{i}.png" for i in range(3)] + [f"{server.url}/big.png"]
        client = gateway(config(allowPrivateNetworks=True, maxImageBytes=100_000))
        async with asyncio.timeout(20):
            r = await client.post("/v1/chat/completions", json=chat(*urls))
            assert await server.wait_peer_closed(4, within=5) is not None
    error_of(r, 413, "image_too_large")
    assert server.opened == 4 and not route.called


# ---- downloads at once ------------------------------------------------------------------

class Counting:
    """An image server that counts the downloads it serves at once: each waits until `hold`
    are open (or a while), then a little more, so more at once than allowed would show."""

    def __init__(self, hold: int) -> None:
        self.hold = hold
        self.now = self.peak = self.served = 0
        self.full = asyncio.Event()
        self.paths: list[str] = []
        self.headers: list[dict] = []

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        self.now += 1
        self.peak = max(self.peak, self.now)
        self.paths.append(scope["path"])
        self.headers.append(dict(scope["headers"]))
        if self.now >= self.hold:
            self.full.set()
        try:
            await asyncio.wait_for(self.full.wait(), 3)
        except TimeoutError:
            pass
        await asyncio.sleep(0.05)
        self.now -= 1
        self.served += 1
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"image/png")]})
        await send({"type": "http.response.body", "body": PNG})


async def test_downloads_of_one_request_run_four_at_a_time(gateway, respx_mock, provider):
    name, config, chat, route = provider
    counting = Counting(hold=4)
    respx_mock.route(host="127.0.0.1").pass_through()
    async with Served(counting) as server:
        urls = [f"{server.url}/{i}.png" for i in range(12)]
        r = await gateway(config(allowPrivateNetworks=True)).post("/v1/chat/completions",
                                                                  json=chat(*urls))
    assert r.status_code == 200, r.text
    assert counting.peak == 4 and counting.served == 12
    assert len(sent_images(name, route)) == 12


async def test_downloads_at_once_are_bounded_across_requests(gateway, respx_mock, provider):
    name, config, chat, route = provider
    counting = Counting(hold=3)
    respx_mock.route(host="127.0.0.1").pass_through()
    async with Served(counting) as server:
        client = gateway(config(allowPrivateNetworks=True, maxConcurrent=3,
                                maxConcurrentPerRequest=2))
        answers = await asyncio.gather(*(
            client.post("/v1/chat/completions",
                        json=chat(*[f"{server.url}/{n}-{i}.png" for i in range(4)]))
            for n in range(3)))
    assert [r.status_code for r in answers] == [200, 200, 200]
    assert counting.peak == 3 and counting.served == 12


# ---- a normal multimodal chat -----------------------------------------------------------

async def test_defaults_take_a_normal_multimodal_chat(gateway, respx_mock, provider):
    name, config, chat, route = provider
    images = respx_mock.route(host="img.test").mock(
        side_effect=lambda request: image_answer(2 * MiB))
    urls = [DATA_URL, "https://img.test/a.png", "https://img.test/b.png", DATA_URL,
            "https://img.test/c.png"]
    r = await gateway(config()).post("/v1/chat/completions", json=chat(*urls))
    assert r.status_code == 200, r.text
    assert images.call_count == 3
    assert images.calls.last.request.headers["accept-encoding"] == "identity"
    sent = sent_images(name, route)
    assert len(sent) == 5 and len(base64.b64decode(sent[1])) == 2 * MiB


async def test_defaults_take_twenty_small_images(gateway, respx_mock, provider):
    name, config, chat, route = provider
    respx_mock.route(host="img.test").mock(return_value=image_answer(1000))
    urls = [f"https://img.test/{i}.png" for i in range(10)] + [DATA_URL] * 10
    r = await gateway(config()).post("/v1/chat/completions", json=chat(*urls, per_message=4))
    assert r.status_code == 200, r.text
    assert len(sent_images(name, route)) == 20


# ---- configuration ----------------------------------------------------------------------

def test_limits_defaults_and_validation():
    from aiproxy_middleware.transforms.fetch_policy import ImageLimits

    conf = {"provider": {"type": "gemini", "apiTokens": ["k"]}}
    assert load_config(conf).image_fetch.policy.limits == ImageLimits(
        max_images=20, max_image_bytes=20 * MiB, max_total_bytes=50 * MiB, per_request=4,
        overall=32)
    limits = load_config({**conf, "imageFetch": {
        "maxImages": 5, "maxImageBytes": 10, "maxTotalBytes": 20, "maxConcurrentPerRequest": 2,
        "maxConcurrent": 8}}).image_fetch.policy.limits
    assert limits == ImageLimits(5, 10, 20, 2, 8)
    for bad, where in [
        ({"maxImages": 0}, "imageFetch.maxImages: "),
        ({"maxImages": -1}, "imageFetch.maxImages: "),
        ({"maxImages": "20"}, "imageFetch.maxImages: "),
        ({"maxImageBytes": 1.5}, "imageFetch.maxImageBytes: "),
        ({"maxTotalBytes": "50MiB"}, "imageFetch.maxTotalBytes: "),
        ({"maxTotalBytes": 0}, "imageFetch.maxTotalBytes: "),
        ({"maxConcurrentPerRequest": 0}, "imageFetch.maxConcurrentPerRequest: "),
        ({"maxConcurrent": None}, "imageFetch.maxConcurrent: "),
        ({"maxConcurrent": True}, "imageFetch.maxConcurrent: "),
        ({"maxTotalSize": 5}, "imageFetch.maxTotalSize: unknown field"),
    ]:
        with pytest.raises(ConfigError) as info:
            load_config({**conf, "imageFetch": bad})
        assert str(info.value).startswith(where), str(info.value)
