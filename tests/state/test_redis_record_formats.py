"""Versioned session records in Redis (redis_records): a store writes the format it is set to
and reads both, a write converts the record it writes (no field of the other format is left
behind to be read stale), and a record of a format newer than this release reads is refused by
every path, before anything is read or written: the session stays exactly as it was.

A real redis-server; two stores on it stand for two replicas in the middle of switching
--redis-record-format from 1 to 2."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from rnnserve.errors import SessionFormatTooNew

from tests.state.conftest import (
    GRU,
    LSTM,
    NO_REDIS_PY,
    MakeStore,
    assert_bytes_equal,
    no_ids,
    random_state,
    rec,
)

redis = pytest.importorskip("redis", reason=NO_REDIS_PY)

STEP_OUTPUTS = np.arange(6, dtype=np.float32).reshape(1, 2, 3)


def fields_of(url: str, session_id: str) -> dict[bytes, bytes]:
    client = redis.Redis.from_url(url)
    try:
        return client.hgetall("rnnserve:s:" + session_id)
    finally:
        client.close()


def set_fields(url: str, session_id: str, **values: Any) -> None:
    client = redis.Redis.from_url(url)
    try:
        client.hset("rnnserve:s:" + session_id, mapping=values)
    finally:
        client.close()


def state_key(url: str, session_id: str) -> bytes | None:
    """Format 2's state key, rnnserve:t:{id}, and that it expires with the hash."""
    client = redis.Redis.from_url(url)
    try:
        value = client.get("rnnserve:t:" + session_id)
        if value is not None:
            assert abs(client.pttl("rnnserve:t:" + session_id)
                       - client.pttl("rnnserve:s:" + session_id)) < 1000
        return value
    finally:
        client.close()


def whole(state: dict[str, np.ndarray], layout: Any = LSTM) -> bytes:
    """A state's bytes as format 2 stores them: the tensors back to back in layout order."""
    return b"".join(state[name][:, 0, :].astype("<f4").tobytes()
                    for name, _, _ in layout.tensors)


async def test_format_2_keeps_the_state_in_a_key_of_its_own(make_redis: MakeStore,
                                                             redis_url: str) -> None:
    store = await make_redis(record_format=2)
    state = random_state(LSTM, 1)
    await store.create(LSTM, rec("s"), state)
    fields = fields_of(redis_url, "s")
    assert fields[b"fmt"] == b"2"
    assert state_key(redis_url, "s") == whole(state)
    assert not [f for f in fields if f.startswith(b"t:")]
    _, read = await store.read("s")
    assert_bytes_equal(read, state)
    # the hash holds small values only, so Redis keeps it compact
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.object("encoding", "rnnserve:s:s") == b"listpack"
    finally:
        client.close()
    await store.delete("s")
    assert state_key(redis_url, "s") is None


async def test_default_format_1_is_what_older_releases_read(make_redis: MakeStore,
                                                            redis_url: str) -> None:
    store = await make_redis()
    state = random_state(GRU, 2)
    await store.create(GRU, rec("s", GRU), state)
    fields = fields_of(redis_url, "s")
    assert b"fmt" not in fields and state_key(redis_url, "s") is None
    assert fields[b"t:h0"] == state["h0"][:, 0, :].astype("<f4").tobytes()


