"""`inference_workers` in a model's model.json bounds that model's overlapping ONNX Runtime
runs, whatever the server's --inference-workers (issue 19, item 1). The runs are counted as
they enter and leave ONNX Runtime; each is held a little so that runs that may overlap do."""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from rnnserve.engine import Engine
from rnnserve.settings import Settings


def count_overlap(runner: Any) -> list[int]:
    """Wrap the runner's timed run (in its worker thread) to record the most runs at once."""
    lock, now, most = threading.Lock(), [0], [0]
    inner = runner._run_timed

    def counted(feeds: Any) -> Any:
        with lock:
            now[0] += 1
            most[0] = max(most[0], now[0])
        try:
            time.sleep(0.05)  # hold the worker so that runs allowed to overlap do
            return inner(feeds)
        finally:
            with lock:
                now[0] -= 1

    runner._run_timed = counted
    return most


async def test_a_models_inference_workers_bound_its_overlapping_runs(
        tiny_repo: Path, tmp_path: Path) -> None:
    for name in ("tiny-gru", "tiny-rnn"):
        shutil.copytree(tiny_repo / name, tmp_path / name)
    (tmp_path / "tiny-gru" / "model.json").write_text(json.dumps({"inference_workers": 1}))
    engine = Engine(Settings(models=tmp_path, grpc_port=0, inference_workers=4))
    engine.start()
    await engine.open()
    try:
        most = {name: count_overlap(engine.runner(name)) for name in ("tiny-gru", "tiny-rnn")}
        rng = np.random.default_rng(0)
        for name in most:  # lengths differ: no two requests share a batch
            await asyncio.gather(*(engine.predict(name, rng.normal(size=(1, t, 3)).astype(
                np.float32)) for t in range(1, 9)))
        assert most["tiny-gru"][0] == 1
        assert most["tiny-rnn"][0] > 1  # the server's 4 workers: its runs overlap
    finally:
        await engine.aclose()
        engine.close()
