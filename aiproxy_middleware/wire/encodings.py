"""Undoing an upstream answer's `Content-Encoding`, within a size limit.

The gateway reads every upstream answer decoded: the credential scrubber, the answer tap
and the converters only understand plain bytes, and a `Content-Encoding` relayed with
bytes the gateway changed (or decoded) would break the client's decoding. It asks for
`identity`; an upstream that compresses anyway gets its `gzip`, `deflate` (zlib-wrapped or
raw) or `br` (when a `brotli` with bounded output, 1.2 or later, is installed) undone, as
many layers as it lists. Anything else cannot be relayed safely: `Undecodable`.

A compressed answer can inflate a thousandfold or more, so the decoder works in pieces of
at most `STEP` bytes per layer and stops (`TooBig`) as soon as what it decoded, or what it
read, passes its limit: a bomb costs the limit, never its inflated size.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

ACCEPT_ENCODING = "identity"
"""What the gateway asks upstreams for (what it cannot decode, it does not ask for)."""

STEP = 64 * 1024
"""Bytes one layer gives out at a time."""


class Undecodable(Exception):
    """An encoding the gateway cannot undo, or bytes that do not decode."""


class TooBig(Exception):
    """The answer passed the decoder's limit."""


def _brotli() -> tuple[Any, str]:
    """The brotli module and the name of its output limit, if one that bounds its output
    is installed (before 1.2 one call could inflate gigabytes)."""
    try:
        import brotli  # type: ignore[import-not-found]
    except ImportError:
        return None, ""
    for name in ("output_buffer_limit", "max_output_length"):  # (1.2.x; later)
        try:
            brotli.Decompressor().process(b"", **{name: 1})
        except TypeError:
            continue
        except Exception:  # noqa: BLE001 - some other failure: not usable
            break
        if hasattr(brotli.Decompressor, "can_accept_more_data"):
            return brotli, name
    return None, ""


BROTLI, _BROTLI_LIMIT = _brotli()
_BROTLI_STEP = {_BROTLI_LIMIT: STEP}


class _Zlib:
    __slots__ = ("_d", "_head", "_started")

    def __init__(self, wbits: int, raw_fallback: bool = False) -> None:
        self._d = zlib.decompressobj(wbits)
        self._head: bytes | None = b"" if raw_fallback else None
        """With the raw-deflate fallback: the bytes before the zlib header is known good."""
        self._started = False

    def decode(self, data: bytes) -> Iterator[bytes]:
        if self._head is not None:
            # `deflate` is zlib-wrapped by the standard; some servers send it raw. Its
            # first two bytes tell which.
            data = self._head + data
            if len(data) < 2:
                self._head = data
                return
            self._head = None
            try:
                self._d.decompress(data[:2])
                self._d = zlib.decompressobj(zlib.MAX_WBITS)
            except zlib.error:
                self._d = zlib.decompressobj(-zlib.MAX_WBITS)
        d = self._d
        self._started = self._started or bool(data)
        while True:
            if d.eof:
                return  # bytes after the end of the stream are not part of the answer
            try:
                out = d.decompress(data, STEP)
            except zlib.error:
                raise Undecodable("corrupt compressed data") from None
            if out:
                yield out
            data = d.unconsumed_tail
            if not data and len(out) < STEP:
                return

    def close(self) -> Iterator[bytes]:
        if self._head:
            raise Undecodable("the compressed answer was cut short")
        yield from self.decode(b"")
        if self._started and not self._d.eof:
            raise Undecodable("the compressed answer was cut short")


class _Brotli:
    __slots__ = ("_d", "_started")

    def __init__(self) -> None:
        self._d = BROTLI.Decompressor()
        self._started = False

    def decode(self, data: bytes) -> Iterator[bytes]:
        d = self._d
        try:
            out = b""
            if data:
                self._started = True
                out = d.process(data, **_BROTLI_STEP)
                if out:
                    yield out
            # Output held back by the limit comes out (with empty input) before more
            # input may go in.
            while len(out) >= STEP or not d.can_accept_more_data():
                out = d.process(b"", **_BROTLI_STEP)
                if not out:
                    return
                yield out
        except BROTLI.error:
            raise Undecodable("corrupt compressed data") from None

    def close(self) -> Iterator[bytes]:
        d = self._d
        try:
            while out := d.process(b"", **_BROTLI_STEP):
                yield out
        except BROTLI.error:
            raise Undecodable("corrupt compressed data") from None
        if self._started and not d.is_finished():
            raise Undecodable("the compressed answer was cut short")


def _layer(coding: str) -> _Zlib | _Brotli:
    if coding in ("gzip", "x-gzip"):
        return _Zlib(16 + zlib.MAX_WBITS)
    if coding == "deflate":
        return _Zlib(zlib.MAX_WBITS, raw_fallback=True)
    if coding == "br" and BROTLI is not None:
        return _Brotli()
    raise Undecodable(f"the encoding {coding[:40]!r} is not one the gateway decodes")


def codings(header: str) -> list[str]:
    """The codings a `Content-Encoding` value lists, in the order they were applied
    (`identity` left out)."""
    return [c for c in (part.strip().lower() for part in header.split(","))
            if c and c != "identity"]


class Decoder:
    """Undoes the codings of one answer, piece by piece, up to `limit` decoded (and read)
    bytes. Raises `Undecodable` (from the constructor for an unknown coding) or `TooBig`."""

    __slots__ = ("_layers", "limit", "read", "decoded")

    def __init__(self, header: str, limit: int) -> None:
        # The last coding applied is the first undone.
        self._layers = [_layer(c) for c in reversed(codings(header))]
        self.limit = limit
        self.read = 0
        self.decoded = 0

    def feed(self, data: bytes) -> bytes:
        self.read += len(data)
        if self.read > self.limit:
            raise TooBig
        return self._collect(self._through(0, data, False))

    def close(self) -> bytes:
        return self._collect(self._through(0, b"", True))

    def _collect(self, pieces: Iterator[bytes]) -> bytes:
        out = []
        for piece in pieces:
            self.decoded += len(piece)
            if self.decoded > self.limit:
                raise TooBig
            out.append(piece)
        return out[0] if len(out) == 1 else b"".join(out)

    def _through(self, i: int, data: bytes, end: bool) -> Iterator[bytes]:
        """What layer `i` and those after it make of `data` (and, at the end, of what they
        still hold)."""
        if i == len(self._layers):
            if data:
                yield data
            return
        layer = self._layers[i]
        for piece in layer.decode(data) if data or not end else ():
            yield from self._through(i + 1, piece, False)
        if end:
            for piece in layer.close():
                yield from self._through(i + 1, piece, False)
            yield from self._through(i + 1, b"", True)


def decoder_for(header: str | None, limit: int) -> Decoder | None:
    """The decoder for an answer with this `Content-Encoding` (None when there is nothing
    to undo)."""
    if not header or not codings(header):
        return None
    return Decoder(header, limit)


async def decoded(raw: AsyncIterator[bytes], decoder: Decoder) -> AsyncIterator[bytes]:
    """`raw`'s bytes decoded, one piece per read (possibly empty: a read happened)."""
    async for chunk in raw:
        yield decoder.feed(chunk)
    yield decoder.close()
