"""`SharedStore` in Redis: rate-limit windows, quota balances and blobs (stored responses)
every worker (and host) that names the same Redis shares.

Keys are the caller's (named after the rule, as Higress names its Redis keys) behind the
configured `key_prefix` (default `aiproxy:`). A window is one integer key whose expiry is set
when it is created, so a window starts with the key's first counted request; a balance is one
integer key without expiry. A blob is one string key with its expiry; a group of blobs (the
last N responses of a consumer) is a list of its members' keys, newest last, that expires
with its newest member. Every update is one atomic command or Lua script. (The group script
deletes members it did not name in KEYS: fine on one Redis server, not on a Redis Cluster.)

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


# The blob, then its group: the key moved to the group's new end, the oldest members beyond
# ARGV[3] deleted with their blobs, the group's expiry that of its newest member (every
# member has the same TTL in practice, so the expired ones are the oldest: trimmed first).
_BLOB_SET_GROUPED = """
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('LREM', KEYS[2], 0, KEYS[1])
local count = redis.call('RPUSH', KEYS[2], KEYS[1])
local over = count - tonumber(ARGV[3])
if over > 0 then
  for _, old in ipairs(redis.call('LRANGE', KEYS[2], 0, over - 1)) do
    redis.call('DEL', old)
  end
  redis.call('LTRIM', KEYS[2], over, -1)
end
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return count
"""

_BLOB_DELETE_GROUPED = """
redis.call('LREM', KEYS[2], 0, KEYS[1])
return redis.call('DEL', KEYS[1])
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
        link.script("blob_set_grouped", _BLOB_SET_GROUPED)
        link.script("blob_delete_grouped", _BLOB_DELETE_GROUPED)

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

    async def blob_get(self, key: str) -> bytes | None:
        async def op(client: Any) -> bytes | None:
            value = await client.get(self._prefix + key)
            return None if value is None else bytes(value)
        return await self.link.call(op, None)

    async def blob_set(self, key: str, value: bytes, ttl: float, *, group: str | None = None,
                       keep: int = 0) -> None:
        ttl_ms = max(1, round(ttl * 1000))
        if group is not None and keep < 1:
            return

        async def op(client: Any) -> None:
            if group is None:
                await client.set(self._prefix + key, value, px=ttl_ms)
            else:
                await self.link.eval(client, "blob_set_grouped",
                                     [self._prefix + key, self._prefix + group],
                                     [value, ttl_ms, int(keep)])
        await self.link.call(op, None)

    async def blob_delete(self, key: str, *, group: str | None = None) -> bool:
        async def op(client: Any) -> bool:
            if group is None:
                return bool(await client.delete(self._prefix + key))
            return bool(await self.link.eval(client, "blob_delete_grouped",
                                             [self._prefix + key, self._prefix + group], []))
        return await self.link.call(op, False)

    async def aclose(self) -> None:
        await self.link.aclose()
