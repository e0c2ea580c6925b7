"""Fetching image URLs for providers that take only inline image bytes.

Which URLs may be fetched, and how the connection is made, is `fetch_policy`'s rule; how
much one request may fetch is its `ImageLimits`, enforced here while the bytes arrive.
"""

from __future__ import annotations

import asyncio
import base64
from collections import Counter
from collections.abc import Coroutine, Iterable
from typing import Any

import httpx
from msgspec import UNSET

from aiproxy_middleware.errors import ProxyError, bad_request
from aiproxy_middleware.transforms.fetch_policy import DEFAULT_POLICY, ImageLimits, ImagePolicy
from aiproxy_middleware.wire.openai import ChatCompletionRequest, ImageURL

IMAGE_TIMEOUT = 30.0
_IDENTITY = {"accept-encoding": "identity"}  # so the bytes read are the bytes counted


async def inline_image_urls(request: ChatCompletionRequest, client: httpx.AsyncClient,
                            timeout: float = IMAGE_TIMEOUT,
                            policy: ImagePolicy = DEFAULT_POLICY) -> None:
    """Replace every http(s) image URL in the request with a `data:` URL of its bytes.

    More than `policy.limits.max_images` image parts (any URL) is a 400 `too_many_images`
    before anything is resolved or fetched. Every URL is then checked against `policy` (a
    refused one is a 400 `image_url_not_allowed`, and nothing is fetched). Each image is
    fetched once, a few at a time (`ImageLimits`), each within `timeout` seconds, over
    connections to the addresses the check approved (not through `client`, whose
    connections would resolve the names again); a failed fetch is a 400 that names the URL.
    An image past `max_image_bytes`, or the request's images past `max_total_bytes`, is a
    413 as soon as its declared length or the bytes read so far say so: the download is
    closed and the request's other downloads are cancelled.
    """
    images = [part.image_url for message in request.messages
              if isinstance(message.content, list) for part in message.content
              if part.type == "image_url" and part.image_url is not UNSET]
    if not images:
        return
    limits = policy.limits
    if len(images) > limits.max_images:
        raise bad_request(f"the request has {len(images)} images; at most {limits.max_images}"
                          " are taken per request", "too_many_images", "messages")
    parts = [p for p in images if p.url[:8].lower().startswith(("http://", "https://"))]
    if not parts:
        return
    uses = Counter(p.url for p in parts)  # an image inlined twice is sent upstream twice
    urls = list(uses)
    try:
        async with asyncio.timeout(timeout):
            vetted = await asyncio.gather(*(policy.vet(u) for u in urls))
    except TimeoutError:
        raise bad_request(f"could not fetch the image {urls[0]}: its host name was not resolved"
                          f" within {timeout:g} s", "image_fetch_failed", "messages") from None
    budget = _Budget(limits)
    own = asyncio.Semaphore(limits.per_request)
    async with policy.client(vetted) as pinned:
        fetched = await _all(_fetch(u, v.url, pinned, uses[u], budget, own, timeout)
                             for u, v in zip(urls, vetted))
    data = dict(zip(urls, fetched))
    for part in parts:
        assert isinstance(part, ImageURL)
        part.url = data[part.url]


async def _all(coroutines: Iterable[Coroutine[Any, Any, str]]) -> list[str]:
    """Every coroutine's result; at the first failure the others are cancelled (their
    downloads closed) and that failure is raised."""
    tasks = [asyncio.ensure_future(c) for c in coroutines]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for task in tasks:
        if not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]
    return [task.result() for task in tasks]


class _Budget:
    """The bytes one image, and a request's fetches in all, may still read."""

    def __init__(self, limits: ImageLimits) -> None:
        self.limits = limits
        self.left = limits.max_total_bytes

    def image(self, url: str, size: int) -> None:
        """Refuse an image of `size` bytes (declared, or read so far)."""
        if size > self.limits.max_image_bytes:
            raise ProxyError(413, f"the image {url} is larger than"
                             f" {self.limits.max_image_bytes} bytes", "invalid_request_error",
                             "image_too_large", "messages")

    def total(self, size: int, take: bool) -> None:
        """Refuse `size` more bytes if they pass the request's total; else `take` them."""
        if size > self.left:
            raise ProxyError(413, f"the request's images are larger than"
                             f" {self.limits.max_total_bytes} bytes in all",
                             "invalid_request_error", "images_too_large", "messages")
        if take:
            self.left -= size


async def _fetch(url: str, parsed: httpx.URL, client: httpx.AsyncClient, uses: int,
                 budget: _Budget, own: asyncio.Semaphore, timeout: float) -> str:
    def failed(why: str) -> Exception:
        return bad_request(f"could not fetch the image {url}: {why}", "image_fetch_failed",
                           "messages")
    async with own, budget.limits.slots():
        try:
            async with asyncio.timeout(timeout):
                async with client.stream("GET", parsed, headers=_IDENTITY,
                                         timeout=timeout) as response:
                    if response.is_redirect:
                        raise failed(f"HTTP {response.status_code} (redirects are not followed)")
                    if response.status_code != 200:
                        raise failed(f"HTTP {response.status_code}")
                    mime = response.headers.get("content-type", "").split(";")[0].strip().lower()
                    if not mime.startswith("image/"):
                        raise failed(f"the answer is {mime or 'untyped'}, not an image")
                    coding = response.headers.get("content-encoding", "identity").lower()
                    if coding != "identity":  # its decoded size is unknown until decoded
                        raise failed(f"the answer is {coding}-encoded")
                    declared = response.headers.get("content-length", "")
                    if declared.isdigit():
                        budget.image(url, int(declared))
                        budget.total(int(declared) * uses, take=False)
                    size, chunks = 0, []
                    async for chunk in response.aiter_raw():
                        size += len(chunk)
                        budget.image(url, size)
                        budget.total(len(chunk) * uses, take=True)
                        chunks.append(chunk)
        except TimeoutError:
            raise failed(f"no answer within {timeout:g} s") from None
        except httpx.HTTPError as exc:
            raise failed(type(exc).__name__) from None
    return f"data:{mime};base64,{base64.b64encode(b''.join(chunks)).decode()}"
