"""The connection to Redis that the shared stores use, and how they degrade without it.

redis-py (the `redis` extra) is imported only when a connection is first opened, so the
package works without it; the config loader checks that it is installed when `redis:` is set.

A request never waits on Redis longer than the configured timeout: it bounds connecting, each
command, and (with `asyncio.timeout`) the whole call. Once a call fails, the link answers
every call with its fallback at once for `retry_after` seconds (no request waits on a Redis
that is down), then tries again; it recovers by itself when Redis answers. It logs one warning
per `warn_interval`, naming the host and the kind of failure, never a traceback and never
the URL's user name or password.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

logger = logging.getLogger("aiproxy_middleware")

T = TypeVar("T")

DEFAULT_TIMEOUT_MS = 1000
DEFAULT_KEY_PREFIX = "aiproxy:"
DEFAULT_MAX_CONNECTIONS = 64
"""Connections one worker opens to Redis at most (a call waits for a free one, within the
timeout)."""
WARN_INTERVAL = 30.0
RETRY_AFTER = 1.0


@dataclass(frozen=True, slots=True)
class RedisSettings:
    """Where Redis is and how long a request may wait on it (validated by the config loader)."""

    host: str
    port: int = 6379
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    database: int = 0
    tls: bool = False
    timeout_ms: int = DEFAULT_TIMEOUT_MS
    key_prefix: str = DEFAULT_KEY_PREFIX

    @property
    def address(self) -> str:
        """What log lines name: host, port and database; never a credential."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'rediss' if self.tls else 'redis'}://{host}:{self.port}/{self.database}"


