"""Stateful sessions over native REST: chunked steps equal the stateless prediction of the
whole sequence, one session's steps apply one at a time, state export/fork/reset, lifetime
(expiry, cap, LRU), and rejected calls that leave the state exactly as it was."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

MakeClient = Callable[..., Awaitable[httpx.AsyncClient]]
RNG = np.random.default_rng(5)


async def predict_whole(client: httpx.AsyncClient, model: str, seq: np.ndarray,
                        version: int | None = None) -> np.ndarray:
    query = f"?version={version}" if version else ""
    r = await client.post(f"/v1/models/{model}/predict{query}", json={"inputs": [seq.tolist()]})
    assert r.status_code == 200, r.text
    return np.asarray(r.json()["outputs"][0])


def metric_value(text: str, name: str, labels: str) -> float:
    """The sum of a Prometheus sample's values over the series whose labels hold `labels`."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + "{") and labels in line)


async def create(client: httpx.AsyncClient, model: str = "tiny-lstm", **body: object) -> str:
    r = await client.post(f"/v1/models/{model}/sessions", json=body or None)
    assert r.status_code == 201, r.text
    return str(r.json()["session_id"])


async def step(client: httpx.AsyncClient, sid: str, x: np.ndarray) -> httpx.Response:
    return await client.post(f"/v1/sessions/{sid}/step", json={"inputs": x.tolist()})


async def state_of(client: httpx.AsyncClient, sid: str) -> dict:
    r = await client.get(f"/v1/sessions/{sid}/state")
    assert r.status_code == 200, r.text
    return r.json()


@pytest.mark.parametrize("model", ["tiny-lstm", "tiny-gru", "tiny-rnn"])
async def test_chunked_steps_equal_whole_prediction(client: httpx.AsyncClient, model: str) -> None:
    seq = RNG.normal(size=(30, 3)).astype(np.float32)
    want = await predict_whole(client, model, seq)
    sid = await create(client, model)
    got, done = [], 0
    for size in (1, 4, 1, 7, 2, 10, 5):
        r = await step(client, sid, seq[done:done + size])
        assert r.status_code == 200, r.text
        done += size
        assert r.json()["steps"] == done
        got.extend(r.json()["outputs"])
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-5)


@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(cuts=st.lists(st.integers(1, 24), min_size=1, max_size=6), seed=st.integers(0, 10_000))
async def test_any_chunking_equals_whole(make_client: MakeClient, cuts: list[int],
                                         seed: int) -> None:
    async with await make_client() as client:
        seq = np.random.default_rng(seed).normal(size=(sum(cuts), 3)).astype(np.float32)
        want = await predict_whole(client, "tiny-gru", seq)
        sid = await create(client, "tiny-gru")
        got, done = [], 0
        for size in cuts:
            r = await step(client, sid, seq[done:done + size])
            done += size
            got.extend(r.json()["outputs"])
        np.testing.assert_allclose(np.asarray(got), want, atol=1e-5)


