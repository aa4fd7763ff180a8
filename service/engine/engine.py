"""The facade every transport calls: model metadata, stateless prediction and raw tensor
inference. It owns the loaded models and the worker pool, enforces the request limits and
checks every tensor, so that REST, KServe v2 and (later) gRPC behave and fail alike."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from service import __version__
from service.engine.models import LoadedModels
from service.engine.providers import choose_providers
from service.engine.runner import Runner, RunnerOptions, Tensors
from service.engine.signature import Signature, StateTensor
from service.engine.tensors import require_finite, require_sequence
from service.errors import InvalidInput, PayloadTooLarge, Unavailable
from service.settings import Settings

log = logging.getLogger("rnnserve.engine")

StateDict = dict[str, np.ndarray]
"""One sequence's state, keyed by state input name (h0, c0), each [layers, 1, hidden]."""


@dataclass(frozen=True)
class Prediction:
    """Per sequence, in request order: outputs [time, out] and, if asked, the final state."""

    model: str
    version: int
    outputs: list[np.ndarray] | np.ndarray  # an array [batch, time, out] when lengths agree
    states: list[StateDict] | None


class Engine:
    """Loads the repository at `start()` and serves it until `close()`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.models = LoadedModels()
        self._pool: ThreadPoolExecutor | None = None
        self.started = False

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Create the worker pool and load every model (blocking: call before serving)."""
        s = self.settings
        self._pool = ThreadPoolExecutor(s.inference_workers, thread_name_prefix="onnxruntime")
        options = RunnerOptions(s.device, tuple(choose_providers(s.device)), s.intra_op_threads)
        self.models = LoadedModels.load(s.models, options, self._pool)
        self.started = True
        log.info("serving %d model(s) from %s; %d problem(s)", len(self.models.versions),
                 s.models, len(self.models.problems))

    def close(self) -> None:
        self.started = False
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    @property
    def ready(self) -> bool:
        if not self.started:
            return False
        return not (self.settings.strict_readiness and self.models.problems)

    def runner(self, model: str, version: str | int | None = None) -> Runner:
        if not self.started:
            raise Unavailable("the server is starting or stopping", retry_after_s=1)
        return self.models.get(model, version)

    # -- metadata --------------------------------------------------------------------------

    def server_info(self) -> dict[str, Any]:
        return {"name": "rnnserve", "version": __version__}

    def describe(self, model: str, version: str | int | None = None) -> dict[str, Any]:
        """Everything a client needs to call a model, in plain types."""
        runner = self.runner(model, version)
        sig, meta = runner.signature, runner.source.metadata
        return {
            "name": runner.name,
            "version": runner.version,
            "versions": sorted(self.models.versions[runner.name]),
            "cell": sig.cell,
            "description": meta.get("description", ""),
            "input_size": sig.input_size,
            "output_size": sig.output_size,
            "hidden_size": sig.states[0].hidden if sig.states else None,
            "layers": sig.states[0].layers if sig.states else None,
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
        }

    # -- limits ----------------------------------------------------------------------------

    def _check_limits(self, sequences: int, longest: int, total: int) -> None:
        s = self.settings
        if sequences > s.max_sequences:
            raise PayloadTooLarge(f"{sequences} sequences in one request; the limit is "
                                  f"{s.max_sequences}: split the request")
        if longest > s.max_timesteps:
            raise PayloadTooLarge(f"a sequence of {longest} timesteps; the limit is "
                                  f"{s.max_timesteps}: send it in chunks through a session")
        if total > s.max_total_timesteps:
            raise PayloadTooLarge(f"{total} timesteps in one request; the limit is "
                                  f"{s.max_total_timesteps}: split the request")

    # -- stateless prediction --------------------------------------------------------------

    async def predict(
        self,
        model: str,
        sequences: Sequence[np.ndarray] | np.ndarray,
        *,
        version: str | int | None = None,
        initial_states: Sequence[Mapping[str, np.ndarray] | None] | None = None,
        return_state: bool = False,
    ) -> Prediction:
        """Run each sequence from its initial state (zeros unless given). Sequences of equal
        length share one ONNX Runtime call; different lengths never share one, so padding
        can never leak into a result. A 3-D array (all the same length) is one call as is."""
        runner = self.runner(model, version)
        sig = runner.signature
        if len(sequences) == 0:
            raise InvalidInput("inputs is empty: send at least one sequence")
        if isinstance(sequences, np.ndarray):
            if sequences.ndim != 3:
                raise InvalidInput(f"inputs must be a list of sequences (time × features); "
                                   f"got an array of shape {list(sequences.shape)}")
            require_sequence(sequences[0], sig.input_size, "inputs[0]")
            lengths = [int(sequences.shape[1])] * len(sequences)
        else:
            for i, seq in enumerate(sequences):
                require_sequence(seq, sig.input_size, f"inputs[{i}]")
            lengths = [int(seq.shape[0]) for seq in sequences]
        self._check_limits(len(sequences), max(lengths), sum(lengths))
        if isinstance(sequences, np.ndarray):
            require_finite(sequences, "inputs")
        else:
            for i, seq in enumerate(sequences):
                require_finite(seq, f"inputs[{i}]")
        if initial_states is not None and len(initial_states) != len(sequences):
            raise InvalidInput(f"initial_states has {len(initial_states)} entries; give one per "
                               f"sequence ({len(sequences)}), null for zeros")
        states = [
            self._check_state(sig, st, f"initial_states[{i}]")
            for i, st in enumerate(initial_states or [None] * len(sequences))
        ]

        groups: dict[int, list[int]] = {}
        for i, length in enumerate(lengths):
            groups.setdefault(length, []).append(i)
        runs = [self._run_group(runner, sequences, states, rows) for rows in groups.values()]
        results = await asyncio.gather(*runs)

        outputs: list[np.ndarray] | np.ndarray
        if len(groups) == 1:
            outputs = results[0][sig.output_name]  # rows already in request order
        else:
            outputs = [np.empty(0, np.float32)] * len(sequences)
            for rows, out in zip(groups.values(), results, strict=True):
                for k, i in enumerate(rows):
                    outputs[i] = out[sig.output_name][k]
        final: list[StateDict] | None = None
        if return_state:
            final = [{} for _ in sequences]
            for rows, out in zip(groups.values(), results, strict=True):
                for k, i in enumerate(rows):
                    final[i] = {s.input: out[s.output][:, k : k + 1, :] for s in sig.states}
        return Prediction(runner.name, runner.version, outputs, final)

    @staticmethod
    async def _run_group(
        runner: Runner,
        sequences: Sequence[np.ndarray] | np.ndarray,
        states: list[StateDict | None],
        rows: list[int],
    ) -> Tensors:
        sig = runner.signature
        if isinstance(sequences, np.ndarray):
            x = sequences  # one group holding every row, in order
        elif len(rows) == 1:
            x = sequences[rows[0]][None]
        else:
            x = np.stack([sequences[i] for i in rows])
        feeds: Tensors = {sig.input_name: x}
        for s in sig.states:
            parts = [(states[i] or {}).get(s.input) for i in rows]
            if all(p is None for p in parts):
                feeds[s.input] = np.zeros(s.shape(len(rows)), np.float32)
            else:
                zero = np.zeros(s.shape(1), np.float32)
                feeds[s.input] = np.concatenate([zero if p is None else p for p in parts], axis=1)
        return await runner.run(feeds)

    @staticmethod
    def _check_state(
        sig: Signature, state: Mapping[str, np.ndarray] | None, what: str
    ) -> StateDict | None:
        """A caller-supplied state of one sequence: known names, [layers, 1, hidden] or
        [layers, hidden], finite. Missing tensors start from zeros."""
        if state is None:
            return None
        if not isinstance(state, Mapping):
            raise InvalidInput(f"{what} must be an object keyed by state name")
        known = {s.input: s for s in sig.states}
        checked: StateDict = {}
        for name, value in state.items():
            spec: StateTensor | None = known.get(name) or sig.state(name)
            if spec is None:
                raise InvalidInput(f"{what} names unknown state {name!r}; this model's states "
                                   f"are {sorted(known)}")
            arr = value
            if arr.shape == (spec.layers, spec.hidden):
                arr = arr[:, None, :]
            if arr.shape != spec.shape(1):
                raise InvalidInput(f"{what}.{name} has shape {list(value.shape)}; expected "
                                   f"{list(spec.shape(1))} (layers, 1, hidden)")
            require_finite(arr, f"{what}.{name}")
            checked[spec.input] = arr
        return checked

    # -- raw tensors (KServe v2) -----------------------------------------------------------

    async def infer(
        self, model: str, tensors: Mapping[str, np.ndarray], *, version: str | int | None = None
    ) -> tuple[Runner, Tensors]:
        """Run whole tensors as given: the sequence input [batch, time, features] and,
        optionally, state inputs [layers, batch, hidden] (zeros when absent)."""
        runner = self.runner(model, version)
        sig = runner.signature
        unknown = sorted(set(tensors) - set(sig.input_names))
        if unknown:
            raise InvalidInput(f"unknown input(s) {unknown}; model {runner.name!r} takes "
                               f"{list(sig.input_names)}")
        x = tensors.get(sig.input_name)
        if x is None:
            raise InvalidInput(f"input {sig.input_name!r} is missing: it carries the sequence "
                               f"[batch, time, {sig.input_size}]")
        if x.ndim != 3 or x.shape[2] != sig.input_size:
            raise InvalidInput(f"input {sig.input_name!r} has shape {list(x.shape)}; expected "
                               f"[batch, time, {sig.input_size}]")
        batch, steps = int(x.shape[0]), int(x.shape[1])
        if batch == 0 or steps == 0:
            raise InvalidInput(f"input {sig.input_name!r} is empty (shape {list(x.shape)}): "
                               "send at least one sequence of one timestep")
        self._check_limits(batch, steps, batch * steps)
        require_finite(x, sig.input_name)
        feeds: Tensors = {sig.input_name: x}
        for s in sig.states:
            value = tensors.get(s.input)
            if value is None:
                feeds[s.input] = np.zeros(s.shape(batch), np.float32)
                continue
            if value.shape != s.shape(batch):
                raise InvalidInput(f"input {s.input!r} has shape {list(value.shape)}; expected "
                                   f"{list(s.shape(batch))} (layers, batch, hidden)")
            require_finite(value, s.input)
            feeds[s.input] = value
        return runner, await runner.run(feeds)