async def test_each_format_reads_the_other_and_a_write_converts(make_redis: MakeStore,
                                                                 redis_url: str) -> None:
    one, two = await make_redis(), await make_redis(record_format=2)
    first = random_state(LSTM, 3)
    await one.create(LSTM, rec("a"), first)  # format 1
    await two.create(LSTM, rec("b"), first)  # format 2

    # one batch gathers a record of each format, and reads both exactly
    for store in (one, two):
        gathered = await store.gather(LSTM, ["a", "b"], [None, None])
        assert gathered.errors == [None, None]
        for name, _, _ in LSTM.tensors:
            assert gathered.states[name][:, 0, :].tobytes() == first[name][:, 0, :].tobytes()
            assert gathered.states[name][:, 1, :].tobytes() == first[name][:, 0, :].tobytes()

    # a step by the format 2 replica turns the format 1 record into format 2, and back
    stepped = random_state(LSTM, 4)
    written = await two.scatter(await two.gather(LSTM, ["a"], [None]), stepped,
                                [1], STEP_OUTPUTS, ["step-1"])
    assert written.errors == [None] and written.steps == [1]
    fields = fields_of(redis_url, "a")
    assert fields[b"fmt"] == b"2" and state_key(redis_url, "a") == whole(stepped)
    assert not [f for f in fields if f.startswith(b"t:")]
    _, read = await one.read("a")
    assert_bytes_equal(read, stepped)
    # the step id and outputs mean the same in both formats: the other replica replays it
    replayed = await one.replay("a", "step-1", "alice")
    assert replayed is not None and replayed[1] == 1
    np.testing.assert_array_equal(replayed[0], STEP_OUTPUTS[0])

    again = random_state(LSTM, 5)
    written = await one.scatter(await one.gather(LSTM, ["a"], [None]), again, *no_ids([1]))
    assert written.errors == [None] and written.steps == [2]
    fields = fields_of(redis_url, "a")
    assert b"fmt" not in fields and state_key(redis_url, "a") is None
    assert fields[b"t:h0"] == again["h0"][:, 0, :].astype("<f4").tobytes()
    _, read = await two.read("a")
    assert_bytes_equal(read, again)

    # reset converts too
    reset = random_state(LSTM, 6)
    await one.reset("b", reset)
    fields = fields_of(redis_url, "b")
    assert b"fmt" not in fields and state_key(redis_url, "b") is None
    _, read = await two.read("b")
    assert_bytes_equal(read, reset)
    await two.reset("b", None)
    fields = fields_of(redis_url, "b")
    assert fields[b"fmt"] == b"2" and state_key(redis_url, "b") == bytes(len(whole(reset)))
    assert not [f for f in fields if f.startswith(b"t:")]


@pytest.mark.parametrize("newer", [b"3", b"x"])
async def test_a_newer_format_is_refused_everywhere_and_left_as_it_was(
    make_redis: MakeStore, redis_url: str, newer: bytes,
) -> None:
    store = await make_redis(record_format=2)
    await store.create(LSTM, rec("new"), random_state(LSTM, 7))
    await store.create(LSTM, rec("old"), random_state(LSTM, 8))
    # what a newer release's record looks like to this one: a format it does not know, with
    # fields it would misread
    set_fields(redis_url, "new", fmt=newer, st=b"\x01" * 10)
    before = fields_of(redis_url, "new"), state_key(redis_url, "new")
    assert before[1] is not None

    async def refused(call: Any) -> None:
        with pytest.raises(SessionFormatTooNew) as raised:
            await call
        assert f"record format {newer.decode()}" in raised.value.message
        assert raised.value.http_status == 503 and raised.value.retry_after_s
        assert (fields_of(redis_url, "new"), state_key(redis_url, "new")) == before

    await refused(store.get("new"))
    await refused(store.read("new"))
    await refused(store.reset("new", None))
    await refused(store.delete("new"))
    await refused(store.attach("new", "alice"))
    await refused(store.replay("new", "any", "alice"))
    await refused(store.create(LSTM, rec("new"), None, replace=True))

    # the batch goes on for the other row; the refused one is that row's error
    gathered = await store.gather(LSTM, ["new", "old"], [None, None])
    assert isinstance(gathered.errors[0], SessionFormatTooNew) and gathered.errors[1] is None
    written = await store.scatter(gathered, random_state(LSTM, 9, batch=2), *no_ids([1, 1]))
    assert written.errors[1] is None and written.steps[1] == 1
    assert (fields_of(redis_url, "new"), state_key(redis_url, "new")) == before


async def test_the_write_script_refuses_a_newer_format_that_arrived_after_the_gather(
    make_redis: MakeStore, redis_url: str,
) -> None:
    """A newer replica that writes between this one's gather and scatter changes the gen,
    so that row conflicts and is gathered again (and refused there). The script checks the
    format itself too, ahead of the gen, so no write of a newer format is ever overwritten."""
    store = await make_redis()
    await store.create(LSTM, rec("s"), None)
    gathered = await store.gather(LSTM, ["s"], [None])
    set_fields(redis_url, "s", fmt=b"3")  # the gen unchanged: only the script can notice
    before = fields_of(redis_url, "s")
    written = await store.scatter(gathered, random_state(LSTM, 10), *no_ids([1]))
    assert isinstance(written.errors[0], SessionFormatTooNew)
    assert fields_of(redis_url, "s") == before


async def test_a_store_takes_only_a_format_this_release_writes(redis_url: str) -> None:
    from rnnserve.state.redis import RedisStateStore

    with pytest.raises(ValueError, match="record format 3"):
        RedisStateStore(redis_url, ttl_s=60, max_sessions=10, record_format=3)
