"""Whether the state store can be reached, and since when it cannot: what readiness asks of it.

A short outage of the store (Redis restarting, a Sentinel failover) must not take every replica
out of its load balancer at once, nor get them all restarted: while it lasts, each request
that needs the store is answered 503 with Retry-After, and readiness (/v2/health/ready, gRPC
health, ServerReady) stays true until the store has been unreachable without a break for
longer than `--store-unready-after-s` (0: never because of the store). Liveness never asks.

Two things feed the tracker, so that it tells the truth under traffic and without any:
every call the engine makes to the store (`ObservedStore`: a StoreUnreachable is a failure,
any answer a success, even "no such session"), and a probe that pings the store every
PROBE_INTERVAL_S while the engine is open (the memory store always answers). An outage is
dated from the start of the first call that failed, and ends at the first call answered."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from rnnserve.errors import RnnServeError
from rnnserve.state import StateStore

log = logging.getLogger("rnnserve.engine.store")

PROBE_INTERVAL_S = 1.0
"""How often the engine pings the store while it is open."""

PROBE_TIMEOUT_S = 2.0
"""A ping unanswered this long counts as a failure (a Redis that hangs, say)."""


class StoreHealth:
    """The store's reachability: `succeeded` and `failed` feed it; `unready` is what
    readiness asks, `reason` and `describe` what a client is told."""

    def __init__(self, where: str, unready_after_s: float,
                 on_change: Callable[[bool], None] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 details: dict[str, Any] | None = None) -> None:
        """`where`: the store's URL without credentials; `on_change(reachable)` hears each
        change (the metrics gauge); `details`: what describe() adds about the store."""
        self.where = where
        self.details = details or {}
        self.unready_after_s = unready_after_s
        self.clock = clock
        self._on_change = on_change or (lambda reachable: None)
        self._down_since: float | None = None
        self._last_error = ""
        self._unready_logged = False

    @property
    def reachable(self) -> bool:
        return self._down_since is None

    def succeeded(self) -> None:
        """The store answered a call (whatever the answer): any outage is over."""
        if self._down_since is None:
            return
        log.info("the state store %s answers again, after %.1f s unreachable", self.where,
                 self.down_for_s())
        self._down_since = None
        self._unready_logged = False
        self._on_change(True)

    def failed(self, error: str, started: float | None = None) -> None:
        """A call that began at `started` (clock time; now if None) could not reach the
        store: an outage begins then, unless one is going on already."""
        self._last_error = error
        if self._down_since is not None:
            return
        now = self.clock()
        self._down_since = now if started is None else min(started, now)
        if self.unready_after_s > 0:
            grace = f"readiness turns false if it lasts {self.unready_after_s:g} s"
        else:
            grace = "readiness does not depend on it (--store-unready-after-s 0)"
        log.warning("the state store %s is unreachable: %s; requests that need it get 503 "
                    "with Retry-After, %s", self.where, error, grace)
        self._on_change(False)

    def down_for_s(self) -> float:
        """How long the store has been unreachable without a break (0 while it answers)."""
        return 0.0 if self._down_since is None else max(0.0, self.clock() - self._down_since)

    @property
    def unready(self) -> bool:
        """Unreachable for longer than the grace, which is not 0 (0: never unready)."""
        return (self.unready_after_s > 0 and self._down_since is not None
                and self.down_for_s() > self.unready_after_s)

    def reason(self) -> str:
        """Why readiness is false because of the store (the URL carries no credentials)."""
        return (f"the state store {self.where} has been unreachable for "
                f"{self.down_for_s():.0f} s, longer than --store-unready-after-s "
                f"{self.unready_after_s:g} s (last error: {self._last_error}); the server "
                "turns ready again as soon as the store answers")

    def describe(self) -> dict[str, Any]:
        """The store's health in plain types, for /v1/models."""
        down = self._down_since is not None
        return {"url": self.where, "reachable": not down,
                "unreachable_for_s": round(self.down_for_s(), 1) if down else None,
                "last_error": self._last_error if down else None,
                "unready_after_s": self.unready_after_s, **self.details}

    async def probe_forever(self, store: StateStore) -> None:
        """Ping `store` every PROBE_INTERVAL_S until cancelled; log when readiness turns
        false because of it."""
        while True:
            started = self.clock()
            try:
                # asyncio.timeout, not wait_for: Python 3.11's wait_for swallows a cancel that
                # lands as the ping completes, and aclose() would wait for the probe forever
                async with asyncio.timeout(PROBE_TIMEOUT_S):
                    await store.ping()
            except TimeoutError:
                self.failed(f"no answer to a ping within {PROBE_TIMEOUT_S:g} s", started)
            except RnnServeError as exc:  # unreachable, or an answer that is not PONG
                self.failed(exc.message, started)
            except Exception as exc:  # never let an odd error end the probing
                log.exception("the state store probe failed")
                self.failed(f"{type(exc).__name__}: {exc}", started)
            else:
                self.succeeded()
            if self.unready and not self._unready_logged:
                self._unready_logged = True
                log.warning("not ready: %s", self.reason())
            await asyncio.sleep(PROBE_INTERVAL_S)
