"""TimeLimit (engine/deadlines.py) on its own: one timer per call that cancels the call at its
limit (TimeoutError, as asyncio.timeout), tells the steps watching it, and leaves alone a call
whose deadline is held or that wrote something. No engine: plain coroutines."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from rnnserve.engine import TimeLimit
from rnnserve.engine.deadlines import current, writing
from rnnserve.errors import WriteMayBeApplied


async def test_the_limit_cancels_a_call_that_changed_nothing() -> None:
    with pytest.raises(TimeoutError):
        async with TimeLimit(0.02):
            await asyncio.sleep(5)
    assert current() is None  # the call's deadline is gone with it


@pytest.mark.parametrize("in_a_write", [False, True])
async def test_a_cancellation_from_outside_stays_a_cancellation(in_a_write: bool) -> None:
    """Only the limit's own cancel becomes TimeoutError (and a write's own cut
    WriteMayBeApplied); a caller's cancel passes through, in the middle of a write too."""
    async def call() -> None:
        with TimeLimit(5):
            async with writing("reset", "session 'a'") if in_a_write else contextlib.nullcontext():
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
        async with writing("reset", "session 'a'"):
            pass
        await asyncio.sleep(0.1)  # written: the call answers what it did, never cut


async def test_a_write_the_store_has_not_finished_soon_after_the_limit_is_cut() -> None:
    """A stalled store must not hold the call to its own time-outs: at the limit plus its
    grace (the lesser of 1 s and the limit) the call ends, saying the write may have landed."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(WriteMayBeApplied) as caught:
        async with TimeLimit(0.05):
            async with writing("reset", "session 'a'"):
                await asyncio.sleep(5)  # a store that does not answer
    took = loop.time() - started
    assert 0.1 <= took < 1.0, took
    assert caught.value.http_status == 503 and caught.value.retry_after_s == 1
    assert caught.value.message == (
        "the state store had not finished the reset of session 'a' 0.05 s after the call's "
        "time limit of 0.05 s ran out, so it may have been applied: a reset is safe to repeat")
    assert current() is None and asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


async def test_a_write_finished_within_the_grace_is_answered_and_the_call_not_cut() -> None:
    async with TimeLimit(0.05):
        async with writing("reset", "session 'a'"):
            await asyncio.sleep(0.08)  # past the limit, inside the grace
        await asyncio.sleep(0.2)  # written: never cut afterwards


async def test_writes_after_the_deadline_share_one_bound() -> None:
    """A call that writes twice (a bulk create over two versions) is answered by its limit
    plus one grace, however late its second write began."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(WriteMayBeApplied):
        async with TimeLimit(0.3):  # the bound: 0.3 + 0.3 s
            async with writing("creation", "2 sessions"):
                await asyncio.sleep(0.55)  # finished inside the grace
            async with writing("creation", "3 sessions"):
                await asyncio.sleep(5)  # would be cut at 0.85 s with a grace of its own
    took = loop.time() - started
    assert 0.58 <= took < 0.75, took
