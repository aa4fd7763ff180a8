"""The store's reachability as readiness reads it, on a clock the test moves: an outage counts
from the start of the first call that failed, only a break-free outage longer than the grace
makes the server unready, any answer ends it, a grace of 0 never makes it unready, and what a
client is told names the store without its credentials. (A real Redis stopped under a real
server: tests/state/test_store_outage_readiness.py.)"""

from __future__ import annotations

from collections.abc import Callable

from rnnserve.engine import Engine
from rnnserve.engine.store_health import StoreHealth


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_only_an_outage_longer_than_the_grace_is_unready() -> None:
    clock, changes = Clock(), []
    health = StoreHealth("redis://127.0.0.1:6379/0", 15.0, changes.append, clock)
    assert health.reachable and not health.unready

    health.failed("connection refused", started=clock.now - 1)  # the call began 1 s ago
    assert changes == [False] and not health.unready
    clock.now += 13
    health.failed("connection refused")  # more failures do not restart the outage
    assert health.down_for_s() == 14 and not health.unready
    clock.now += 1.5
    assert health.unready
    assert "unreachable for 16 s" in health.reason() and "connection refused" in health.reason()

    health.succeeded()  # one answer ends the outage at once
    assert changes == [False, True] and health.reachable and not health.unready
    health.failed("timeout")
    clock.now += 10
    assert not health.unready  # a new outage starts its own grace


def test_a_grace_of_zero_never_makes_the_server_unready() -> None:
    clock = Clock()
    health = StoreHealth("redis://r:6379/0", 0.0, clock=clock)
    health.failed("connection refused")
    clock.now += 3600
    assert not health.reachable and not health.unready
    assert health.describe()["unreachable_for_s"] == 3600


def test_the_reason_names_the_store_without_its_credentials(
        make_settings: Callable[..., object]) -> None:
    engine = Engine(make_settings(state_store="redis://admin:s3cret@127.0.0.1:6390/2",
                                  store_unready_after_s=0.5))  # type: ignore[arg-type]
    health = engine.store_health
    health.failed("connection refused", started=health.clock() - 1)
    assert health.unready
    reason = health.reason()  # what /v2/health/ready answers (Engine.not_ready_reason)
    assert "redis://127.0.0.1:6390/2" in reason
    assert "s3cret" not in reason and "admin" not in reason
    assert "s3cret" not in str(health.describe())
