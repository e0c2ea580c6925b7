"""AWS plumbing for the Bedrock provider: Signature Version 4, and the event-stream decoder.

Both are small and dependency-free (hashlib, hmac, zlib); the tests check the signature
against botocore's `SigV4Auth` byte for byte.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
import time
import zlib
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

# ---- Signature Version 4 ----------------------------------------------------------------


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def canonical_uri(path: str) -> str:
    """The canonical URI of a non-S3 service: the (already encoded) path encoded once more."""
    segments = [s for s in path.split("/") if s]
    uri = "/" + "/".join(segments)
    if path.endswith("/") and segments:
        uri += "/"
    return quote(uri, safe="/~")


def sigv4_headers(method: str, url: str, headers: dict[str, str], body: bytes, *,
                  access_key: str, secret_key: str, region: str, service: str,
                  session_token: str | None = None, now: float | None = None) -> dict[str, str]:
    """The headers that sign a request: `X-Amz-Date`, `X-Amz-Security-Token`, `Authorization`.

    Signs `host`, every header in `headers`, and the date (and token) headers; the payload
    hash is the SHA-256 of `body` as it will be sent.
    """
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))
    added = {"X-Amz-Date": stamp}
    if session_token:
        added["X-Amz-Security-Token"] = session_token
    parts = urlsplit(url)
    signed: dict[str, str] = {"host": parts.netloc.lower()}
    for name, value in {**headers, **added}.items():
        signed[name.lower()] = " ".join(value.split())
    names = sorted(signed)
    pairs = sorted(p.partition("=")[::2] for p in parts.query.split("&")) if parts.query else []
    query = "&".join(f"{k}={v}" for k, v in pairs)  # as sent (already encoded), by key
    canonical = "\n".join([
        method.upper(), canonical_uri(parts.path), query,
        "".join(f"{n}:{signed[n]}\n" for n in names), ";".join(names),
        hashlib.sha256(body).hexdigest()])
    scope = f"{stamp[:8]}/{region}/{service}/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", stamp, scope,
                         hashlib.sha256(canonical.encode()).hexdigest()])
    key = _hmac(("AWS4" + secret_key).encode(), stamp[:8])
    for part in (region, service, "aws4_request"):
        key = _hmac(key, part)
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    added["Authorization"] = (f"AWS4-HMAC-SHA256 Credential={access_key}/{scope},"
                              f" SignedHeaders={';'.join(names)}, Signature={signature}")
    return added


# ---- application/vnd.amazon.eventstream -------------------------------------------------

PRELUDE = 12  # total length, headers length, prelude CRC32
MAX_MESSAGE = 16 * 1024 * 1024


class EventStreamError(ValueError):
    """The byte stream is not valid event-stream framing (bad length or CRC)."""


class MessageTooLarge(EventStreamError):
    """A message longer than the decoder's `max_message` (checked from its prelude, before
    the message is held)."""


@dataclass(slots=True)
class Message:
    headers: dict[str, Any]
    payload: bytes


# Header value types: fixed sizes, or None for 2-byte length-prefixed values.
_FIXED = {0: 0, 1: 0, 2: 1, 3: 2, 4: 4, 5: 8, 8: 8, 9: 16}


def _headers(data: bytes) -> dict[str, Any]:
    headers: dict[str, Any] = {}
    i, end = 0, len(data)
    try:
        while i < end:
            n = data[i]
            name = data[i + 1:i + 1 + n].decode()
            i += 1 + n
            kind = data[i]
            i += 1
            if kind in (6, 7):
                (size,) = struct.unpack_from(">H", data, i)
                raw = data[i + 2:i + 2 + size]
                if len(raw) != size:
                    raise EventStreamError("a header value runs past the headers")
                value: Any = raw.decode() if kind == 7 else raw
                i += 2 + size
            elif kind in _FIXED:
                size = _FIXED[kind]
                raw = data[i:i + size]
                if len(raw) != size:
                    raise EventStreamError("a header value runs past the headers")
                value = {0: True, 1: False}.get(kind, raw)
                if kind in (2, 3, 4, 5, 8):
                    value = int.from_bytes(raw, "big", signed=True)
                i += size
            else:
                raise EventStreamError(f"unknown header value type {kind}")
            headers[name] = value
    except (IndexError, UnicodeDecodeError, struct.error):
        raise EventStreamError("malformed headers") from None
    return headers


class EventStreamDecoder:
    """Decodes event-stream messages from bytes fed in reads of any size, checking CRCs."""

    __slots__ = ("_buffer", "max_message")

    def __init__(self, max_message: int = MAX_MESSAGE) -> None:
        self._buffer = bytearray()
        self.max_message = max_message

    @property
    def pending(self) -> int:
        """Bytes held of a message not yet complete."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Message]:
        self._buffer += data
        messages = []
        buf = self._buffer
        while len(buf) >= PRELUDE:
            total, header_len, prelude_crc = struct.unpack_from(">III", buf, 0)
            if zlib.crc32(bytes(buf[:8])) != prelude_crc:
                raise EventStreamError("prelude CRC mismatch")
            if total < PRELUDE + 4 + header_len or total > MAX_MESSAGE:
                raise EventStreamError(f"invalid message length {total}")
            if total > self.max_message:
                raise MessageTooLarge(f"a message of {total} bytes")
            if len(buf) < total:
                break
            frame = bytes(buf[:total])
            del buf[:total]
            (crc,) = struct.unpack_from(">I", frame, total - 4)
            if zlib.crc32(frame[:-4]) != crc:
                raise EventStreamError("message CRC mismatch")
            headers = _headers(frame[PRELUDE:PRELUDE + header_len])
            messages.append(Message(headers, frame[PRELUDE + header_len:-4]))
        return messages
