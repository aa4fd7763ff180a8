"""The load generators' event loop: the client's collector is quiet while a point runs and as
it was afterwards, so one benchmark process can run many points (bench.peers) and go on to
in-process phases with the interpreter's own settings."""

from __future__ import annotations

import asyncio
import gc

import pytest

from bench.client_loop import QUIET_THRESHOLDS, run_client


def test_a_point_runs_with_the_collector_quiet_and_the_settings_come_back() -> None:
    before = gc.get_threshold()
    held = [object() for _ in range(10)]  # objects the process holds before the point

    async def point() -> tuple[tuple[int, ...], int]:
        await asyncio.sleep(0)
        return gc.get_threshold(), gc.get_freeze_count()

    during, frozen = run_client(point())
    assert during == QUIET_THRESHOLDS
    assert frozen >= len(held)  # what was there before is not walked during the point
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def test_the_settings_come_back_when_the_point_fails() -> None:
    before = gc.get_threshold()

    async def failing() -> None:
        raise RuntimeError("the server went away")

    with pytest.raises(RuntimeError, match="went away"):
        run_client(failing())
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
