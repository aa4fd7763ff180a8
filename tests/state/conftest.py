"""What the state store tests share: layouts, records, exact-bytes states and a step helper;
a real redis-server for the module (its tests skip without the binary or redis-py), emptied
for each test; Redis stores made on it and closed after the test."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rnnserve.state.base import SessionRecord, StateLayout, StateStore

from tests.state.redis_sentinel_cluster import SentinelCluster
from tests.state.redis_server import REDIS_SERVER, RedisServer

LSTM = StateLayout("lstm", 1, (("h0", 2, 16), ("c0", 2, 16)))
LSTM2 = StateLayout("lstm", 2, (("h0", 2, 16), ("c0", 2, 16)))
GRU = StateLayout("gru", 1, (("h0", 3, 8),))

Events = list[tuple[str, str, int]]
MakeStore = Callable[..., Awaitable[StateStore]]

NO_REDIS_PY = "redis-py is not installed (pip install .[redis])"


# -- helpers -------------------------------------------------------------------------------


def no_ids(steps: list[int]) -> tuple[list[int], np.ndarray, list[str | None]]:
    """scatter's per-row steps, outputs and step ids for rows without a step id."""
    return steps, np.zeros((len(steps), 1, 1), np.float32), [None] * len(steps)


def recorder(events: Events | None) -> Callable[[str, str, int], None]:
    def record(event: str, model: str, steps: int) -> None:
        if events is not None:
            events.append((event, model, steps))
    return record


def rec(session_id: str, layout: StateLayout = LSTM, owner: str = "alice") -> SessionRecord:
    now = time.time()
    return SessionRecord(id=session_id, model=layout.model, version=layout.version,
                         created=now, last_used=now, ttl_s=0, owner=owner)


def random_state(layout: StateLayout, seed: int, batch: int = 1) -> dict[str, np.ndarray]:
    """Values whose float32 bytes must survive exactly: subnormals, -0.0, huge, tiny."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, layers, hidden in layout.tensors:
        arr = rng.standard_normal((layers, batch, hidden)).astype(np.float32)
        arr.flat[0], arr.flat[1], arr.flat[2] = -0.0, np.float32(1e-45), np.float32(3.4e38)
        out[name] = arr
    return out


def assert_bytes_equal(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].shape == b[name].shape, name
        assert a[name].dtype == np.float32
        assert a[name].tobytes() == b[name].astype(np.float32).tobytes(), name


async def step(store: StateStore, layout: StateLayout, ids: list[str],
               new: dict[str, np.ndarray], n: int = 1) -> Any:
    gathered = await store.gather(layout, ids, [None] * len(ids))
    return await store.scatter(gathered, new, *no_ids([n] * len(ids)))


# -- Redis ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One real redis-server for the module; without the binary only the Redis tests skip."""
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server): the Redis "
                    "state store tests need a real one")
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[SentinelCluster]:
    """A Redis master with two replicas and three sentinels of the test's own (failover and
    Sentinel tests; their modules skip without redis-sentinel)."""
    cluster = SentinelCluster(tmp_path / "redis")
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of the test's own, append-only, that the test may stop, kill and
    start again (replica and outage tests)."""
    server = RedisServer(tmp_path / "redis", aof=True)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The shared server, emptied for each test."""
    redis = pytest.importorskip("redis", reason=NO_REDIS_PY)
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    return redis_server.url


@pytest.fixture
async def open_stores() -> AsyncIterator[list[StateStore]]:
    stores: list[StateStore] = []
    yield stores
    for store in stores:
        try:
            await store.close()
        except Exception:  # a test may have stopped its Redis
            pass


@pytest.fixture
def make_redis(redis_url: str, open_stores: list[StateStore]) -> MakeStore:
    from rnnserve.state.redis import RedisStateStore

    async def make(ttl_s: float = 60, max_sessions: int = 1000,
                   events: Events | None = None, url: str | None = None,
                   **options: Any) -> StateStore:
        store = RedisStateStore(url or redis_url, ttl_s=ttl_s, max_sessions=max_sessions,
                                on_event=recorder(events), **options)
        await store.start()
        open_stores.append(store)
        return store
    return make


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "store(**options): the ttl_s and max_sessions of the "
                                       "contract tests' `store` fixture")