async def test_session_ids_are_unguessable_and_described(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/models/tiny-lstm/sessions")
    body = r.json()
    assert r.status_code == 201 and body["model"] == "tiny-lstm" and body["version"] == 2
    assert len(body["session_id"]) >= 22  # 128 random bits, base64url
    assert body["expires_at"].endswith("Z") and body["steps"] == 0
    ids = {await create(client) for _ in range(50)}
    assert len(ids) == 50
    await step(client, body["session_id"], np.zeros((3, 3), np.float32))
    desc = (await client.get(f"/v1/sessions/{body['session_id']}")).json()
    assert desc["steps"] == 3 and desc["last_used"] >= desc["created"]


async def test_concurrent_steps_of_one_session_apply_one_at_a_time(
    client: httpx.AsyncClient,
) -> None:
    """20 steps sent at once: none lost or applied twice, and the outputs are exactly those
    of the inputs applied one after another in the order the server reports."""
    sid = await create(client, "tiny-gru")
    xs = RNG.normal(size=(20, 1, 3)).astype(np.float32)
    replies = await asyncio.gather(*(step(client, sid, x) for x in xs))
    assert all(r.status_code == 200 for r in replies)
    order = sorted(range(20), key=lambda i: replies[i].json()["steps"])
    assert [replies[i].json()["steps"] for i in order] == list(range(1, 21))
    applied = np.concatenate([xs[i] for i in order])
    want = await predict_whole(client, "tiny-gru", applied)
    got = np.concatenate([np.asarray(replies[i].json()["outputs"]) for i in order])
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert order == list(range(20))  # and in arrival order


async def test_state_export_fork_and_reset(client: httpx.AsyncClient) -> None:
    seq = RNG.normal(size=(12, 3)).astype(np.float32)
    sid = await create(client)
    await step(client, sid, seq[:6])
    snapshot = await state_of(client, sid)
    assert set(snapshot["state"]) == {"h0", "c0"}
    assert snapshot["state"]["c0"]["shape"] == [2, 1, 8] and snapshot["steps"] == 6

    fork = await create(client, state=snapshot["state"])
    a, b = await step(client, sid, seq[6:]), await step(client, fork, seq[6:])
    np.testing.assert_array_equal(a.json()["outputs"], b.json()["outputs"])
    whole = await predict_whole(client, "tiny-lstm", seq)
    np.testing.assert_allclose(np.asarray(a.json()["outputs"]), whole[6:], atol=1e-5)

    r = await client.post(f"/v1/sessions/{sid}/reset")
    assert r.status_code == 200 and r.json()["steps"] == 0
    again = await step(client, sid, seq)
    np.testing.assert_allclose(np.asarray(again.json()["outputs"]), whole, atol=1e-5)

    r = await client.post(f"/v1/sessions/{sid}/reset", json={"state": snapshot["state"]})
    assert r.status_code == 200
    resumed = await step(client, sid, seq[6:])
    np.testing.assert_allclose(np.asarray(resumed.json()["outputs"]), whole[6:], atol=1e-5)


async def test_session_keeps_its_model_version(client: httpx.AsyncClient) -> None:
    seq = RNG.normal(size=(5, 3)).astype(np.float32)
    sid = await create(client, "tiny-lstm", version=1)
    got = (await step(client, sid, seq)).json()["outputs"]
    np.testing.assert_allclose(np.asarray(got), await predict_whole(client, "tiny-lstm", seq, 1),
                               atol=1e-5)
    assert (await client.get(f"/v1/sessions/{sid}")).json()["version"] == 1


async def test_delete_then_unknown(client: httpx.AsyncClient) -> None:
    sid = await create(client)
    assert (await client.delete(f"/v1/sessions/{sid}")).status_code == 204
    r = await step(client, sid, np.zeros((1, 3), np.float32))
    assert r.status_code == 404 and "unknown session" in r.json()["error"]
    assert (await client.delete(f"/v1/sessions/{sid}")).status_code == 404


async def test_idle_session_expires_with_a_clear_404(make_client: MakeClient) -> None:
    async with await make_client(session_ttl_s=0.3) as client:
        sid = await create(client)
        keep = await create(client)
        for _ in range(3):  # used sessions stay alive
            await asyncio.sleep(0.15)
            assert (await step(client, keep, np.zeros((1, 3), np.float32))).status_code == 200
        r = await step(client, sid, np.zeros((1, 3), np.float32))
        assert r.status_code == 404
        assert "expired after 0.3 s idle" in r.json()["error"]
        r = await client.get("/v1/sessions/never-existed")
        assert r.status_code == 404 and "unknown session" in r.json()["error"]
        metrics = (await client.get("/metrics")).text
        assert 'rnnserve_sessions_total{event="expired",model="tiny-lstm"} 1.0' in metrics


async def test_session_cap_rejects_with_retry_after(make_client: MakeClient) -> None:
    async with await make_client(max_sessions=2) as client:
        await create(client)
        await create(client)
        r = await client.post("/v1/models/tiny-lstm/sessions")
        assert r.status_code == 503 and r.headers["retry-after"]
        assert "maximum of 2 live sessions" in r.json()["error"]


async def test_lru_eviction_when_configured(make_client: MakeClient) -> None:
    async with await make_client(max_sessions=2, when_full="lru") as client:
        old, recent = await create(client), await create(client)
        await step(client, recent, np.zeros((1, 3), np.float32))
        newest = await create(client)
        r = await step(client, old, np.zeros((1, 3), np.float32))
        assert r.status_code == 404 and "evicted" in r.json()["error"]
        for sid in (recent, newest):
            assert (await client.get(f"/v1/sessions/{sid}")).status_code == 200


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({"inputs": [[1.0, 2.0]]}, 400, "2 feature(s)"),
        ({"inputs": []}, 400, "empty"),
        ({"inputs": [[1.0, 2.0, 3.0], [1.0]]}, 400, "ragged"),
        ({"inputs": [[1.0, 2.0, 1e39]]}, 400, "finite"),
        ({"inputs": [[0.0, 0.0, 0.0]] * 1001}, 413, "at most 1000"),
        ({"inputs": [[1, 2, 3]], "extra": 1}, 400, "unknown field"),
        ({}, 400, '"inputs" is missing'),
    ],
)
async def test_rejected_step_leaves_state_unchanged(
    client: httpx.AsyncClient, body: object, status: int, fragment: str
) -> None:
    sid = await create(client)
    await step(client, sid, RNG.normal(size=(4, 3)).astype(np.float32))
    before = await state_of(client, sid)
    r = await client.post(f"/v1/sessions/{sid}/step", json=body)
    assert r.status_code == status and fragment in r.json()["error"]
    assert await state_of(client, sid) == before
    r = await client.post(f"/v1/sessions/{sid}/reset", json={"state": {"h0": {"data": [1.0]}}})
    assert r.status_code == 400 and "expected [2, 1, 8]" in r.json()["error"]
    assert await state_of(client, sid) == before


