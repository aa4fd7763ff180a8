"""Triton's model configuration and statistics extensions over the engine, once for HTTP and
gRPC: `model_config` answers GET /v2/models/{m}[/versions/{v}]/config and gRPC ModelConfig,
`model_statistics` answers GET /v2/models[/{m}[/versions/{v}]]/stats and gRPC ModelStatistics.
Both return Triton's JSON shape in plain types (the HTTP body as it is; gRPC parses it into its
messages), so the two transports cannot drift apart.

The configuration describes a stateful model the way Triton's sequence batcher with implicit
state does, so Triton-aware tools read it correctly: `input` and `output` are the sequence
tensors, dims [-1, -1, F] (batch and time variable); each carried state is a
`sequence_batching.state` entry of dims [layers·directions, 1, hidden] (a v2 sequence is one
row; the batch is on axis 1, axis 0 is layers, hence `max_batch_size: 0`: Triton's own batch
dimension would be axis 0) starting from zeros; the session TTL is
`max_sequence_idle_microseconds`. rnnserve's batcher is the same for sessions and stateless
work, so its settings are `parameters` (`max_batch`, `max_delay_ms`), not Triton's
`dynamic_batching`, which excludes `sequence_batching`. A model that cannot be stepped (served
for predict only) has no `sequence_batching`; its state tensors are then optional inputs and
outputs of dims [layers·directions, -1, hidden]."""

from __future__ import annotations

from typing import Any

from rnnserve.engine.engine import Engine
from rnnserve.engine.runner import Runner
from rnnserve.engine.statistics import ModelStatsDict
from rnnserve.engine.v2 import PLATFORM

BACKEND = "onnxruntime"
FP32 = "TYPE_FP32"

ModelConfigDict = dict[str, Any]
"""Triton's ModelConfig as JSON: field names as in model_config.proto, enums by name."""


def model_config(engine: Engine, model: str, version: str | None) -> ModelConfigDict:
    """The configuration of a model version (the highest when `version` is None or "");
    ModelNotFound (404) for an unknown model or version."""
    return config_of(engine.runner(model, version or None))


def config_of(runner: Runner) -> ModelConfigDict:
    """`model_config` of a runner, with its effective settings (its model.json's, else the
    server's flags): the batcher's, the session TTL, and the other per-model settings under
    `parameters`."""
    settings = runner.settings
    session_ttl_s, max_batch, max_delay_ms = (settings.session_ttl_s, settings.max_batch,
                                              settings.max_delay_ms)
    sig = runner.signature
    inputs: list[dict[str, Any]] = [
        {"name": sig.input_name, "data_type": FP32, "dims": [-1, -1, sig.input_size]}]
    outputs: list[dict[str, Any]] = [
        {"name": sig.output_name, "data_type": FP32, "dims": [-1, -1, sig.output_size]}]
    config: ModelConfigDict = {
        "name": runner.name,
        "platform": PLATFORM,
        "backend": BACKEND,
        "max_batch_size": 0,
        "input": inputs,
        "output": outputs,
        "default_model_filename": runner.source.onnx_path.name,
        "parameters": {
            "max_batch": {"string_value": str(max_batch)},
            "max_delay_ms": {"string_value": f"{max_delay_ms:g}"},
            "max_sessions": {"string_value": str(settings.max_sessions)},
            "inference_workers": {"string_value": str(settings.inference_workers)},
            "rewarm_steps": {"string_value": str(settings.rewarm_steps)},
            "cell": {"string_value": sig.cell},
            "directions": {"string_value": str(sig.directions)},
        },
    }
    if runner.streaming.streamable:
        config["sequence_batching"] = {
            "max_sequence_idle_microseconds": round(session_ttl_s * 1_000_000),
            "state": [
                {"input_name": s.input, "output_name": s.output, "data_type": FP32,
                 "dims": [s.layers, 1, s.hidden],
                 "initial_state": [{"name": f"{s.input}_zeros", "data_type": FP32,
                                    "dims": [s.layers, 1, s.hidden], "zero_data": True}]}
                for s in sig.states
            ],
        }
    else:
        for s in sig.states:
            inputs.append({"name": s.input, "data_type": FP32, "dims": [s.layers, -1, s.hidden],
                           "optional": True})
            outputs.append({"name": s.output, "data_type": FP32,
                            "dims": [s.layers, -1, s.hidden]})
    return config


def model_statistics(engine: Engine, model: str | None, version: str | None
                     ) -> dict[str, list[ModelStatsDict]]:
    """Every loaded version of every model (no `model`), every version of one model (no
    `version`), or one version; ModelNotFound (404) for an unknown model or version."""
    if model:
        runner = engine.runner(model, version or None)  # checks the model and the version
        if version:
            runners = [runner]
        else:
            versions = engine.models.versions.get(runner.name, {})
            runners = [versions[v] for v in sorted(versions)]
    else:
        runners = [engine.models.versions[name][v] for name in sorted(engine.models.versions)
                   for v in sorted(engine.models.versions[name])]
    return {"model_stats": [r.stats.as_dict(r.name, r.version) for r in runners]}
