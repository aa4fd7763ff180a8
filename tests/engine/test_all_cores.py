"""Large batches on every core (`--all-cores-rows`): a model version on the CPU with one
intra-op thread per run also gets a session that uses every core, and a batch of at least
that many rows runs there, with the outputs the one-thread session gives."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rnnserve.engine import Engine, StepResult
from rnnserve.engine.runner import usable_cores
from rnnserve.settings import Settings

RNG = np.random.default_rng(31)
MULTI_CORE = pytest.mark.skipif(usable_cores() < 2,
                                reason="the all-cores session exists only with several cores")


class CountingSession:
    """Wraps the runner's real all-cores session and notes the rows of each run on it."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.rows: list[int] = []

    def run(self, names: list[str], feeds: dict[str, np.ndarray]) -> Any:
        self.rows.append(len(feeds["input"]))
        return self.session.run(names, feeds)


@asynccontextmanager
async def serving(tiny_repo: Path, **flags: Any) -> AsyncIterator[Engine]:
    eng = Engine(Settings(models=tiny_repo, grpc_port=0, **flags))
    eng.start()
    await eng.open()
    try:
        yield eng
    finally:
        await eng.aclose()
        eng.close()


@MULTI_CORE
async def test_by_default_batches_of_256_rows_run_on_every_core(tiny_repo: Path) -> None:
    async with serving(tiny_repo) as eng:
        assert eng.runner("tiny-rnn").all_cores_rows == 256


@MULTI_CORE
async def test_a_large_batch_runs_on_every_core_with_the_same_outputs(tiny_repo: Path) -> None:
    async with serving(tiny_repo, all_cores_rows=8) as eng:
        runner = eng.runner("tiny-rnn")
        counting = CountingSession(runner._all_cores)
        runner._all_cores = counting  # type: ignore[assignment]
        x = RNG.normal(size=(20, 4, 3)).astype(np.float32)
        together = (await eng.predict("tiny-rnn", x)).outputs
        assert counting.rows == [20]
        small = (await eng.predict("tiny-rnn", x[:3])).outputs  # under 8 rows: one thread
        assert counting.rows == [20]
        np.testing.assert_allclose(small, together[:3], atol=1e-6)
        for i in (0, 7, 19):
            alone = (await eng.predict("tiny-rnn", x[i:i + 1])).outputs
            np.testing.assert_allclose(together[i], alone[0], atol=1e-6)


@MULTI_CORE
async def test_session_steps_of_a_large_batch_run_on_every_core(tiny_repo: Path) -> None:
    """A gateway's bulk step: outputs and new states as if each session stepped alone (the
    next step, taken alone on both servers, reads the state the first one wrote)."""
    async with serving(tiny_repo, all_cores_rows=8) as eng, \
            serving(tiny_repo, all_cores_rows=0) as reference:
        runner = eng.runner("tiny-gru")
        counting = CountingSession(runner._all_cores)
        runner._all_cores = counting  # type: ignore[assignment]
        x = RNG.normal(size=(12, 2, 3)).astype(np.float32)
        ids = [(await eng.sessions.create("tiny-gru")).id for _ in range(12)]
        bulk = await eng.sessions.step_many("tiny-gru", ids, x, [None] * 12)
        assert counting.rows == [12]
        for i, sid in enumerate(ids):
            one = (await reference.sessions.create("tiny-gru")).id
            alone = await reference.sessions.step(one, x[i])
            assert isinstance(bulk[i], StepResult)
            np.testing.assert_allclose(bulk[i].outputs, alone.outputs, atol=1e-6)
            after = await eng.sessions.step(sid, x[0])
            after_alone = await reference.sessions.step(one, x[0])
            np.testing.assert_allclose(after.outputs, after_alone.outputs, atol=1e-6)


class Overlap:
    """The runs under way on any noted session, and the most at once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = self.most = 0


class ThreadNoting(CountingSession):
    """Also notes the calling thread of each run and the most of its runs at once (and, in
    `overlap`, of all noted sessions' runs); each run is held a little, so that runs allowed
    to overlap do."""

    def __init__(self, session: Any, overlap: Overlap) -> None:
        super().__init__(session)
        self.threads: list[str] = []
        self.overlap = overlap
        self.now = self.most = 0

    def run(self, names: list[str], feeds: dict[str, np.ndarray]) -> Any:
        both = self.overlap
        with both.lock:
            self.threads.append(threading.current_thread().name)
            self.now, both.now = self.now + 1, both.now + 1
            self.most, both.most = max(self.most, self.now), max(both.most, both.now)
        try:
            time.sleep(0.02)
            return super().run(names, feeds)
        finally:
            with both.lock:
                self.now, both.now = self.now - 1, both.now - 1


@MULTI_CORE
async def test_large_batches_are_called_from_one_thread_of_their_own(tiny_repo: Path) -> None:
    """A gateway's bulk steps ran slower after a burst of small batches while the all-cores
    runs were called from the shared pool (bench.bulk_after_burst, docs/bench_peers.md): they
    never run there, and two of them never overlap (they would contend for the same cores).
    Small batches still run side by side on the shared pool's two threads, and all runs
    together stay within the run slots (--inference-workers). The thread ends with the
    server."""
    async with serving(tiny_repo, all_cores_rows=8, inference_workers=2) as eng:
        runner = eng.runner("tiny-rnn")
        overlap = Overlap()
        wide = ThreadNoting(runner._all_cores, overlap)
        small = ThreadNoting(runner.session, overlap)
        runner._all_cores, runner.session = wide, small  # type: ignore[assignment]
        # lengths differ, so no two requests share a batch
        await asyncio.gather(*(eng.predict("tiny-rnn", RNG.normal(size=(rows, t, 3)).astype(
            np.float32)) for rows, first in ((1, 1), (20, 7)) for t in range(first, first + 6)))
        assert sorted(wide.rows) == [20] * 6 and sorted(small.rows) == [1] * 6
        assert small.most == 2 and len(set(small.threads)) == 2  # the shared pool's two
        assert set(wide.threads) == {"onnxruntime-all-cores-tiny-rnn-1_0"}
        assert wide.most == 1
        assert overlap.most == 2
        thread = next(t for t in threading.enumerate()
                      if t.name == "onnxruntime-all-cores-tiny-rnn-1_0")
    thread.join(timeout=10)
    assert not thread.is_alive()


@pytest.mark.parametrize("flags", [{"all_cores_rows": 0}, {"intra_op_threads": 2},
                                   {"intra_op_threads": 0}],
                         ids=["all-cores-rows 0", "intra-op-threads 2", "intra-op-threads 0"])
async def test_no_all_cores_session_when_off_or_runs_already_have_threads(
        tiny_repo: Path, flags: dict[str, int]) -> None:
    """Only with one thread per run (the default) is a second session worth its memory."""
    async with serving(tiny_repo, **flags) as eng:
        runner = eng.runner("tiny-rnn")
        assert runner.all_cores_rows == 0 and runner._all_cores is None
        x = RNG.normal(size=(300, 2, 3)).astype(np.float32)
        assert (await eng.predict("tiny-rnn", x)).outputs.shape[0] == 300
