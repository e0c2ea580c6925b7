"""Token health under `failover` in Redis (runtime.tokens' `TokenStore`, structurally: this
layer sits below runtime), so every worker takes the same tokens out of rotation and puts
them back together.

One Redis hash per pool (`{prefix}failover:{pool}`) holds, per token, its failure count
(`f:`), whether it is out of rotation (`o:`) and its probe count (`p:`); each update is one
Lua script, so two workers counting at once never lose a count. A token is never written to
Redis: its fields are named by a digest of it, and `unavailable` maps the digests back to the
tokens this worker knows (the middleware tells it every configured pool's tokens).

When Redis is down or slow, token health is kept in this worker (a `MemoryTokenStore`,
started afresh with each outage) until Redis answers again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

from aiproxy_middleware.state.redis_link import RedisLink, RedisSettings
from aiproxy_middleware.state.token_health import MemoryTokenStore

HEALTH_TTL_MS = 24 * 3600 * 1000
"""A pool's hash expires a day after its last write: a token that left the config leaves
no state behind for long."""

_FAILED = """
local key, f, o, p = KEYS[1], 'f:' .. ARGV[1], 'o:' .. ARGV[1], 'p:' .. ARGV[1]
local count = redis.call('HINCRBY', key, f, 1)
local taken = 0
if count >= tonumber(ARGV[2]) and redis.call('HEXISTS', key, o) == 0 then
  redis.call('HSET', key, o, 1)
  redis.call('HSET', key, p, 0)
  taken = 1
end
redis.call('PEXPIRE', key, ARGV[3])
return taken
"""

_PROBED = """
local key, f, o, p = KEYS[1], 'f:' .. ARGV[1], 'o:' .. ARGV[1], 'p:' .. ARGV[1]
if ARGV[2] ~= '1' then
  redis.call('HSET', key, p, 0)
  redis.call('PEXPIRE', key, ARGV[4])
  return 0
end
local count = redis.call('HINCRBY', key, p, 1)
if count >= tonumber(ARGV[3]) then
  redis.call('HDEL', key, o, f, p)
  return 1
end
redis.call('PEXPIRE', key, ARGV[4])
return 0
"""


def token_digest(token: str) -> str:
    """What names a token in Redis (never the token itself)."""
    return hashlib.sha256(token.encode()).hexdigest()[:32]


class RedisTokenStore:
    """`TokenStore` in Redis."""

    def __init__(self, settings: RedisSettings | None = None, *,
                 link: RedisLink | None = None) -> None:
        self.link = link = RedisLink.given(settings, link)
        self._prefix = link.prefix + "failover:"
        self._tokens: dict[str, dict[str, str]] = {}
        """pool -> digest -> token: the tokens this worker can name."""
        self._local = MemoryTokenStore()
        self._local_outage = -1
        link.script("token_failed", _FAILED)
        link.script("token_probed", _PROBED)

    def know(self, pool: str, tokens: Iterable[str]) -> None:
        """Tell the store a pool's tokens, so `unavailable` can name the ones another worker
        took out (the middleware does it for every configured route)."""
        known = self._tokens.setdefault(pool, {})
        for token in tokens:
            if token:
                known.setdefault(token_digest(token), token)

    def _digest(self, pool: str, token: str) -> str:
        digest = token_digest(token)
        self._tokens.setdefault(pool, {}).setdefault(digest, token)
        return digest

    def _fallback(self) -> MemoryTokenStore:
        if self._local_outage != self.link.outages:  # a new outage starts from nothing
            self._local_outage = self.link.outages
            self._local = MemoryTokenStore()
        return self._local

    async def unavailable(self, pool: str) -> set[str]:
        async def op(client: Any) -> set[str] | None:
            fields = await client.hkeys(self._prefix + pool)
            known = self._tokens.get(pool, {})
            out = set()
            for name in fields:
                name = name.decode() if isinstance(name, bytes) else name
                if name.startswith("o:") and name[2:] in known:
                    out.add(known[name[2:]])
            return out
        found = await self.link.call(op, None)
        if found is None:
            return set(await self._fallback().unavailable(pool))
        return found

    async def failed(self, pool: str, token: str, threshold: int) -> bool:
        digest = self._digest(pool, token)

        async def op(client: Any) -> bool | None:
            taken = await self.link.eval(client, "token_failed", [self._prefix + pool],
                                         [digest, threshold, HEALTH_TTL_MS])
            return bool(int(taken))
        taken = await self.link.call(op, None)
        if taken is None:
            return await self._fallback().failed(pool, token, threshold)
        return taken

    async def succeeded(self, pool: str, token: str) -> None:
        digest = self._digest(pool, token)

        async def op(client: Any) -> bool:
            await client.hdel(self._prefix + pool, "f:" + digest)
            return True
        if not await self.link.call(op, False):
            await self._fallback().succeeded(pool, token)

    async def probed(self, pool: str, token: str, ok: bool, threshold: int) -> bool:
        digest = self._digest(pool, token)

        async def op(client: Any) -> bool | None:
            back = await self.link.eval(client, "token_probed", [self._prefix + pool],
                                        [digest, "1" if ok else "0", threshold, HEALTH_TTL_MS])
            return bool(int(back))
        back = await self.link.call(op, None)
        if back is None:
            return await self._fallback().probed(pool, token, ok, threshold)
        return back

    async def aclose(self) -> None:
        await self.link.aclose()
