"""Moonshot AI / Kimi (`type: moonshot`).

- Host `https://api.moonshot.cn`, chat at `/v1/chat/completions`, Bearer auth.
  No embeddings API.
- Streaming: Moonshot reports a stream's usage inside the last chunk's choice
  (`choices[i].usage`); it is moved to the chunk's top-level `usage`, where OpenAI clients
  look for it. Every other byte of the stream is relayed as it came.
- Source: Kimi API docs (platform.kimi.com/docs/api/overview): base URL
  `https://api.moonshot.cn/v1`, `Authorization: Bearer $MOONSHOT_API_KEY`; the API reference
  lists chat, files, batches, models, token estimation and balance, no embeddings.
  Same as Higress.
- `moonshotFileId`: the id of a file uploaded to Moonshot with purpose `file-extract`. On
  the first chat request its extracted text is fetched (`GET /v1/files/{id}/content`, Bearer
  auth with the request's token, as Moonshot's file-QA guide does) and kept; every chat
  request gets it as a system message before its first non-system message. A failed fetch
  is a 502 naming the file (and is tried again on the next request). Higress parses this
  field and never uses it. It cannot be combined with `context`.
  Source: platform.moonshot.cn/docs/api/files, platform.kimi.com/docs/api/files-content.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any
from urllib.parse import quote

import httpx
import msgspec
from msgspec import Struct

from aiproxy_middleware.provider_api import (CachedText, Call, ConfigError, Endpoint, ProxyError,
                                             WholeEvents, decode_json, event_limit, insert_system,
                                             upstream_url)

from ._compatible import OpenAICompatible

_EVENT_END = re.compile(rb"\r?\n\r?\n")
_LINE = re.compile(rb"\r?\n")
logger = logging.getLogger("aiproxy_middleware")


class Settings(Struct, rename="camel", forbid_unknown_fields=True):
    moonshot_file_id: str = ""


class Moonshot(OpenAICompatible[Settings]):
    name = "moonshot"
    default_base_url = "https://api.moonshot.cn"
    embeddings_path = None

    def __init__(self, config: Any, settings: Settings) -> None:
        super().__init__(config, settings)
        self._file: MoonshotFile | None = None
        if settings.moonshot_file_id:
            if config.context is not None:
                raise ConfigError("moonshotFileId: cannot be combined with context (give the"
                                  " model one file: the Moonshot file or the context file)")
            self._file = MoonshotFile(self.base_url(), settings.moonshot_file_id, self.timeout)

    async def prepare(self, call: Call, client: httpx.AsyncClient) -> None:
        if self._file is not None and call.endpoint is Endpoint.CHAT:
            insert_system(call.body, await self._file.text(self.client(client), call.token))

    def stream_converter(self, call: Call) -> UsageLifter | None:
        return UsageLifter() if call.endpoint is Endpoint.CHAT else None


class UsageLifter:
    """Moves `choices[].usage` to the top level, one SSE event at a time (held whole, and
    bounded, by `WholeEvents`)."""

    def __init__(self) -> None:
        self._whole = WholeEvents(event_limit.get())

    def feed(self, data: bytes) -> bytes:
        buffer = self._whole.feed(data)
        out = []
        start = 0
        for end in _EVENT_END.finditer(buffer):
            out.append(_lift(buffer[start:end.start()]) + end.group())
            start = end.end()
        if start < len(buffer):  # CR-only line ends: passed on as they are
            out.append(buffer[start:])
        return b"".join(out)

    def close(self) -> bytes:
        return _lift(self._whole.rest)


def _lift(event: bytes) -> bytes:
    """The event with its chunk's usage at the top level; unchanged when there is none."""
    if b'"usage"' not in event:
        return event
    lines = _LINE.split(event)
    data = [i for i, line in enumerate(lines) if line.startswith(b"data:")]
    if len(data) != 1:
        return event
    try:
        chunk = decode_json(lines[data[0]][5:])
    except msgspec.DecodeError:
        return event
    if not isinstance(chunk, dict) or not isinstance(chunk.get("choices"), list):
        return event
    usages = [choice.pop("usage") for choice in chunk["choices"]
              if isinstance(choice, dict) and "usage" in choice]
    if not usages:
        return event
    if chunk.get("usage") is None:
        chunk["usage"] = usages[0]
    lines[data[0]] = b"data: " + msgspec.json.encode(chunk)
    return b"\n".join(lines)


class MoonshotFile(CachedText):
    """A file's extracted text, from Moonshot's file API."""

    def __init__(self, base_url: str, file_id: str, timeout: float) -> None:
        super().__init__()
        self.file_id = file_id
        self._url = upstream_url(base_url, f"/v1/files/{quote(file_id, safe='')}/content")
        self._timeout = timeout

    async def _fetch(self, client: httpx.AsyncClient, *args: Any) -> str:
        token: str = args[0]
        failure = f"could not load Moonshot file {self.file_id}"
        try:
            async with asyncio.timeout(self._timeout):
                response = await client.get(self._url, headers={"Authorization": f"Bearer {token}"},
                                            timeout=self._timeout)
        except (TimeoutError, httpx.TimeoutException):
            raise _error(f"{failure}: no answer within {int(self._timeout * 1000)} ms") from None
        except httpx.HTTPError as exc:
            raise _error(f"{failure}: {type(exc).__name__}") from None
        if response.status_code != 200:
            raise _error(f"{failure}: HTTP {response.status_code}")
        return response.text


def _error(message: str) -> ProxyError:
    logger.warning("aiproxy: %s", message)
    return ProxyError(502, message, "upstream_error", "moonshot_file_unavailable")
