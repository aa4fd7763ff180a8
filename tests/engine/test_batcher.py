"""The batcher, at the engine: crowds of concurrent work give exactly the results of the same
work alone, batches really form, a failing row fails alone, cancelled callers poison nothing."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
from rnnserve.engine import Engine
from rnnserve.errors import InferenceFailed
from rnnserve.settings import Settings

RNG = np.random.default_rng(23)


def batch_count(engine: Engine, model: str) -> tuple[float, float]:
    """(number of ONNX Runtime calls, rows run) recorded by the batcher for `model`."""
    calls = rows = 0.0
    for metric in engine.metrics.batch_rows.collect():
        for sample in metric.samples:
            if sample.labels.get("model") != model:
                continue
            if sample.name.endswith("_count"):
                calls += sample.value
            elif sample.name.endswith("_sum"):
                rows += sample.value
    return calls, rows


async def test_crowd_of_predictions_equals_each_alone(engine: Engine) -> None:
    seqs = [RNG.normal(size=(int(n), 3)).astype(np.float32) for n in RNG.integers(1, 6, 120)]
    alone = [(await engine.predict("tiny-lstm", [s])).outputs[0] for s in seqs]
    before = batch_count(engine, "tiny-lstm")
    crowd = await asyncio.gather(*(engine.predict("tiny-lstm", [s]) for s in seqs))
    for want, got in zip(alone, crowd, strict=True):
        np.testing.assert_allclose(got.outputs[0], want, rtol=0, atol=1e-6)
    calls, rows = (a - b for a, b in zip(batch_count(engine, "tiny-lstm"), before, strict=True))
    assert rows == 120 and calls < 60  # coalesced: far fewer calls than requests


async def test_crowd_of_session_steps_equals_whole_sequences(engine: Engine) -> None:
    n_sessions, steps = 64, 8
    seqs = RNG.normal(size=(n_sessions, steps, 3)).astype(np.float32)
    records = [await engine.sessions.create("tiny-gru") for _ in range(n_sessions)]
    outs: list[list[np.ndarray]] = [[] for _ in range(n_sessions)]

    async def client(i: int) -> None:
        for t in range(steps):
            result = await engine.sessions.step(records[i].id, seqs[i, t:t + 1])
            outs[i].append(result.outputs)

    before = batch_count(engine, "tiny-gru")
    await asyncio.gather(*(client(i) for i in range(n_sessions)))
    calls, rows = (a - b for a, b in zip(batch_count(engine, "tiny-gru"), before, strict=True))
    assert rows == n_sessions * steps and calls < rows / 4
    want = (await engine.predict("tiny-gru", seqs)).outputs
    np.testing.assert_allclose(np.stack([np.concatenate(o) for o in outs]), want, atol=1e-5)


async def test_large_request_is_split_into_max_batch_chunks(tiny_repo: Path) -> None:
    eng = Engine(Settings(models=tiny_repo, grpc_port=0, max_batch=16))
    eng.start()
    await eng.open()
    try:
        x = RNG.normal(size=(50, 4, 3)).astype(np.float32)
        got = (await eng.predict("tiny-rnn", x)).outputs
        calls, rows = batch_count(eng, "tiny-rnn")
        assert rows >= 50 and calls >= 4
        for i in (0, 17, 49):
            alone = (await eng.predict("tiny-rnn", x[i:i + 1])).outputs
            np.testing.assert_allclose(got[i], alone[0], atol=1e-6)
    finally:
        await eng.aclose()
        eng.close()


async def test_a_failing_row_does_not_fail_its_neighbours(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ONNX Runtime does not fail on valid input, so the fault is injected: a run fails
    whenever its batch holds the poisoned value."""
    runner = engine.runner("tiny-gru")
    real_run = runner.run

    async def flaky_run(feeds: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], float]:
        if (feeds["input"] == 99.0).any():
            raise InferenceFailed("poisoned row")
        return await real_run(feeds)

    monkeypatch.setattr(runner, "run", flaky_run)
    good = RNG.normal(size=(30, 1, 2, 3)).astype(np.float32)
    poison = np.full((1, 2, 3), 99.0, np.float32)
    tasks = [engine.predict("tiny-gru", g) for g in good[:15]]
    tasks.append(engine.predict("tiny-gru", poison))
    tasks += [engine.predict("tiny-gru", g) for g in good[15:]]
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(results[15], InferenceFailed)
    ok = [r for i, r in enumerate(results) if i != 15]
    assert all(not isinstance(r, BaseException) for r in ok)
    monkeypatch.setattr(runner, "run", real_run)
    for g, r in zip(good, ok, strict=True):
        alone = (await engine.predict("tiny-gru", g)).outputs
        np.testing.assert_allclose(r.outputs, alone, atol=1e-6)  # type: ignore[union-attr]


async def test_cancelled_callers_do_not_poison_a_batch(engine: Engine) -> None:
    records = [await engine.sessions.create("tiny-lstm") for _ in range(40)]
    x = np.ones((1, 3), np.float32)
    tasks = [asyncio.ensure_future(engine.sessions.step(r.id, x)) for r in records]
    await asyncio.sleep(0)  # queued, not yet run
    for task in tasks[::2]:
        task.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    kept = [r for r in results[1::2]]
    assert all(not isinstance(r, BaseException) for r in kept)
    assert all(isinstance(r, asyncio.CancelledError) for r in results[::2])
    for rec in records[1::2]:
        assert (await engine.sessions.describe(rec.id)).steps == 1
    after = await engine.sessions.step(records[0].id, x)  # the engine still serves
    assert after.steps in (1, 2)
