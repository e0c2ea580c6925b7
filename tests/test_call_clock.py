"""The call clock (pipeline/call_clock.py): one coarse timer for the upstream calls in
flight, firing each call's deadline and starting its client's watching at most a tick late."""

from __future__ import annotations

import asyncio

import pytest

from aiproxy_middleware.pipeline.call_clock import TICK, call_timer


async def test_a_deadline_cancels_its_call_and_is_told_apart():
    loop = asyncio.get_running_loop()
    start = loop.time()
    clock, timer = call_timer(0.05)
    with pytest.raises(asyncio.CancelledError):
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            assert timer.timed_out()  # its own: taken back
            assert asyncio.current_task().cancelling() == 0
            raise
        finally:
            clock.stop(timer)
    assert 0.05 <= loop.time() - start < 0.05 + 3 * TICK


async def test_reschedule_moves_the_deadline():
    loop = asyncio.get_running_loop()
    clock, timer = call_timer(0.05)
    try:
        for _ in range(4):  # each step well within the timeout, the whole past it
            await asyncio.sleep(0.03)
            timer.reschedule(loop.time() + 0.05)
        assert not timer.expired
    finally:
        clock.stop(timer)


async def test_a_call_over_in_time_is_never_cancelled():
    clock, timer = call_timer(0.02)
    clock.stop(timer)
    await asyncio.sleep(0.02 + 3 * TICK)  # the sweep has passed: nothing was cancelled
    assert not timer.expired


async def test_another_cancellation_is_not_taken_for_the_deadline():
    """Cancelled by someone else as well (a client gone, a shutdown) before it ran again:
    the deadline takes back only its own cancellation, and the other one goes on."""
    noted = asyncio.get_running_loop().create_future()

    async def call() -> None:
        clock, timer = call_timer(60)
        noted.set_result((clock, timer))
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            assert not timer.timed_out()  # the other cancel is still pending
            assert asyncio.current_task().cancelling() == 1
            raise
        finally:
            clock.stop(timer)

    task = asyncio.ensure_future(call())
    clock, timer = await noted
    timer.reschedule(0.0)  # due: the next sweep cancels it...
    clock._sweep()
    task.cancel()  # ...and so does someone else, before it runs again
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_watching_starts_after_its_delay():
    """The client's connection is read from `watch_after` on (not before: a quick call
    costs no watching task), and no more once the call stops."""
    loop = asyncio.get_running_loop()
    reads: list[float] = []

    async def receive() -> dict[str, str]:
        reads.append(loop.time())
        await asyncio.Event().wait()
        return {}

    start = loop.time()
    clock, timer = call_timer(None, receive, 0.05)
    try:
        await asyncio.sleep(0.05 + 3 * TICK)
    finally:
        clock.stop(timer)
    assert len(reads) == 1
    assert 0.05 <= reads[0] - start < 0.05 + 3 * TICK
    assert timer.watcher is not None and not timer.disconnected
    await asyncio.sleep(0)
    assert timer.watcher._watch.cancelled()  # stopped with the call


async def test_a_client_gone_while_watched_cancels_its_call():
    """A disconnect seen by the watcher cancels the call's task, and the timer tells it
    apart from its own deadline."""
    async def receive() -> dict[str, str]:
        return {"type": "http.disconnect"}

    clock, timer = call_timer(60, receive, 0.0)
    with pytest.raises(asyncio.CancelledError):
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            assert timer.disconnected and not timer.timed_out()
            raise
        finally:
            clock.stop(timer)