class RedisLink:
    """One worker's connection pool to Redis, opened on first use in the running event loop."""

    def __init__(self, settings: RedisSettings, *, warn_interval: float = WARN_INTERVAL,
                 retry_after: float = RETRY_AFTER) -> None:
        self.settings = settings
        self.prefix = settings.key_prefix
        self.timeout = settings.timeout_ms / 1000
        self.warn_interval = warn_interval
        self.retry_after = retry_after
        self._client: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._scripts: dict[str, str] = {}
        self._scripts_bound: dict[str, Any] = {}
        self._slots = asyncio.Semaphore(DEFAULT_MAX_CONNECTIONS)
        self._down_until = 0.0
        self._warned_at: float | None = None
        self.outages = 0
        """How many times Redis stopped answering (a store's local fallback starts afresh
        with each outage)."""
        self.down = False

    @classmethod
    def given(cls, settings: RedisSettings | None, link: RedisLink | None) -> RedisLink:
        """A store's link: the one it is given (shared with the middleware's other store), or
        its own to `settings`."""
        if link is not None:
            return link
        if settings is None:
            raise TypeError("a Redis store needs settings or a link")
        return cls(settings)

    def script(self, name: str, source: str) -> None:
        """Register a Lua script under `name` (run with `eval`: EVALSHA, EVAL when the server
        does not know it yet, as after a restart)."""
        self._scripts[name] = source

    def _open(self) -> Any:
        loop = asyncio.get_running_loop()
        if self._client is not None and self._loop is loop:
            return self._client
        # A client's connections belong to the loop that opened them: a middleware used
        # from another loop (a second test client, a restarted server) opens its own.
        from redis.asyncio import ConnectionPool, Redis
        from redis.asyncio.connection import Connection, SSLConnection
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        s = self.settings
        # (Not redis-py's BlockingConnectionPool: in the oldest redis-py this package allows,
        # it never hands out a connection. The semaphore makes calls queue for one instead,
        # within the timeout, rather than fail with "too many connections".)
        pool = ConnectionPool(
            connection_class=SSLConnection if s.tls else Connection,
            max_connections=DEFAULT_MAX_CONNECTIONS,
            host=s.host, port=s.port, db=s.database, username=s.username, password=s.password,
            socket_timeout=None, socket_connect_timeout=self.timeout,
            # no retries: the timeout is the whole wait (redis 5.0's NoBackoff is untyped)
            retry=Retry(NoBackoff(), 0),  # type: ignore[no-untyped-call, unused-ignore]
            client_name="aiproxy-middleware")
        client = Redis(connection_pool=pool)
        self._client, self._loop = client, loop
        self._slots = asyncio.Semaphore(DEFAULT_MAX_CONNECTIONS)
        self._scripts_bound = {}
        return client

    async def call(self, op: Callable[[Any], Awaitable[T]], fallback: T) -> T:
        """`op(client)`'s answer, or `fallback` when Redis is down, slow or failing."""
        if self.resting():
            return fallback
        try:
            async with asyncio.timeout(self.timeout):
                client = self._open()
                async with self._slots:
                    answer = await op(client)
        except Exception as exc:  # noqa: BLE001 - whatever failed, the request goes on
            self.failed(exc)
            return fallback
        self.answered()
        return answer

    def resting(self) -> bool:
        """Whether calls answer their fallback at once (Redis failed less than
        `retry_after` seconds ago)."""
        return bool(self._down_until) and time.monotonic() < self._down_until

    def answered(self) -> None:
        """A call succeeded: Redis is back if it was down."""
        if self.down:
            self.down = False
            self._down_until = 0.0
            logger.info("aiproxy: Redis at %s answers again; limits and token health are"
                        " shared again", self.settings.address)

    def source(self, name: str) -> str:
        return self._scripts[name]

    async def pipelined(self, fill: Callable[[Any], None]) -> list[Any]:
        """The answers of the commands `fill(pipeline)` queues, sent as one pipeline on one
        connection (an error answer is its exception, in its place)."""
        client = self._open()
        async with self._slots:
            pipe = client.pipeline(transaction=False)
            fill(pipe)
            return list(await pipe.execute(raise_on_error=False))

    async def load_scripts(self, names: set[str]) -> None:
        client = self._open()
        async with self._slots:
            for name in names:
                await client.script_load(self._scripts[name])

    async def eval(self, client: Any, name: str, keys: list[str], args: list[Any]) -> Any:
        """Run the script registered as `name` (inside `call`'s `op`)."""
        script = self._scripts_bound.get(name)
        if script is None:
            script = self._scripts_bound[name] = client.register_script(self._scripts[name])
        return await script(keys=keys, args=args, client=client)

    def failed(self, exc: BaseException) -> None:
        """A call failed: rest for `retry_after` seconds, warn at most once per interval."""
        now = time.monotonic()
        self._down_until = now + self.retry_after
        if not self.down:
            self.down = True
            self.outages += 1
        if self._warned_at is not None and now - self._warned_at < self.warn_interval:
            return
        self._warned_at = now
        # The kind of failure only: an exception's text could quote what was sent.
        logger.warning("aiproxy: Redis at %s is unreachable or slow (%s; timeout %d ms):"
                       " requests are served without shared limits, and token health is kept"
                       " in each worker until it answers (this warning repeats at most every"
                       " %d s)", self.settings.address, _kind(exc), self.settings.timeout_ms,
                       self.warn_interval)

    async def aclose(self) -> None:
        """Close the connections (they reopen on next use)."""
        client, self._client = self._client, None
        loop, self._loop = self._loop, None
        if client is None:
            return
        if loop is not asyncio.get_running_loop():
            return  # another loop's connections cannot be closed from here
        try:
            async with asyncio.timeout(self.timeout):
                await client.connection_pool.disconnect()
        except Exception:  # noqa: BLE001, S110 - closing is best effort
            pass


def shared_link(settings: RedisSettings | None, store: object, token_store: object
                ) -> RedisLink | None:
    """The link a middleware opens for `redis:` settings, unless both its stores were
    given (they then need none)."""
    if settings is None or (store is not None and token_store is not None):
        return None
    return RedisLink(settings)


def _kind(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    name = type(exc).__name__
    return {"ConnectionError": "connection refused or lost",
            "AuthenticationError": "authentication failed",
            "AuthenticationWrongNumberOfArgsError": "authentication failed",
            "ResponseError": "an error answer"}.get(name, name)
