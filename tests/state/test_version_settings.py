"""A model version's own `session_ttl_s` and `max_sessions` (model.json, handed to the store
in its StateLayout) honoured by each store alike: the memory store and the Redis store on a
real redis-server. A session keeps its version's idle timeout through every write and every
replica's reads, and expires by it; a version past its own cap refuses new sessions (a
single create and each row of a bulk create) with the same error, counted across replicas.
What only Redis shows (the keys' TTLs, a record of an older release, expiry without a
sweeper) is tested on Redis alone. tests/state/test_model_settings_replicas.py does the same
through real servers."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
from rnnserve.errors import RnnServeError, SessionNotFound, Unavailable
from rnnserve.state.base import SessionRecord, StateLayout, StateStore
from rnnserve.state.memory import MemoryStateStore

from tests.state.conftest import LSTM, LSTM2, NO_REDIS_PY, MakeStore, no_ids, random_state, rec

SHORT_S = 0.4  # the short version's idle timeout; the stores' own is 60 s
SHORT = dataclasses.replace(LSTM, ttl_s=SHORT_S)  # lstm version 1 with model.json's timeout
CAPPED = dataclasses.replace(LSTM, max_sessions=3)  # lstm version 1 with model.json's cap


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[StateStore]:
    """A started store of each kind, ttl_s 60 and max_sessions 1000 of its own."""
    made: StateStore
    if request.param == "redis":
        pytest.importorskip("redis", reason=NO_REDIS_PY)
        from rnnserve.state.redis import RedisStateStore

        made = RedisStateStore(request.getfixturevalue("redis_url"), ttl_s=60,
                               max_sessions=1000)
    else:
        made = MemoryStateStore(ttl_s=60, max_sessions=1000)
    await made.start()
    yield made
    await made.close()


def records(prefix: str, n: int, layout: StateLayout = LSTM) -> list[SessionRecord]:
    return [rec(f"{prefix}{i}", layout) for i in range(n)]


async def test_a_session_keeps_its_versions_timeout_and_expires_by_it(
        store: StateStore) -> None:
    made = await store.create(SHORT, rec("short"), None)
    other = await store.create(LSTM2, rec("long", LSTM2), None)  # version 2: the store's 60 s
    assert (made.ttl_s, other.ttl_s) == (SHORT_S, 60)
    assert (await store.get("short")).ttl_s == SHORT_S
    gathered = await store.gather(SHORT, ["short"], [None])
    written = await store.scatter(gathered, random_state(SHORT, 1), *no_ids([1]))
    assert written.errors == [None]
    assert (await store.get("short")).ttl_s == SHORT_S  # a step keeps it
    assert (await store.reset("short", None)).ttl_s == SHORT_S  # so does a reset
    await asyncio.sleep(SHORT_S + 0.3)
    with pytest.raises(SessionNotFound, match=f"expired after {SHORT_S:g} s"):
        await store.get("short")
    assert (await store.get("long")).ttl_s == 60


async def test_a_version_refuses_sessions_past_its_own_cap(store: StateStore) -> None:
    for record in records("c", 3):
        await store.create(CAPPED, record, None)
    with pytest.raises(Unavailable, match="'lstm' version 1 holds its maximum of 3 live "
                                          "sessions \\(max_sessions in its model.json\\)"):
        await store.create(CAPPED, rec("c3"), None)
    await store.create(LSTM2, rec("other", LSTM2), None)  # another version: not counted
    await store.create(CAPPED, rec("c0"), None, replace=True)  # its own restart: not twice
    await store.delete("c1")
    await store.create(CAPPED, rec("c4"), None)  # room again


async def test_a_bulk_create_refuses_each_row_past_the_versions_cap(store: StateStore) -> None:
    await store.create(CAPPED, rec("first"), None)
    out = await store.create_many(CAPPED, records("b", 4), [None] * 4)
    assert [isinstance(o, SessionRecord) for o in out] == [True, True, False, False]
    for refused in out[2:]:
        assert isinstance(refused, Unavailable)
        assert "holds its maximum of 3 live sessions (max_sessions" in refused.message
    short = await store.create_many(SHORT, records("s", 2, SHORT), [None] * 2)
    assert [o.ttl_s for o in short if isinstance(o, SessionRecord)] == [SHORT_S, SHORT_S]


# -- Redis alone ---------------------------------------------------------------------------


@pytest.fixture
def raw(redis_url: str) -> Any:
    """A plain client of the test's Redis, to look at the keys themselves."""
    redis = pytest.importorskip("redis", reason=NO_REDIS_PY)
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