async def test_overload_is_503_and_leaves_sessions_unchanged(make_client: MakeClient) -> None:
    async with await make_client(max_queue=4, max_delay_ms=5) as client:
        sids = [await create(client, "tiny-gru") for _ in range(60)]
        replies = await asyncio.gather(*(step(client, s, np.ones((1, 3), np.float32))
                                         for s in sids))
        codes = [r.status_code for r in replies]
        assert 503 in codes and 200 in codes
        for sid, r in zip(sids, replies, strict=True):
            steps = (await client.get(f"/v1/sessions/{sid}")).json()["steps"]
            assert steps == (1 if r.status_code == 200 else 0)
            if r.status_code == 503:
                assert r.headers["retry-after"] and "retry" in r.json()["error"]


async def test_gateway_steps_many_sessions_with_per_item_errors(
    client: httpx.AsyncClient,
) -> None:
    sids = [await create(client, "tiny-gru") for _ in range(40)]
    x = RNG.normal(size=(40, 2, 3)).astype(np.float32)
    items = [{"session_id": s, "inputs": x[i].tolist()} for i, s in enumerate(sids)]
    items[5]["inputs"] = [[1.0, 2.0]]  # wrong feature count
    items[9] = {"session_id": "nope", "inputs": [[0.0, 0.0, 0.0]]}
    items.append({"inputs": [[0.0, 0.0, 0.0]]})  # no session id
    r = await client.post("/v1/models/tiny-gru/steps", json={"steps": items})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert len(results) == 41 and [res["session_id"] for res in results[:40]] == [
        it["session_id"] for it in items[:40]]
    assert "feature" in results[5]["error"] and "unknown session" in results[9]["error"]
    assert "session_id" in results[40]["error"]
    assert (await client.get(f"/v1/sessions/{sids[5]}")).json()["steps"] == 0
    for i in (0, 17, 39):
        want = await predict_whole(client, "tiny-gru", x[i])
        np.testing.assert_allclose(np.asarray(results[i]["outputs"]), want, atol=1e-5)
        assert results[i]["steps"] == 2
    metrics = (await client.get("/metrics")).text
    assert "rnnserve_batch_rows_bucket" in metrics


async def test_gateway_larger_than_max_batch_runs_in_chunks(
    make_client: Callable[..., Awaitable[httpx.AsyncClient]],
) -> None:
    """25 sessions with max_batch 8: four runs, every session stepped once, each answer what
    that session alone would get, in the order asked."""
    async with await make_client(max_batch=8) as small:
        sids = [await create(small, "tiny-lstm") for _ in range(25)]
        x = RNG.normal(size=(25, 1, 3)).astype(np.float32)
        before = (await small.get("/metrics")).text
        r = await small.post("/v1/models/tiny-lstm/steps", json={
            "steps": [{"session_id": s, "inputs": x[i].tolist()} for i, s in enumerate(sids)]})
        after = (await small.get("/metrics")).text
        results = r.json()["results"]
        assert [res["session_id"] for res in results] == sids
        assert all(res["steps"] == 1 for res in results)
        for i in (0, 7, 8, 24):
            want = await predict_whole(small, "tiny-lstm", x[i])
            np.testing.assert_allclose(np.asarray(results[i]["outputs"]), want, atol=1e-5)
        runs = [metric_value(text, "rnnserve_batch_rows_count", 'model="tiny-lstm"')
                for text in (before, after)]
        assert runs[1] - runs[0] == 4


async def test_gateway_rejects_other_models_sessions(client: httpx.AsyncClient) -> None:
    lstm = await create(client, "tiny-lstm")
    r = await client.post("/v1/models/tiny-gru/steps",
                          json={"steps": [{"session_id": lstm, "inputs": [[0, 0, 0]]}]})
    assert "belongs to model 'tiny-lstm'" in r.json()["results"][0]["error"]
    r = await client.post("/v1/models/tiny-gru/steps", json={"steps": []})
    assert r.status_code == 400


async def test_step_id_makes_a_retry_idempotent(client: httpx.AsyncClient) -> None:
    sid = await create(client, "tiny-gru")
    body = {"inputs": [[0.3, 0.1, -0.2]], "step_id": "s-1"}
    first = await client.post(f"/v1/sessions/{sid}/step", json=body)
    again = await client.post(f"/v1/sessions/{sid}/step", json=body)
    assert again.json() == first.json() and first.json()["steps"] == 1
    other = await client.post(f"/v1/sessions/{sid}/step", json={**body, "step_id": "s-2"})
    assert other.json()["steps"] == 2
    plain = await client.post(f"/v1/sessions/{sid}/step", json={"inputs": body["inputs"]})
    assert plain.json()["steps"] == 3
    again = await client.post(f"/v1/sessions/{sid}/step", json={**body, "step_id": "s-2"})
    assert again.json() == other.json()  # replayed, although a step came after it
    first_again = await client.post(f"/v1/sessions/{sid}/step", json=body)
    assert first_again.json() == first.json()  # every id in the window replays
    assert (await client.get(f"/v1/sessions/{sid}")).json()["steps"] == 3
    bad = await client.post(f"/v1/sessions/{sid}/step", json={**body, "step_id": ""})
    assert bad.status_code == 400 and "step_id" in bad.json()["error"]
