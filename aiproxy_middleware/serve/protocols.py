"""uvicorn's HTTP/1.1 protocols with bounds on request headers, for `aiproxy serve`.

uvicorn bounds an idle connection only after a response (`timeout_keep_alive`): a client
that connects and sends nothing, or half its headers, holds the connection for ever, and
`limit_concurrency` counts it, so a few hundred of them turn every real request into a 503.
With httptools, headers have no size bound either (a never-ending header grows the
process's memory). These protocols close a connection whose request line and headers have
not all arrived within `AIPROXY_HEADER_TIMEOUT` seconds of its opening or of the request's
first byte, and answer 431 to headers past `AIPROXY_HEADER_LIMIT` bytes. (Bodies are the
middleware's: `requestReadTimeout`.) They read their bounds from the environment, so
`--workers` processes get them too.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

HEADER_TIMEOUT_ENV = "AIPROXY_HEADER_TIMEOUT"
HEADER_LIMIT_ENV = "AIPROXY_HEADER_LIMIT"
DEFAULT_HEADER_TIMEOUT = 10.0
DEFAULT_HEADER_LIMIT = 16384
LINGER = 2.0
"""Seconds a refused connection keeps reading (and dropping) what the client still sends
before it closes: closing on unread bytes resets the connection, and a reset can destroy
the 431 before the client reads it."""
_TOO_LARGE_BODY = b"request header fields too large"
_TOO_LARGE = (b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: text/plain\r\n"
              b"content-length: %d\r\nconnection: close\r\n\r\n%s"
              % (len(_TOO_LARGE_BODY), _TOO_LARGE_BODY))


class _HeaderBounds:
    """While the connection waits for a request's headers (no request yet, or the last one
    answered), a timer runs and the bytes received are counted; the app's start ends both."""

    cycle: Any
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timeout = float(os.environ.get(HEADER_TIMEOUT_ENV, DEFAULT_HEADER_TIMEOUT))
        self._header_limit = int(os.environ.get(HEADER_LIMIT_ENV, DEFAULT_HEADER_LIMIT))
        self._header_timer: asyncio.TimerHandle | None = None
        self._header_bytes = 0
        self._refused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (BaseTransport, as asyncio.BaseProtocol has it: the mixin must take what every
        # base of the protocols it is mixed into takes)
        super().connection_made(transport)  # type: ignore[misc]
        self._header_timer = self.loop.call_later(self._header_timeout, self._headers_late)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # (lingering: see `_refuse`)
        super().data_received(data)  # type: ignore[misc]
        if self._awaiting_headers():
            self._header_bytes += len(data)
            if self._header_bytes > self._header_limit and not self.transport.is_closing():
                self._refuse()
            elif self._header_timer is None:
                self._header_timer = self.loop.call_later(self._header_timeout,
                                                          self._headers_late)
        else:
            self._header_bytes = 0
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        super().connection_lost(exc)  # type: ignore[misc]

    def _refuse(self) -> None:
        """Answer 431 and end the connection: our side is shut at once, then what the client
        still sends is read and dropped for `LINGER` seconds before the close."""
        self._refused = True
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        transport = self.transport
        transport.write(_TOO_LARGE)
        if transport.can_write_eof():
            transport.write_eof()
            self.loop.call_later(LINGER, transport.close)
        else:
            transport.close()

    def _awaiting_headers(self) -> bool:
        cycle = self.cycle
        return cycle is None or cycle.response_complete

    def _headers_late(self) -> None:
        self._header_timer = None
        if self._awaiting_headers() and not self.transport.is_closing():
            self.transport.close()


class H11WithHeaderBounds(_HeaderBounds, H11Protocol):
    pass


# Given to uvicorn as classes: uvicorn before 0.31 takes an import string only from its own
# table of names. (A worker process unpickles them by their module and name.)
PROTOCOLS: dict[str, type[asyncio.Protocol]] = {"h11": H11WithHeaderBounds}

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # httptools is not installed: `--http httptools` is refused earlier
    pass
else:
    class HttpToolsWithHeaderBounds(_HeaderBounds, HttpToolsProtocol):
        pass

    PROTOCOLS["httptools"] = HttpToolsWithHeaderBounds