async def test_redis_every_key_of_a_session_takes_its_versions_timeout(
        make_redis: MakeStore, raw: Any) -> None:
    kept = dataclasses.replace(SHORT, rewarm_steps=2, features=3)  # kept inputs and a window
    store = await make_redis(record_format=2)
    await store.create(kept, rec("s"), None)
    for n in range(2):
        gathered = await store.gather(kept, ["s"], [None])
        await store.scatter(gathered, random_state(kept, n), [1], np.zeros((1, 1, 1), "f4"),
                            [f"step-{n}"], np.zeros((1, 1, 3), "f4"))
    keys = ("s", "t", "h", "in")  # the hash, the state, the replay window, the kept inputs
    ttls = {key: raw.pttl(f"rnnserve:{key}:s") for key in keys}
    assert all(0 < ms <= SHORT_S * 1000 for ms in ttls.values()), ttls
    marker = raw.get("rnnserve:k:s").decode()
    assert marker.startswith(f"{SHORT_S:g} 2 ")
    assert raw.pttl("rnnserve:k:s") <= SHORT_S * 1000 + 86_400_000
    expiry = raw.zscore("rnnserve:live:lstm", "s")
    assert expiry <= time.time() * 1000 + SHORT_S * 1000 + 50


async def test_redis_another_replica_reads_and_resets_with_the_sessions_timeout(
        make_redis: MakeStore) -> None:
    """The timeout travels with the record: a replica whose own flag says 120 s (and that
    never saw the layout) reads, attaches and resets with the version's."""
    one = await make_redis()
    other = await make_redis(ttl_s=120)
    await one.create(SHORT, rec("s"), None)
    assert (await other.get("s")).ttl_s == SHORT_S
    assert (await other.attach("s", "alice")).ttl_s == SHORT_S
    gathered = await other.gather(LSTM, ["s"], [None])  # a layout without model.json's
    assert gathered.token.records[0].ttl_s == SHORT_S
    assert (await other.reset("s", None)).ttl_s == SHORT_S
    await asyncio.sleep(SHORT_S + 0.3)  # the reset refreshed it by 0.4 s, not 120 s
    with pytest.raises(SessionNotFound, match=f"expired after {SHORT_S:g} s"):
        await other.get("s")


async def test_redis_a_record_of_an_older_release_has_the_readers_timeout(
        make_redis: MakeStore, raw: Any) -> None:
    store = await make_redis()
    await store.create(SHORT, rec("old"), None)
    raw.hdel("rnnserve:s:old", "ttl")  # as the previous release writes it: no `ttl` field
    assert (await store.get("old")).ttl_s == 60
    gathered = await store.gather(SHORT, ["old"], [None])
    assert gathered.token.records[0].ttl_s == SHORT_S  # the layout's, where there is one
    await store.scatter(gathered, random_state(SHORT, 1), *no_ids([1]))
    assert raw.hget("rnnserve:s:old", "ttl") == repr(SHORT_S).encode()  # written back


async def test_redis_expired_sessions_free_their_versions_room_without_any_sweep(
        make_redis: MakeStore) -> None:
    """The cap's count looks up what expired, so sessions that ended while no replica swept
    (here: no sweep runs at all) do not hold the room."""
    both = dataclasses.replace(SHORT, max_sessions=2)
    events: list[tuple[str, str, int]] = []
    store = await make_redis(sweep_interval_s=3600, events=events)
    for record in records("e", 2):
        await store.create(both, record, None)
    with pytest.raises(Unavailable, match="holds its maximum of 2"):
        await store.create(both, rec("e2"), None)
    await asyncio.sleep(SHORT_S + 0.3)
    for record in records("f", 2):
        await store.create(both, record, None)
    assert (await store.sweep()) == {"lstm": 2}
    assert events.count(("expired", "lstm", 0)) == 2  # reported once each, by the sweep


async def test_redis_two_replicas_agree_on_a_versions_cap(make_redis: MakeStore) -> None:
    """Creates racing on two stores of one Redis: exactly the cap succeeds, singles and a
    bulk create alike; every refusal is the version's."""
    one, two = await make_redis(), await make_redis()
    singles = [(one if i % 2 else two).create(CAPPED, rec(f"r{i}"), None) for i in range(8)]
    bulk = two.create_many(CAPPED, records("m", 4), [None] * 4)
    outcomes = await asyncio.gather(*singles, bulk, return_exceptions=True)
    flat: list[Any] = [*outcomes[:8], *outcomes[8]]  # type: ignore[misc]
    made = [o for o in flat if isinstance(o, SessionRecord)]
    refused = [o for o in flat if isinstance(o, RnnServeError)]
    assert len(made) == 3 and len(refused) == 9
    assert all("(max_sessions in its model.json)" in r.message for r in refused)
    assert (await one.version_sessions("lstm")) == {1: 3}


async def test_redis_sweeps_often_enough_for_a_versions_shorter_timeout(
        make_redis: MakeStore) -> None:
    """The store's own 60 s timeout alone means a sweep every 5 s; a version of 0.4 s makes
    it sweep every 0.1 s, so that version's expiries are reported (and counted off the live
    gauge) within about a quarter of its timeout, not seconds later."""
    events: list[tuple[str, str, int]] = []
    store = await make_redis(events=events)
    await store.create(SHORT, rec("brief"), None)
    deadline = time.monotonic() + SHORT_S + 2.5  # well before the 5 s sweep
    while ("expired", "lstm", 0) not in events and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert ("expired", "lstm", 0) in events
