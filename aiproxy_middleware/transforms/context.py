"""`context`: a plain-text file fetched once and given to the model as a system message."""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from aiproxy_middleware.errors import ProxyError
from aiproxy_middleware.wire.json_body import JsonBody

logger = logging.getLogger("aiproxy_middleware")


class CachedText:
    """A text fetched on first use and kept; a failed fetch is not kept (the next request
    tries again). Subclasses say how to fetch it."""

    def __init__(self) -> None:
        self._text: str | None = None
        self._lock = asyncio.Lock()

    async def text(self, client: httpx.AsyncClient, *args: Any) -> str:
        if self._text is not None:
            return self._text
        async with self._lock:
            if self._text is None:
                self._text = await self._fetch(client, *args)
        return self._text

    async def _fetch(self, client: httpx.AsyncClient, *args: Any) -> str:
        raise NotImplementedError


def insert_system(body: JsonBody, text: str) -> None:
    """Add `text` as a system message before the body's first non-system message."""
    messages: list[Any] = body.get("messages", list, None) or []
    if not messages:
        return  # nothing to add to; the request's own check answers it
    at = next((i for i, m in enumerate(messages)
               if not (isinstance(m, dict) and m.get("role") == "system")), len(messages))
    messages.insert(at, {"role": "system", "content": text})
    body.set("messages", messages)


class ContextFile(CachedText):
    """Fetches `fileUrl` from `serviceName:servicePort` on first use and keeps its text.

    A failed fetch is not kept: the next request tries again. The URL and `Host` are fixed
    here, from config only: no part of a client's request (path, query, headers, body)
    reaches them, so a client cannot point this fetch anywhere (the image-URL rule in
    `fetch_policy` is for the URLs clients do send).
    """

    def __init__(self, file_url: str, service_name: str, service_port: int,
                 timeout: float) -> None:
        super().__init__()
        parts = urlsplit(file_url if "://" in file_url else f"http://{file_url}")
        self.name = file_url
        self._url = urlunsplit((parts.scheme, f"{service_name}:{service_port}", parts.path or "/",
                                parts.query, ""))
        self._host = parts.netloc
        self._timeout = timeout

    async def _fetch(self, client: httpx.AsyncClient, *args: Any) -> str:
        failure = f"could not load the context file {self.name}"
        try:
            async with asyncio.timeout(self._timeout):
                response = await client.get(self._url, headers={"Host": self._host},
                                            timeout=self._timeout)
        except (TimeoutError, httpx.TimeoutException):
            raise self._error(f"{failure}: no answer within {int(self._timeout * 1000)} ms") from None
        except httpx.HTTPError as exc:
            raise self._error(f"{failure}: {type(exc).__name__}") from None
        if response.status_code != 200:
            raise self._error(f"{failure}: HTTP {response.status_code}")
        return response.text

    @staticmethod
    def _error(message: str) -> ProxyError:
        logger.warning("aiproxy: %s", message)
        return ProxyError(502, message, "upstream_error", "context_unavailable")

    async def insert(self, body: JsonBody, client: httpx.AsyncClient) -> None:
        """Add the file as a system message before the first non-system message."""
        if not body.get("messages", list, None):
            return  # nothing to add to; the request's own check answers it
        insert_system(body, await self.text(client))
