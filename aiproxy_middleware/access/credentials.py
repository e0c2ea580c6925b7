"""Consumers' credentials, kept as keyed hashes only, and where a request carries one.

Once loaded, no credential is held in memory as it was configured: each is kept as a keyed
BLAKE2b hash (BLAKE2's own MAC mode: a third of HMAC-SHA256's cost per request) under a key
drawn at random when the table is built. A presented credential is
hashed the same way and looked up by its hash; the dict lookup compares hashes the caller
cannot predict (the key is secret), and the hit is confirmed with `hmac.compare_digest`, so
how long a refusal takes says nothing about how close a guess was.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_to_bytes

Scope = dict[str, Any]

AMBIGUOUS = object()
"""`KeyPlaces.read`'s answer for a request carrying two different credentials (or one
place twice): refused, rather than guessing which one was meant."""

IDENTITY_HEADERS = frozenset({b"x-mse-consumer", b"x-consumer-username"})
"""Headers naming a consumer (Higress's and APISIX's): once the gateway identifies the
caller itself, a client's own are dropped, so none can pose as another consumer."""


class Credentials:
    """Consumer names by the keyed hash of their credentials."""

    __slots__ = ("_key", "_names")

    def __init__(self) -> None:
        self._key = os.urandom(32)
        self._names: dict[bytes, tuple[bytes, str]] = {}

    def _digest(self, credential: bytes) -> bytes:
        return hashlib.blake2b(credential, key=self._key, digest_size=32).digest()

    def add(self, credential: str, name: str) -> str | None:
        """Keep `credential` (its hash) for `name`; the consumer already holding the same
        credential, if any (then nothing is added)."""
        digest = self._digest(credential.encode("utf-8"))
        held = self._names.get(digest)
        if held is None:
            self._names[digest] = (digest, name)
            return None
        return held[1]

    def find(self, presented: bytes) -> str | None:
        """The consumer whose credential `presented` is, or None."""
        digest = self._digest(presented)
        entry = self._names.get(digest)
        if entry is None:
            return None
        kept, name = entry
        return name if hmac.compare_digest(kept, digest) else None

    def __len__(self) -> int:
        return len(self._names)


@dataclass(frozen=True, slots=True)
class KeyPlaces:
    """Where a request's credential is looked for: request headers (a header named
    `authorization` holds `Bearer KEY`) and query parameters."""

    headers: tuple[bytes, ...]
    """Lower-case header names."""
    query: tuple[bytes, ...] = ()
    """Query parameter names, as bytes (compared after percent-decoding)."""
    header_first: bool = False
    """APISIX: the header is read, the query only when the header brings none; otherwise
    every place is read and two different credentials are refused."""

    def read(self, scope: Scope) -> bytes | object | None:
        """The credential the request carries (bytes), None when it carries none, or
        `AMBIGUOUS`."""
        found: list[bytes] = []
        seen: set[bytes] = set()
        wanted = self.headers
        for name, value in scope["headers"]:
            name = name.lower()
            if name not in wanted:
                continue
            if name in seen:  # one place twice (two Authorization headers): malformed
                return AMBIGUOUS
            seen.add(name)
            # (leading and trailing blanks are not part of a header's value in HTTP)
            value = value.strip(b" \t")
            if name == b"authorization":
                value = _bearer(value)
            if value:
                found.append(value)
        if self.query and not (self.header_first and found):
            args: set[bytes] = set()
            for key, value in _args(scope.get("query_string") or b""):
                if key in self.query:
                    if key in args:
                        return AMBIGUOUS
                    args.add(key)
                    if value:
                        found.append(value)
        if not found:
            return None
        first = found[0]
        if any(other != first for other in found[1:]):
            return AMBIGUOUS
        return first

    def strip(self, scope: Scope) -> Scope:
        """`scope` without the places a credential may be in, nor the client's own
        consumer headers: what the rest of the pipeline (and every upstream) sees."""
        gone = self.headers
        headers = [(n, v) for n, v in scope["headers"]
                   if n.lower() not in gone and n.lower() not in IDENTITY_HEADERS]
        query = scope.get("query_string") or b""
        if self.query and query:
            parts = [p for p in query.split(b"&") if _arg_name(p) not in self.query]
            query = b"&".join(parts)
        return {**scope, "headers": headers, "query_string": query}


def without_identity(scope: Scope) -> Scope:
    """`scope` without the client's own consumer headers (a hook named the consumer)."""
    headers = [(n, v) for n, v in scope["headers"] if n.lower() not in IDENTITY_HEADERS]
    return {**scope, "headers": headers}


def _bearer(value: bytes) -> bytes | None:
    """The token of `Bearer TOKEN` (the scheme in any case, as HTTP reads it; blanks
    between scheme and token as RFC 6750 allows); None for another scheme."""
    scheme, _, token = value.partition(b" ")
    if scheme.lower() != b"bearer":
        return None
    return token.strip(b" \t") or None


def _unescape(raw: bytes) -> bytes:
    return unquote_to_bytes(raw.replace(b"+", b" "))


def _arg_name(part: bytes) -> bytes:
    return _unescape(part.partition(b"=")[0])


def _args(query: bytes) -> list[tuple[bytes, bytes]]:
    """The query's (name, value) pairs, percent-decoded as bytes (no charset guessed)."""
    out = []
    for part in query.split(b"&"):
        if part:
            name, _, value = part.partition(b"=")
            out.append((_unescape(name), _unescape(value)))
    return out
