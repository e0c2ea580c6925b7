"""`SharedStore` in Redis: rate-limit windows and quota balances every worker (and host) that
names the same Redis shares.

Keys are the caller's (named after the rule, as Higress names its Redis keys) behind the
configured `key_prefix` (default `aiproxy:`). A window is one integer key whose expiry is set
when it is created, so a window starts with the key's first counted request; a balance is one
integer key without expiry. Every update is one atomic command or Lua script.

When Redis is down or slow (see `RedisLink`), reads answer "nothing counted" and updates are
skipped: requests are served, limits are not enforced until Redis answers again.
"""

from __future__ import annotations

from typing import Any

from aiproxy_middleware.state.redis_batch import ScriptBatcher
from aiproxy_middleware.state.redis_link import RedisLink, RedisSettings

# INCRBY, then the expiry only when the key has none (it was just created): the window is
# fixed from its first counted request. PTTL is the window's time left, in ms.
_WINDOW_ADD = """
local count = redis.call('INCRBY', KEYS[1], ARGV[1])
local left = redis.call('PTTL', KEYS[1])
if left < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  left = tonumber(ARGV[2])
end
return {count, left}
"""

_WINDOW_GET = """
local count = redis.call('GET', KEYS[1])
if not count then return {0, 0} end
local left = redis.call('PTTL', KEYS[1])
if left < 0 then left = 0 end
return {tonumber(count), left}
"""


class RedisStore:
    """`SharedStore` in Redis. `link` is shared with a `RedisTokenStore` of the same
    middleware (one pool of connections per worker)."""

    def __init__(self, settings: RedisSettings | None = None, *,
                 link: RedisLink | None = None) -> None:
        self.link = link = RedisLink.given(settings, link)
        self._prefix = link.prefix
        link.script("window_add", _WINDOW_ADD)
        link.script("window_get", _WINDOW_GET)
        self._batch = ScriptBatcher(link)

    @property
    def reachable(self) -> bool:
        return not self.link.down

    async def window_get(self, key: str) -> tuple[int, float]:
        # (every request asks this: sent with the others of the same loop turn)
        answer = await self._batch.run("window_get", [self._prefix + key], [], None)
        return (0, 0.0) if answer is None else (int(answer[0]), int(answer[1]) / 1000)

    async def window_add(self, key: str, amount: int, window: float) -> tuple[int, float]:
        window_ms = max(1, round(window * 1000))
        answer = await self._batch.run("window_add", [self._prefix + key],
                                       [int(amount), window_ms], None)
        return (0, 0.0) if answer is None else (int(answer[0]), int(answer[1]) / 1000)

    async def balance_get(self, key: str) -> int | None:
        async def op(client: Any) -> int | None:
            value = await client.get(self._prefix + key)
            return None if value is None else int(value)
        return await self.link.call(op, None)

    async def balance_set(self, key: str, value: int) -> None:
        async def op(client: Any) -> None:
            await client.set(self._prefix + key, int(value))
        await self.link.call(op, None)

    async def balance_add(self, key: str, delta: int) -> int:
        async def op(client: Any) -> int:
            return int(await client.incrby(self._prefix + key, int(delta)))
        return await self.link.call(op, 0)

    async def aclose(self) -> None:
        await self.link.aclose()
