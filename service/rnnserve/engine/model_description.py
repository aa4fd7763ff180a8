"""A served model version described in plain types: what `GET /v1/models/{m}` answers and
what a client needs to call it."""

from __future__ import annotations

from typing import Any

from rnnserve.engine.runner import Runner


def model_description(runner: Runner, versions: list[int]) -> dict[str, Any]:
    """`versions`: every served version of the model; `streamable` false means predict only
    (the reason says why: a bidirectional model, say)."""
    sig, meta = runner.signature, runner.source.metadata
    return {
        "name": runner.name,
        "version": runner.version,
        "versions": versions,
        "cell": sig.cell,
        "description": meta.get("description", ""),
        "input_size": sig.input_size,
        "output_size": sig.output_size,
        "hidden_size": sig.states[0].hidden if sig.states else None,
        "layers": sig.layers,  # the state's axis 0 is layers × directions
        "directions": sig.directions,
        "streamable": runner.streaming.streamable,  # sessions and v2 sequences allowed
        "not_streamable_reason": runner.streaming.reason,
        "inputs": {"name": sig.input_name, "shape": [-1, -1, sig.input_size]},
        "outputs": {"name": sig.output_name, "shape": [-1, -1, sig.output_size]},
        "state": [
            {"input": s.input, "output": s.output, "shape": [s.layers, -1, s.hidden]}
            for s in sig.states
        ],
        "features": meta.get("features", []),
        "output_features": meta.get("outputs", []),
        "metrics": meta.get("metrics", {}),
        "provider": runner.provider,
        "settings": runner.settings.describe(),  # model.json's, else the flags'
        "warmup_at_load": runner.warmed.describe(),
    }
