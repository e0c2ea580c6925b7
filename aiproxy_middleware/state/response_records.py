"""Stored responses (the Responses API's `store` and `previous_response_id`): each consumer's
last responses, kept in the middleware's `SharedStore` (this process, or Redis when `redis:`
is configured, so a follow-up turn works on any worker).

A record is one blob: the response id, the whole conversation so far in Responses item form
(earlier turns' items, this turn's input, this response's output) and the Response object,
encoded as msgspec JSON. A follow-up turn loads one record, never a chain.

Keys. A record's key is `responses:r:<hash of (consumer, response id)>`, and each consumer's
records form one group, `responses:c:<hash of consumer>`, that keeps its newest
`max_per_consumer` (older ones are deleted as a newer one is saved: atomically, in one Lua
script on Redis). Neither a consumer name nor an id enters a key as it was spelled (only a
BLAKE2b digest of both, length-prefixed by JSON encoding), so no spelling reaches another
key; and another consumer's id is simply a key that does not exist: a 404, like an unknown
id. With no identity configured (no consumers, no `authenticate` hook and no
`x-mse-consumer` header), the consumer is None and every caller shares one namespace: anyone
who knows a response id (random, 128 bits) may read or delete it.

Limits (each has a default; the config's top-level `responses:` sets them): a record lives
`ttl` seconds; at most `max_per_consumer` per consumer (0: nothing is stored); a record
larger than `max_bytes` is not stored (a warning is logged): a later request naming it in
`previous_response_id` is a 400 `previous_response_not_found`, and a GET of it a 404, as for
an expired or deleted one. The store bounds its own total too (`MemoryStore`'s blob limits).

Use: `save` after a stored answer; `previous(consumer, id)` for a request's
`previous_response_id` (the record, or the 400 naming the field; a 503 while Redis is down);
`load` and `delete` for the GET and DELETE endpoints (pipeline/stored_responses.py).
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from typing import Any

import msgspec

from aiproxy_middleware.errors import ProxyError
from aiproxy_middleware.state.store import MemoryStore, SharedStore

logger = logging.getLogger("aiproxy_middleware")

DEFAULT_TTL = 86_400.0
"""Seconds a stored response is kept (a day)."""
DEFAULT_MAX_PER_CONSUMER = 100
DEFAULT_MAX_BYTES = 4 * 1024 * 1024
"""Bytes one record may take: it holds the whole conversation so far."""

RESPONSE_ID = re.compile(r"resp_[A-Za-z0-9_-]{1,120}")
"""What a response id may be (ours and OpenAI's: `resp_` and letters, digits, `_`, `-`)."""


@dataclass(frozen=True, slots=True)
class ResponsesSettings:
    """The config's `responses:` (validated by the loader)."""

    ttl: float = DEFAULT_TTL
    max_per_consumer: int = DEFAULT_MAX_PER_CONSUMER
    max_bytes: int = DEFAULT_MAX_BYTES


class Record(msgspec.Struct, forbid_unknown_fields=False):
    """One stored response."""

    id: str
    items: list[dict[str, Any]]
    """The whole conversation so far in Responses item form, this response's output last."""
    response: dict[str, Any]
    """The Response object as it was answered."""


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(Record).decode


def plain_id(response_id: object) -> bool:
    """`response_id` is a response id as this gateway (or OpenAI) spells one."""
    return isinstance(response_id, str) and RESPONSE_ID.fullmatch(response_id) is not None


def previous_not_found(response_id: str) -> ProxyError:
    """The 400 for a `previous_response_id` that names no stored response of the caller
    (unknown, another consumer's, expired, deleted, or too large to have been stored)."""
    shown = response_id if plain_id(response_id) else "(not a response id)"
    return ProxyError(400, f"Previous response with id '{shown}' not found.",
                      "invalid_request_error", "previous_response_not_found",
                      "previous_response_id")


def store_unreachable() -> ProxyError:
    return ProxyError(503, "stored responses cannot be reached now (the shared store does not"
                      " answer); try again later", "server_error", "store_unavailable")


def _digest(*parts: str) -> str:
    # JSON-encoding the parts first keeps ("a:b", "c") and ("a", "b:c") apart
    return hashlib.blake2b(_encode(parts), digest_size=16).hexdigest()


class ResponseRecords:
    """Each consumer's last responses in a `SharedStore` (see the module's docstring)."""

    def __init__(self, store: Any, ttl: float = DEFAULT_TTL,
                 max_per_consumer: int = DEFAULT_MAX_PER_CONSUMER,
                 max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if not hasattr(store, "blob_get"):
            # A store written before blobs existed (passed as `store=`): responses are then
            # kept in this process.
            store = MemoryStore()
        self.store: SharedStore = store
        self.ttl = ttl
        self.max_per_consumer = max_per_consumer
        self.max_bytes = max_bytes

    @classmethod
    def configured(cls, store: Any, settings: ResponsesSettings | None) -> ResponseRecords:
        s = settings or ResponsesSettings()
        return cls(store, s.ttl, s.max_per_consumer, s.max_bytes)

    @property
    def reachable(self) -> bool:
        """False while the store cannot be reached (a `None` from `load` then means
        "unknown", not "not stored")."""
        return self.store.reachable

    @staticmethod
    def _keys(consumer: str | None, response_id: str) -> tuple[str, str]:
        who = consumer or ""
        return f"responses:r:{_digest(who, response_id)}", f"responses:c:{_digest(who)}"

    async def save(self, consumer: str | None, response_id: str, items: list[dict[str, Any]],
                   response: dict[str, Any]) -> bool:
        """Keep a response for `consumer` (replacing one of the same id); whether it was
        kept (not: storing is off, the id is not plain, or the record is over `max_bytes`).
        A store that is down skips it (and has logged so)."""
        if self.max_per_consumer < 1 or not plain_id(response_id):
            return False
        data = _encode(Record(response_id, items, response))
        if len(data) > self.max_bytes:
            logger.warning("aiproxy: response %s is not stored: its record (the conversation"
                           " so far) is %d bytes, over responses.maxBytes (%d); a later"
                           " previous_response_id naming it is a 400", response_id,
                           len(data), self.max_bytes)
            return False
        key, group = self._keys(consumer, response_id)
        await self.store.blob_set(key, data, self.ttl, group=group, keep=self.max_per_consumer)
        return True

    async def load(self, consumer: str | None, response_id: str) -> Record | None:
        """`consumer`'s response of that id, or None (unknown, another consumer's, expired,
        deleted, never stored; or the store is unreachable: see `reachable`)."""
        if not plain_id(response_id):
            return None
        data = await self.store.blob_get(self._keys(consumer, response_id)[0])
        if data is None:
            return None
        try:
            record = _decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            logger.warning("aiproxy: stored response %s cannot be read; answering as if it"
                           " were not stored", response_id)
            return None
        return record if record.id == response_id else None

    async def previous(self, consumer: str | None, response_id: object) -> Record:
        """The record a request's `previous_response_id` names: a 400 naming the field when
        `consumer` has none of that id, a 503 while the store cannot be reached."""
        record = (await self.load(consumer, response_id) if isinstance(response_id, str)
                  else None)
        if record is not None:
            return record
        if not self.reachable:
            raise store_unreachable()
        raise previous_not_found(str(response_id))

    async def delete(self, consumer: str | None, response_id: str) -> bool:
        """Delete `consumer`'s response of that id; whether there was one."""
        if not plain_id(response_id):
            return False
        key, group = self._keys(consumer, response_id)
        return await self.store.blob_delete(key, group=group)
