"""A value already at hand, as something to await.

Some pipeline steps hand back what their caller awaits instead of being coroutines
themselves (the exchange's read, a route's shaping): on the common path that is another
coroutine, awaited with none in between. When such a step already has its result, it
gives it through `ready`.
"""

from __future__ import annotations

from typing import TypeVar

T = TypeVar("T")


async def ready(value: T) -> T:
    return value
