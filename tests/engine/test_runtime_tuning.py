"""The process tuning `rnnserve serve` applies once its models are loaded (rnnserve.runtime):
what it sets is what the server's measured per-request cost rests on."""

from __future__ import annotations

import gc
import sys
from collections.abc import Iterator

import pytest
from rnnserve.runtime import GC_THRESHOLDS, tune_for_serving


@pytest.fixture
def restored() -> Iterator[None]:
    """Put the test process's collector and switch interval back afterwards."""
    thresholds, interval = gc.get_threshold(), sys.getswitchinterval()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)
    sys.setswitchinterval(interval)


def test_collector_and_switch_interval(restored: None) -> None:
    gc.set_threshold(700, 10, 10)  # CPython's defaults, as a fresh process has them
    tune_for_serving(0.0007)
    # young collections after 10,000 net allocations, not 700: with hundreds of requests in
    # flight, 700 was crossed every few requests and each collection walked them all
    assert gc.get_threshold() == GC_THRESHOLDS
    assert GC_THRESHOLDS[0] >= 10_000
    # everything alive at startup is frozen: full collections no longer walk it
    assert gc.get_freeze_count() > 1000
    assert sys.getswitchinterval() == pytest.approx(0.0007)
