"""TimeLimit (engine/deadlines.py) on its own: one timer per call that cancels the call at its
limit (TimeoutError, as asyncio.timeout), tells the steps watching it, and leaves alone a call
whose deadline is held or that wrote something. No engine: plain coroutines."""

from __future__ import annotations

import asyncio

import pytest
from rnnserve.engine import TimeLimit
from rnnserve.engine.deadlines import current, writing


async def test_the_limit_cancels_a_call_that_changed_nothing() -> None:
    with pytest.raises(TimeoutError):
        async with TimeLimit(0.02):
            await asyncio.sleep(5)
    assert current() is None  # the call's deadline is gone with it


async def test_a_cancellation_from_outside_stays_a_cancellation() -> None:
    """Only the limit's own cancel becomes TimeoutError; a caller's cancel passes through."""
    async def call() -> None:
        with TimeLimit(5):
            await asyncio.sleep(5)

    task = asyncio.create_task(call())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_watcher_is_told_and_a_held_deadline_is_not_cancelled() -> None:
    """At the deadline the watchers run; a call holding its deadline is not cancelled, and
    after the hold ends past the deadline it finishes (its holder answered for it)."""
    told: list[str] = []
    with TimeLimit(0.02) as deadline:
        deadline.watch(lambda: told.append("deadline"))
        deadline.hold()
        await asyncio.sleep(0.1)
        deadline.release(committed=False)
        await asyncio.sleep(0.01)  # not cancelled: the deadline passed while held
    assert told == ["deadline"]


async def test_a_hold_released_early_leaves_the_limit_and_a_write_lifts_it() -> None:
    with pytest.raises(TimeoutError):
        with TimeLimit(0.05) as deadline:
            watching = deadline.watch(lambda: pytest.fail("unwatched, yet told"))
            deadline.hold()
            deadline.unwatch(watching)
            deadline.release(committed=False)  # nothing written, time left: the limit stands
            await asyncio.sleep(5)
    with TimeLimit(0.02):
        with writing():
            pass
        await asyncio.sleep(0.1)  # written: the call answers what it did, never cut
