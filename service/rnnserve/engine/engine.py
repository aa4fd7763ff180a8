"""The facade every transport calls: model metadata, stateless prediction, raw tensor
inference and (through `sessions`) stateful steps; the KServe v2 data plane (v2.py) sits on
it. It owns the loaded models, the worker pool, the state store and one batcher per model
version, enforces the request limits (limits.py) and checks every tensor, so that REST,
WebSocket, KServe v2 and gRPC behave and fail alike. It holds the one API key ring (`keys`)
both HTTP and gRPC authenticate against, so a rotated key is rotated for every transport, and
the one parsed list of trusted proxies (`proxies`) every transport asks who its client is.

Lifecycle: `start()` loads the models (blocking, before serving); `await open()` starts the
store, its probe and the batchers inside the running event loop; `await aclose()` drains
them; `close()` releases the worker threads. Readiness (`ready`, `not_ready_reason`) also
asks `store_health` (store_health.py): false once the store has been unreachable longer than
--store-unready-after-s."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from rnnserve.auth import ApiKeys
from rnnserve.engine.batcher import Batcher
from rnnserve.engine.instance_batchers import InstanceBatchers
from rnnserve.engine.jobs import Job
from rnnserve.engine.limits import Limits
from rnnserve.engine.model_control import ModelControl
from rnnserve.engine.model_description import model_description
from rnnserve.engine.model_registry import ModelRegistry
from rnnserve.engine.model_settings import SettingDefaults
from rnnserve.engine.models import LoadedModels
from rnnserve.engine.observed_store import ObservedStore
from rnnserve.engine.providers import choose_providers
from rnnserve.engine.repository import ModelSource
from rnnserve.engine.runner import Runner, RunnerOptions
from rnnserve.engine.sessions import Sessions
from rnnserve.engine.statistics import counted, now_ns
from rnnserve.engine.store_health import StoreHealth
from rnnserve.engine.tensors import check_state, require_finite, require_sequence
from rnnserve.errors import InvalidInput, ModelNotFound, Unavailable
from rnnserve.keyfile import KeyFile, key_ring
from rnnserve.limit_metrics import export_limits
from rnnserve.metrics import Metrics
from rnnserve.proxies import TrustedProxies
from rnnserve.redact import safe_url
from rnnserve.settings import Settings
from rnnserve.state import StateStore
from rnnserve.state.factory import make_store, store_details
from rnnserve.tracing import Tracing

log = logging.getLogger("rnnserve.engine")
STARTING_OR_STOPPING = "the server is starting or stopping: nothing was run or applied; retry"

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

    def __init__(self, settings: Settings, *, keys: ApiKeys | None = None) -> None:
        """`keys`: the key ring every transport asks; by default the settings' keys, with
        --api-keys-file watched while the engine is open (keyfile.py)."""
        self.settings = settings
        self.key_file: KeyFile | None = None
        if keys is None:
            keys, self.key_file = key_ring(settings.api_keys, settings.api_keys_file,
                                           settings.api_keys_poll_s)
        self.keys = keys
        # who the client of a call is (--forwarded-allow-ips): one parse, for every transport
        self.proxies = TrustedProxies(settings.forwarded_allow_ips)
        self._key_watch: asyncio.Task[None] | None = None
        self.limits = Limits(settings)
        self.metrics = Metrics()
        export_limits(self.metrics.registry, settings)
        self.tracing = Tracing(settings.otel_endpoint, settings.otel_service_name)
        self.models = LoadedModels()
        self.instances = InstanceBatchers(settings, self.metrics, self.tracing,
                                          self.served_version)
        self.registry = ModelRegistry(self.models)
        self.control = self._model_control()
        self._control_task: asyncio.Task[None] | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._runner_options: RunnerOptions | None = None
        self._store: StateStore | None = None
        self._store_probe: asyncio.Task[None] | None = None
        self.store_health = StoreHealth(safe_url(settings.state_store),
                                        settings.store_unready_after_s,
                                        on_change=self._store_reachable,
                                        details=store_details(settings))
        self._sessions: Sessions | None = None
        self.started = False
        self.draining = False  # set at SIGTERM: readiness goes false before the listeners close

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Create the worker pool and load every model (blocking: call before serving); with
        --model-control explicit, only those of --load-model."""
        s = self.settings
        self._pool = ThreadPoolExecutor(s.inference_workers, thread_name_prefix="onnxruntime")
        options = self._runner_options = RunnerOptions(
            s.device, tuple(choose_providers(s.device, tf32=s.cuda_tf32)), s.intra_op_threads,
            SettingDefaults.of(s), s.all_cores_rows)
        only = None if s.model_control != "explicit" or "*" in s.load_model else s.load_model
        self.models = LoadedModels.load(s.models, options, self._pool, only)
        self.registry = ModelRegistry(self.models)
        self.control = self._model_control()
        for name, versions in self.models.versions.items():
            for version in versions:
                self.metrics.model_loaded.labels(name, str(version)).set(1)
        for problem in self.models.problems:
            self.metrics.model_loaded.labels(problem.name, str(problem.version or "")).set(0)
        self.started = True
        log.info("serving %d model(s) from %s; %d problem(s)", len(self.models.versions),
                 s.models, len(self.models.problems))

    async def open(self) -> None:
        """Start the state store and one batcher per model version (in the running loop)."""
        if self._store is not None:
            return
        s = self.settings
        raw_store = make_store(s, self.metrics.session_event)
        await raw_store.start()
        store = self._store = ObservedStore(raw_store, self.store_health,
                                             self.metrics.store_errors)
        self._store_reachable(True)
        self._store_probe = asyncio.create_task(self.store_health.probe_forever(raw_store),
                                                name="state-store-probe")
        self._sessions = Sessions(s, store, self, self.limits)
        self.instances.open(store, self._sessions)
        for versions in self.models.versions.values():
            for runner in versions.values():
                self.instances.start_runner(runner)
        if self.control.mode != "none":
            self._control_task = asyncio.create_task(self.control.run(), name="model-control")
        if self.key_file is not None and self.key_file.poll_s > 0:
            self._key_watch = asyncio.create_task(self.key_file.watch(), name="api-keys-file")

    async def aclose(self) -> None:
        """Finish queued and in-flight work, then stop the batchers and the store."""
        self.started = False
        if self._control_task is not None:
            self._control_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._control_task
            self._control_task = None
        if self._key_watch is not None:
            self._key_watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._key_watch
            self._key_watch = None
        if self._store_probe is not None:
            self._store_probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._store_probe
            self._store_probe = None
        await self.instances.close_all()
        if self._store is not None:
            await self._store.close()
            self._store = None

    def close(self) -> None:
        self.started = False
        self.control.close()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        self.tracing.shutdown()

    @property
    def ready(self) -> bool:
        return self.not_ready_reason() is None

    def not_ready_reason(self) -> str | None:
        """Why the server is not ready (None when it is): what /v2/health/ready answers."""
        if self.draining:
            return "the server is shutting down"
        if not self.started or self._store is None:
            return "the server is starting (models loading, state store opening) or stopping"
        if self.settings.strict_readiness and self.models.problems:
            return ("a model failed to load and --strict-readiness is on; see /v1/models "
                    "(unavailable)")
        if self.store_health.unready:
            return self.store_health.reason()
        return None

    def _store_reachable(self, reachable: bool) -> None:
        """The metrics gauge follows the store's reachability (StoreHealth's on_change)."""
        if self._store is not None:
            self.metrics.store_reachable.labels(self._store.name).set(1 if reachable else 0)

    @property
    def sessions(self) -> Sessions:
        if self._sessions is None:
            raise Unavailable(STARTING_OR_STOPPING, retry_after_s=1)
        return self._sessions

    def runner(self, model: str, version: str | int | None = None) -> Runner:
        """A model's version (the highest when none is asked), the one door every transport
        takes to a model. A version is a whole number or its ASCII digits: a bool (JSON true,
        which Python takes for 1) is refused, and a string of other digits ("²", "١", which
        str.isdigit takes for digits) names no version: 404 like any unknown version."""
        if not self.started:
            raise Unavailable(STARTING_OR_STOPPING, retry_after_s=1)
        if isinstance(version, bool):
            raise InvalidInput("a model version is a whole number like 1, not true or false")
        if isinstance(version, str) and not version.isascii():
            known = self.models.get(model)  # an unknown model is reported as such first
            raise ModelNotFound(f"model {model!r} has no version {version!r}; available "
                                f"versions: {sorted(self.models.versions[known.name])}")
        try:
            return self.models.get(model, version)
        except ModelNotFound as exc:
            raise self.control.retirement.refusal(exc, model, version) from None

    def served_version(self, model: str, version: int) -> Runner | None:
        """The runner of one exact version, or None when it is not served (any more)."""
        return self.models.versions.get(model, {}).get(version)

    def session_runner(self, model: str, version: int, created: float) -> Runner | None:
        """The instance a session created at `created` steps on (model_registry.py), or the
        error of a retired or not yet served version (retirement.py)."""
        return self.control.retirement.session_runner(model, version, created)

    def batcher(self, runner: Runner) -> Batcher:
        batcher = self.instances.get(runner)
        if batcher is None:
            if self.started and self._store is not None:  # model control let it go
                raise ModelNotFound(f"model {runner.name!r} version {runner.version} is no "
                                    "longer served")
            raise Unavailable(STARTING_OR_STOPPING, retry_after_s=1)
        return batcher

    def _model_control(self) -> ModelControl:
        s = self.settings
        return ModelControl(s.model_control, s.models, s.repository_poll_s, s.session_ttl_s,
                            self.registry, self._build_runner, self.instances,
                            s.retire_grace_s)

    def _build_runner(self, source: ModelSource) -> Runner:
        """Load one version (in model control's loader thread)."""
        assert self._runner_options is not None and self._pool is not None, "not started"
        return Runner(source, self._runner_options, self._pool)

    # -- metadata --------------------------------------------------------------------------

    def describe(self, model: str, version: str | int | None = None) -> dict[str, Any]:
        """Everything a client needs to call a model, in plain types; `streamable` false
        means predict only (the reason says why: a bidirectional model, say)."""
        runner = self.runner(model, version)
        return {**model_description(runner, sorted(self.models.versions[runner.name])),
                "version_states": self.registry.version_states(runner.name)}

    # -- stateless work --------------------------------------------------------------------

    async def run_stateless(
        self, runner: Runner, x: np.ndarray, initial: Mapping[str, np.ndarray] | None
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Sequences of one length [batch, time, features] from `initial` states
        [layers, batch, hidden] (zeros when absent), through the batcher (which runs more than
        max_batch rows as parts). Returns outputs [batch, time, out] and final states by input
        name."""
        job = Job(x, initial=dict(initial) if initial else None)
        result = await self.batcher(runner).submit(job)
        return result.y, result.states

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
        length share ONNX Runtime calls (with other requests' too); different lengths never
        share one, so padding can never leak into a result. Counted as one request in the
        version's statistics."""
        started = now_ns()
        runner = self.runner(model, version)
        return await counted(runner.stats, started,
                             self._predict(runner, sequences, initial_states, return_state))

    async def _predict(
        self,
        runner: Runner,
        sequences: Sequence[np.ndarray] | np.ndarray,
        initial_states: Sequence[Mapping[str, np.ndarray] | None] | None,
        return_state: bool,
    ) -> Prediction:
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
        self.limits.check_request(len(sequences), max(lengths), sum(lengths))
        if isinstance(sequences, np.ndarray):
            require_finite(sequences, "inputs")
        else:
            for i, seq in enumerate(sequences):
                require_finite(seq, f"inputs[{i}]")
        if initial_states is not None and len(initial_states) != len(sequences):
            raise InvalidInput(f"initial_states has {len(initial_states)} entries; give one per "
                               f"sequence ({len(sequences)}), null for zeros")
        states = [check_state(sig, st, f"initial_states[{i}]")
                  for i, st in enumerate(initial_states or [None] * len(sequences))]

        groups: dict[int, list[int]] = {}
        for i, length in enumerate(lengths):
            groups.setdefault(length, []).append(i)
        runs = []
        for rows in groups.values():
            if isinstance(sequences, np.ndarray):
                x = sequences  # one group holding every row, in order
            else:
                x = np.stack([sequences[i] for i in rows])
            initial = None
            if any(states[i] for i in rows):
                initial = {s.input: np.concatenate(
                    [(states[i] or {}).get(s.input, np.zeros(s.shape(1), np.float32))
                     for i in rows], axis=1) for s in sig.states}
            runs.append(self.run_stateless(runner, x, initial))
        results = await asyncio.gather(*runs)

        outputs: list[np.ndarray] | np.ndarray
        if len(groups) == 1:
            outputs = results[0][0]  # rows already in request order
        else:
            outputs = [np.empty(0, np.float32)] * len(sequences)
            for rows, (y, _) in zip(groups.values(), results, strict=True):
                for k, i in enumerate(rows):
                    outputs[i] = y[k]
        final: list[StateDict] | None = None
        if return_state:
            final = [{} for _ in sequences]
            for rows, (_, st) in zip(groups.values(), results, strict=True):
                for k, i in enumerate(rows):
                    final[i] = {name: arr[:, k : k + 1, :] for name, arr in st.items()}
        return Prediction(runner.name, runner.version, outputs, final)

    async def infer(
        self, model: str, tensors: Mapping[str, np.ndarray], *, version: str | int | None = None
    ) -> tuple[Runner, dict[str, np.ndarray]]:
        """Run whole tensors as given: the sequence input [batch, time, features] and,
        optionally, state inputs [layers, batch, hidden] (zeros when absent). Returns every
        output by name."""
        runner = self.runner(model, version)
        sig = runner.signature
        unknown = sorted(set(tensors) - set(sig.input_names))
        if unknown:
            raise InvalidInput(f"unknown input(s) {unknown}; model {runner.name!r} takes "
                               f"{list(sig.input_names)}")
        x = self.limits.check_tensor_input(sig, tensors.get(sig.input_name))
        batch = int(x.shape[0])
        initial: dict[str, np.ndarray] = {}
        for s in sig.states:
            value = tensors.get(s.input)
            if value is None:
                continue
            if value.shape != s.shape(batch):
                raise InvalidInput(f"input {s.input!r} has shape {list(value.shape)}; expected "
                                   f"{list(s.shape(batch))} (layers, batch, hidden)")
            require_finite(value, s.input)
            initial[s.input] = value
        y, states = await self.run_stateless(runner, x, initial or None)
        outputs = {sig.output_name: y}
        outputs.update({s.output: states[s.input] for s in sig.states})
        return runner, outputs
