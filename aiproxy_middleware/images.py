"""Fetching image URLs for providers that take only inline image bytes.

Which URLs may be fetched, and how the connection is made, is `fetch_policy`'s rule.
"""

from __future__ import annotations

import asyncio
import base64

import httpx
from msgspec import UNSET

from .errors import bad_request
from .fetch_policy import DEFAULT_POLICY, ImagePolicy
from .openai import ChatCompletionRequest, ImageURL

MAX_IMAGE_BYTES = 20 * 1024 * 1024
IMAGE_TIMEOUT = 30.0


async def inline_image_urls(request: ChatCompletionRequest, client: httpx.AsyncClient,
                            max_bytes: int = MAX_IMAGE_BYTES,
                            timeout: float = IMAGE_TIMEOUT,
                            policy: ImagePolicy = DEFAULT_POLICY) -> None:
    """Replace every http(s) image URL in the request with a `data:` URL of its bytes.

    Every URL is checked against `policy` first (a refused one is a 400
    `image_url_not_allowed`, and nothing is fetched). Each image is then fetched once, all
    of them at the same time, each within `timeout` seconds and `max_bytes`, over
    connections to the addresses the check approved (not through `client`, whose
    connections would resolve the names again); a failed fetch is a 400 that names the URL.
    """
    parts = [part.image_url for message in request.messages
             if isinstance(message.content, list) for part in message.content
             if part.type == "image_url" and part.image_url is not UNSET
             and part.image_url.url[:8].lower().startswith(("http://", "https://"))]
    if not parts:
        return
    urls = list(dict.fromkeys(p.url for p in parts))  # type: ignore[union-attr]
    try:
        async with asyncio.timeout(timeout):
            vetted = await asyncio.gather(*(policy.vet(u) for u in urls))
    except TimeoutError:
        raise bad_request(f"could not fetch the image {urls[0]}: its host name was not resolved"
                          f" within {timeout:g} s", "image_fetch_failed", "messages") from None
    async with policy.client(vetted) as pinned:
        fetched = await asyncio.gather(*(_fetch(u, v.url, pinned, max_bytes, timeout)
                                         for u, v in zip(urls, vetted)))
    data = dict(zip(urls, fetched))
    for part in parts:
        assert isinstance(part, ImageURL)
        part.url = data[part.url]


async def _fetch(url: str, parsed: httpx.URL, client: httpx.AsyncClient, max_bytes: int,
                 timeout: float) -> str:
    def failed(why: str) -> Exception:
        return bad_request(f"could not fetch the image {url}: {why}", "image_fetch_failed",
                           "messages")
    try:
        async with asyncio.timeout(timeout):
            async with client.stream("GET", parsed, timeout=timeout) as response:
                if response.is_redirect:
                    raise failed(f"HTTP {response.status_code} (redirects are not followed)")
                if response.status_code != 200:
                    raise failed(f"HTTP {response.status_code}")
                mime = response.headers.get("content-type", "").split(";")[0].strip().lower()
                if not mime.startswith("image/"):
                    raise failed(f"the answer is {mime or 'untyped'}, not an image")
                size, chunks = 0, []
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > max_bytes:
                        raise failed(f"larger than {max_bytes} bytes")
                    chunks.append(chunk)
    except TimeoutError:
        raise failed(f"no answer within {timeout:g} s") from None
    except httpx.HTTPError as exc:
        raise failed(type(exc).__name__) from None
    return f"data:{mime};base64,{base64.b64encode(b''.join(chunks)).decode()}"
