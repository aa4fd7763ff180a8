"""A 503 on a session step tells the truth about the step when the state store fails, with a
real redis-server that is really stopped (SIGSTOP) in the middle of a step:

- stopped as the batch gathers the states: nothing was written, and the 503 says "not applied";
- stopped as the batch writes them (the script is sent, the reply never comes in time): the
  server cannot know, and says "may have been applied: retry with the same step_id". Redis,
  resumed, runs the write it had received before it notices the closed connection: the step
  was applied, although answered 503; the advised retry is replayed, not applied again."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Awaitable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TypeVar

import numpy as np
import pytest

pytest.importorskip("redis", reason="needs redis-py (pip install .[redis])")

from rnnserve.engine import Engine  # noqa: E402
from rnnserve.engine.sessions import Sessions  # noqa: E402
from rnnserve.errors import NOT_APPLIED, StepMayBeApplied, Unavailable  # noqa: E402
from rnnserve.state import Gathered, StateLayout, Written  # noqa: E402
from rnnserve.state.redis import RedisStateStore  # noqa: E402

from tests.engine.test_steps import own_batcher  # noqa: E402
from tests.engine.test_withdraw import OwnBatcher  # noqa: E402
from tests.state.redis_server import REDIS_SERVER, RedisServer  # noqa: E402

pytestmark = pytest.mark.skipif(REDIS_SERVER is None, reason="needs redis-server (apt-get)")

MODEL = "tiny-gru"
X = np.ones((5, 3), np.float32)
T = TypeVar("T")


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    if server.process is not None:
        server.process.send_signal(signal.SIGCONT)  # never leave it stopped
    server.stop()


class StoppedOnce(RedisStateStore):
    """The real Redis store (a short command timeout), whose redis-server is stopped as the
    next `at` ("gather" or "scatter") begins, once armed, and resumed once the store gave up
    on it. Armed after a first step, which loads the store's scripts into Redis."""

    def __init__(self, redis: RedisServer, at: str) -> None:
        super().__init__(redis.url, ttl_s=60, max_sessions=100, command_timeout_s=0.3)
        self.redis, self.at, self.armed = redis, at, False

    async def _stopped(self, call: Awaitable[T]) -> T:
        process = self.redis.process
        assert process is not None
        self.armed = False
        process.send_signal(signal.SIGSTOP)
        try:
            return await call
        finally:
            process.send_signal(signal.SIGCONT)

    async def gather(self, layout: StateLayout, ids: list[str],
                     owners: list[str | None], holders: list[int | None] | None = None
                     ) -> Gathered:
        call = super().gather(layout, ids, owners, holders)
        return await (self._stopped(call) if self.armed and self.at == "gather" else call)

    async def scatter(self, gathered: Gathered, states: dict[str, np.ndarray],
                      steps: list[int], outputs: np.ndarray,
                      step_ids: list[str | None]) -> Written:
        call = super().scatter(gathered, states, steps, outputs, step_ids)
        return await (self._stopped(call) if self.armed and self.at == "scatter" else call)


@asynccontextmanager
async def sessions_over(engine: Engine, store: StoppedOnce) -> AsyncIterator[Sessions]:
    async with own_batcher(engine, MODEL, store, 8) as (batcher, _):
        yield Sessions(engine.settings, store, OwnBatcher(engine, batcher), engine.limits)


async def test_redis_stopped_before_the_write_means_not_applied(engine: Engine,
                                                               redis: RedisServer) -> None:
    store = StoppedOnce(redis, "gather")
    async with sessions_over(engine, store) as sessions:
        record = await sessions.create(MODEL)
        await sessions.step(record.id, X, step_id="zero")
        store.armed = True
        with pytest.raises(Unavailable) as caught:
            await sessions.step(record.id, X, step_id="one")
        assert not isinstance(caught.value, StepMayBeApplied)
        assert NOT_APPLIED in caught.value.message and caught.value.http_status == 503
        assert (await sessions.describe(record.id)).steps == 5  # true: nothing was written
        result = await sessions.step(record.id, X, step_id="one")  # the safe retry
        assert result.steps == 10


async def test_redis_stopped_during_the_write_means_may_be_applied(engine: Engine,
                                                                   redis: RedisServer) -> None:
    store = StoppedOnce(redis, "scatter")
    async with sessions_over(engine, store) as sessions:
        record = await sessions.create(MODEL)
        await sessions.step(record.id, X, step_id="zero")
        store.armed = True
        with pytest.raises(StepMayBeApplied) as caught:
            await sessions.step(record.id, X, step_id="one")
        error = caught.value
        assert error.http_status == 503 and error.remedy == "retry-step-id"
        assert "may have been applied" in error.message and NOT_APPLIED not in error.message
        # resumed, Redis runs the write it had received before it notices the connection
        # closed: the step was applied although the server had to answer 503
        for _ in range(100):
            if (await sessions.describe(record.id)).steps == 10:
                break
            await asyncio.sleep(0.01)
        assert (await sessions.describe(record.id)).steps == 10
        result = await sessions.step(record.id, X, step_id="one")  # the retry it advises
        assert result.steps == 10  # replayed, with the recorded outputs
        assert (await sessions.describe(record.id)).steps == 10  # applied exactly once
