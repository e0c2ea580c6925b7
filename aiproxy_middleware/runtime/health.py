"""Active health checks of `ai-proxy-multi` instances, run as asyncio background tasks.

The state machine is lua-resty-healthcheck's (which APISIX uses): consecutive successes
bring an instance up, consecutive failures of one kind (HTTP status, timeout, TCP) bring it
down; a success resets every failure counter and any failure resets the success counter.
A status in neither of the configured lists changes nothing.

Logs never carry a header value, a query value or a URL: instances' keys travel in them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Protocol
from urllib.parse import urlencode

import httpx

if TYPE_CHECKING:  # runtime sits below config: the check's fields are only read here
    from aiproxy_middleware.config.apisix.schema import ActiveCheck

logger = logging.getLogger("aiproxy_middleware")

Probe = Callable[[], Awaitable[int]]
"""Sends one probe to an instance and returns the HTTP status (200 for a TCP connect)."""


class HealthChecker:
    """One instance's active health check: probes it every interval and keeps its state."""

    def __init__(self, name: str, check: ActiveCheck, probe: Probe, *,
                 interval_scale: float = 1.0) -> None:
        self.name = name
        self.check = check
        self.probe = probe
        self.interval_scale = interval_scale
        """Multiplies the configured intervals (whole seconds); tests make them tiny."""
        self.healthy = True
        # Counters of consecutive events, as lua-resty-healthcheck's four counters.
        self.successes = 0
        self.http_failures = 0
        self.timeouts = 0
        self.tcp_failures = 0
        self._healthy_statuses = frozenset(check.healthy.http_statuses)
        self._unhealthy_statuses = frozenset(check.unhealthy.http_statuses)

    async def probe_once(self) -> None:
        """Send one probe (bounded by `check.timeout` seconds) and count its outcome."""
        try:
            async with asyncio.timeout(self.check.timeout):
                status = await self.probe()
        except (TimeoutError, httpx.TimeoutException):
            self._failure("timeouts", self.check.unhealthy.timeouts, "timeout")
        except (OSError, httpx.TransportError):
            self._failure("tcp_failures", self.check.unhealthy.tcp_failures,
                          "connection failed")
        except Exception as exc:  # noqa: BLE001 - a broken probe must not stop the checks
            # Only the exception's type: its message may quote the URL with its query.
            self._failure("tcp_failures", self.check.unhealthy.tcp_failures,
                          f"probe error {type(exc).__name__}")
        else:
            if status in self._healthy_statuses:
                self._success(status)
            elif status in self._unhealthy_statuses:
                self._failure("http_failures", self.check.unhealthy.http_failures,
                              f"status {status}")
            # Any other status is ignored, as lua-resty-healthcheck does.

    def _success(self, status: int) -> None:
        self.http_failures = self.timeouts = self.tcp_failures = 0
        self.successes += 1
        if not self.healthy and self.successes >= self.check.healthy.successes:
            self._change(True, f"status {status}, {self.successes} in a row")

    def _failure(self, counter: str, limit: int, reason: str) -> None:
        self.successes = 0
        count = getattr(self, counter) + 1
        setattr(self, counter, count)
        if self.healthy and count >= limit:
            self._change(False, f"{reason}, {count} in a row")

    def _change(self, healthy: bool, why: str) -> None:
        self.healthy = healthy
        # A new state starts counting afresh.
        self.successes = self.http_failures = self.timeouts = self.tcp_failures = 0
        logger.warning("health check: instance %r is now %s (%s)", self.name,
                       "healthy" if healthy else "unhealthy", why)

    async def run(self) -> None:
        """Probe forever, waiting the healthy or unhealthy interval after each probe."""
        while True:
            try:
                await self.probe_once()
            except Exception as exc:  # noqa: BLE001 - probe_once catches all; belt and braces
                logger.error("health check: instance %r: %s", self.name, type(exc).__name__)
            interval = (self.check.healthy.interval if self.healthy
                        else self.check.unhealthy.interval)
            await asyncio.sleep(interval * self.interval_scale)


class Background(Protocol):
    """What the monitor runs: a HealthChecker, or a TokenProber (runtime/tokens.py)."""

    name: str

    async def run(self) -> None: ...


class HealthMonitor:
    """Owns the background tasks of a set of checkers (started and stopped with the ASGI lifespan)."""

    def __init__(self, checkers: Sequence[Background]) -> None:
        self.checkers = tuple(checkers)
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def running(self) -> bool:
        """Whether the checkers' tasks are started."""
        return bool(self._tasks)

    def start(self) -> None:
        """Start one task per checker in the running event loop; a second call does nothing."""
        if self._tasks or not self.checkers:  # (asked on every request)
            return
        self._tasks = [asyncio.create_task(c.run(), name=f"health check {c.name}")
                       for c in self.checkers]

    async def stop(self) -> None:
        """Cancel the tasks and wait for them to end; a second call does nothing."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _split_header(line: str) -> tuple[str, str] | None:
    name, sep, value = line.partition(":")
    name = name.strip()
    return (name, value.strip()) if sep and name else None


def http_probe(check: ActiveCheck, base_url: str, auth_headers: Mapping[str, str],
               auth_query: Mapping[str, str],
               client_factory: Callable[[], httpx.AsyncClient]) -> Probe:
    """A probe sending the check's request to an instance.

    The target is `{check.type}://{check.host or the base URL's host}:{check.port or the
    base URL's port}{check.http_path}`, with the instance's `auth.query` appended to the
    path's query and its `auth.header` after `check.req_headers` ("Name: value" strings;
    lines without a colon are skipped). `type: tcp` opens and closes a TCP connection and
    returns 200. `client_factory`'s client is borrowed (never closed); with
    `https_verify_certificate: false` each probe uses its own client with verify=False.
    """
    base = httpx.URL(base_url)
    host = check.host or base.host
    port = check.port or base.port or (443 if base.scheme == "https" else 80)

    if check.type == "tcp":
        async def tcp() -> int:
            _, writer = await asyncio.open_connection(host, port)
            writer.close()
            try:
                await writer.wait_closed()
            except OSError:
                pass  # the connection was made: a reset while closing is no failure
            return 200
        return tcp

    path = check.http_path if check.http_path.startswith("/") else "/" + check.http_path
    if auth_query:
        # Joined with `&` when the path already has a query (APISIX before 3.18 added a
        # second `?`).
        path += ("&" if "?" in path else "?") + urlencode(dict(auth_query))
    authority = f"[{host}]" if ":" in host else host
    url = f"{check.type}://{authority}:{port}{path}"
    headers = [h for h in map(_split_header, check.req_headers) if h is not None]
    headers += list(auth_headers.items())
    body = check.http_req_body.encode() or None

    async def http() -> int:
        if check.type == "https" and not check.https_verify_certificate:
            # A client of its own: verification is a client setting, and the shared client
            # must keep verifying for real requests.
            async with httpx.AsyncClient(verify=False, trust_env=False) as insecure:
                return await _send(insecure)
        return await _send(client_factory())

    async def _send(client: httpx.AsyncClient) -> int:
        response = await client.request(check.http_method, url, content=body,
                                        headers=headers, timeout=check.timeout)
        return response.status_code

    return http
