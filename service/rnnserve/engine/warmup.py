"""A model's warmup (`warmup` in model.json): inputs run once when an instance loads, before it
serves, so that the first requests do not pay for ONNX Runtime's first runs of those shapes
(memory arenas, CUDA kernels chosen per shape). Each sample runs from a zero state; a sample
that does not fit the model, or a run that fails, fails the load with the file and the field
named, as Triton's model_warmup does."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from rnnserve.engine.model_settings import ModelSettings, ModelSettingsError, WarmupSample
from rnnserve.engine.signature import Signature

Tensors = dict[str, np.ndarray]
RunSync = Callable[[Tensors, tuple[str, ...]], Tensors]


@dataclass(frozen=True)
class WarmupReport:
    """What the warmup ran at load: how many runs, rows (sequences) and timesteps in all."""

    runs: int = 0
    rows: int = 0
    timesteps: int = 0
    seconds: float = 0.0

    def describe(self) -> dict[str, float | int]:
        return {"runs": self.runs, "rows": self.rows, "timesteps": self.timesteps,
                "seconds": round(self.seconds, 6)}


def warmup_inputs(sample: WarmupSample, signature: Signature, seed: int) -> np.ndarray:
    """The [batch, timesteps, features] input of one sample."""
    shape = (sample.batch, sample.timesteps, signature.input_size)
    if sample.inputs is not None:
        sequence = np.asarray(sample.inputs, np.float32)
        return np.ascontiguousarray(np.broadcast_to(sequence, shape))
    if sample.data == "random":
        return np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)
    return np.zeros(shape, np.float32)


def run_warmup(run: RunSync, signature: Signature, settings: ModelSettings) -> WarmupReport:
    """Run every warmup sample once (blocking: at load, in the loading thread)."""
    started = time.perf_counter()
    rows = timesteps = 0
    where = settings.where("warmup")
    for i, sample in enumerate(settings.warmup):
        if sample.inputs is not None and len(sample.inputs[0]) != signature.input_size:
            raise ModelSettingsError(where, f"warmup[{i}].inputs", f"has {len(sample.inputs[0])} "
                                     f"features per timestep; the model takes "
                                     f"{signature.input_size}")
        feeds: Tensors = {signature.input_name: warmup_inputs(sample, signature, seed=i)}
        for state in signature.states:
            feeds[state.input] = np.zeros(state.shape(sample.batch), np.float32)
        try:
            run(feeds, signature.output_names)
        except Exception as exc:  # the model's own failure on these inputs: name the field
            raise ModelSettingsError(where, f"warmup[{i}]", f"failed to run: {exc}") from exc
        rows += sample.batch
        timesteps += sample.batch * sample.timesteps
    return WarmupReport(len(settings.warmup), rows, timesteps,
                        time.perf_counter() - started if settings.warmup else 0.0)
