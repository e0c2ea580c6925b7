"""The script calls every request makes (a limit's window read before the upstream call, its
update after), sent together: all the calls one turn of the event loop asks for go to Redis
as one pipeline on one connection.

Why: through redis-py, one command costs a worker about 100-200 µs of CPU (taking a pooled
connection, packing, parsing, giving it back), which made a Redis-backed limit cost more than
the rest of the request. At load many requests ask in the same turn; one pipeline carries
them all for little more than one command's cost, and a lone request pays what it did.

Each call still keeps to the link's timeout and its fallback: a caller gives up waiting
after `timeout` seconds (the pipeline then ends on its own, bounded by the same timeout);
when the pipeline fails, every call in it answers its fallback and the link counts one
failure (one warning per interval, the same rest before it tries again).
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aiproxy_middleware.state.redis_link import RedisLink

_FAILED = object()
"""A call's answer when its pipeline (or its own command) failed: the caller's fallback."""

Pending = tuple[str, list[str], list[Any], "asyncio.Future[Any]"]


class ScriptBatcher:
    """Runs the link's registered Lua scripts (EVALSHA, loading a script the server lacks),
    one pipeline per event-loop turn."""

    def __init__(self, link: RedisLink) -> None:
        self.link = link
        self._queue: list[Pending] = []
        self._sha: dict[str, str] = {}
        self._sending: set[asyncio.Task[None]] = set()  # (strong references while they run)

    def _digest(self, name: str) -> str:
        sha = self._sha.get(name)
        if sha is None:
            source = self.link.source(name)
            sha = self._sha[name] = hashlib.sha1(source.encode()).hexdigest()  # noqa: S324 - Redis names scripts by SHA-1
        return sha

    async def run(self, name: str, keys: list[str], args: list[Any], fallback: Any) -> Any:
        """The script's answer, or `fallback` when Redis is down, slow or failing."""
        link = self.link
        if link.resting():
            return fallback
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.append((name, keys, args, future))
        if len(self._queue) == 1:
            loop.call_soon(self._flush, loop)
        try:
            async with asyncio.timeout(link.timeout):
                answer = await future
        except TimeoutError as exc:
            link.failed(exc)
            return fallback
        return fallback if answer is _FAILED else answer

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        batch, self._queue = self._queue, []
        batch = [p for p in batch if not p[3].done()]  # (callers that gave up already)
        if batch:
            task = loop.create_task(self._send(batch))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _send(self, batch: list[Pending]) -> None:
        link = self.link
        try:
            async with asyncio.timeout(link.timeout):
                answers = await link.pipelined(lambda pipe: self._queue_all(pipe, batch))
                missing = {batch[i][0] for i, a in enumerate(answers) if _no_script(a)}
                if missing:  # a restarted Redis forgot the scripts: load them, then again
                    await link.load_scripts(missing)
                    again = [i for i, a in enumerate(answers) if _no_script(a)]
                    redone = await link.pipelined(
                        lambda pipe: self._queue_all(pipe, [batch[i] for i in again]))
                    for i, answer in zip(again, redone):
                        answers[i] = answer
        except Exception as exc:  # noqa: BLE001 - whatever failed, each caller has a fallback
            link.failed(exc)
            answers = [_FAILED] * len(batch)
        else:
            errors = [a for a in answers if isinstance(a, Exception)]
            if errors:
                link.failed(errors[0])
            else:
                link.answered()
        for (_, _, _, future), answer in zip(batch, answers):
            if not future.done():
                future.set_result(_FAILED if isinstance(answer, Exception) else answer)

    def _queue_all(self, pipe: Any, batch: list[Pending]) -> None:
        for name, keys, args, _ in batch:
            pipe.execute_command("EVALSHA", self._digest(name), len(keys), *keys, *args)


def _no_script(answer: Any) -> bool:
    return isinstance(answer, Exception) and type(answer).__name__ == "NoScriptError"
