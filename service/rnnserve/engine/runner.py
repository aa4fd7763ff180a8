"""One ONNX Runtime session per model version, and the only place that calls it.

Sessions are created at start-up (creating one holds the GIL for a while). Runs happen in a
shared pool of worker threads: ONNX Runtime releases the GIL, so runs overlap while the event
loop keeps serving."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import numpy as np
import onnxruntime as ort

from rnnserve.engine.graph import read_graph
from rnnserve.engine.model_settings import ModelSettings, SettingDefaults
from rnnserve.engine.providers import ProviderSpec, check_session_providers
from rnnserve.engine.repository import ModelSource
from rnnserve.engine.signature import Signature, read_signature
from rnnserve.engine.statistics import ModelStats
from rnnserve.engine.streaming import check_streaming
from rnnserve.engine.warmup import WarmupReport, run_warmup
from rnnserve.errors import InferenceFailed

Tensors = dict[str, np.ndarray]


@dataclass(frozen=True)
class RunnerOptions:
    """How sessions are built (from Settings)."""

    device: str
    providers: tuple[ProviderSpec, ...]
    intra_op_threads: int
    defaults: SettingDefaults = SettingDefaults()
    """The server's flags, which a model's own settings (model.json) override."""


def _session_options(intra_op_threads: int) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: ORT's warnings are noise in server logs
    return options


class Runner:
    """A loaded, checked model version: its session, signature, provider, and whether it can
    be stepped (`streaming`, checked by running it: streaming.py), its effective settings
    (`settings`: model.json over the flags) and what its warmup ran (`warmed`).

    A model that declares `inference_workers` runs in a worker pool of its own of that many
    threads (closed by `close`), so its runs neither wait for nor crowd out other models';
    the others share the server's pool."""

    def __init__(self, source: ModelSource, options: RunnerOptions, pool: ThreadPoolExecutor):
        started = time.perf_counter()
        self.source = source
        self.settings = ModelSettings.effective(source.settings, options.defaults)
        self._own_pool: ThreadPoolExecutor | None = None
        self._pool = pool
        self.session = ort.InferenceSession(
            str(source.onnx_path),
            sess_options=_session_options(options.intra_op_threads),
            providers=list(options.providers),
        )
        self.provider = check_session_providers(options.device, self.session)
        graph = read_graph(source.onnx_path)
        onnx_metadata = self.session.get_modelmeta().custom_metadata_map
        signature = read_signature(
            self.session.get_inputs(),
            self.session.get_outputs(),
            source.metadata,
            onnx_metadata,
            graph,
        )
        self.signature = self._warm_up(signature)
        time_dim = next(i.shape[1] for i in self.session.get_inputs()
                        if i.name == signature.input_name)
        self.streaming = check_streaming(self.run_sync, self.signature, graph,
                                         metadata=source.metadata, onnx_metadata=onnx_metadata,
                                         fixed_time=isinstance(time_dim, int))
        self.warmed: WarmupReport = run_warmup(self.run_sync, self.signature, self.settings)
        if self.settings.is_declared("inference_workers"):
            self._own_pool = self._pool = ThreadPoolExecutor(
                self.settings.inference_workers,
                thread_name_prefix=f"onnxruntime-{source.name}-{source.version}")
        self.load_seconds = time.perf_counter() - started
        self.stats = ModelStats()  # this instance's inference statistics (statistics.py)

    def close(self) -> None:
        """Let the instance's own worker threads go (if it has any), once its work is done."""
        if self._own_pool is not None:
            self._own_pool.shutdown(wait=False)

    @property
    def name(self) -> str:
        return self.source.name

    @property
    def version(self) -> int:
        return self.source.version

    def _warm_up(self, signature: Signature) -> Signature:
        """Run once on a zero step: proves the model runs and learns a dynamic output size."""
        feeds: Tensors = {signature.input_name: np.zeros((1, 1, signature.input_size), np.float32)}
        for state in signature.states:
            feeds[state.input] = np.zeros(state.shape(1), np.float32)
        out = self.run_sync(feeds, signature.output_names)
        y = out[signature.output_name]
        if y.ndim != 3 or y.shape[:2] != (1, 1):
            raise ValueError(f"output {signature.output_name!r} came back with shape {y.shape}")
        for state in signature.states:
            if out[state.output].shape != state.shape(1):
                raise ValueError(f"state output {state.output!r} has shape "
                                 f"{out[state.output].shape}, expected {state.shape(1)}")
        if signature.output_size == 0:
            signature = replace(signature, output_size=int(y.shape[2]))
        return signature

    def run_sync(self, feeds: Tensors, output_names: tuple[str, ...]) -> Tensors:
        """One blocking ONNX Runtime call; its errors become InferenceFailed."""
        try:
            values = self.session.run(list(output_names), feeds)
        except Exception as exc:  # onnxruntime raises several unrelated exception types
            raise InferenceFailed(
                f"ONNX Runtime failed on model {self.name!r} version {self.version}: {exc}"
            ) from exc
        return dict(zip(output_names, values, strict=True))

    async def run(self, feeds: Tensors) -> tuple[Tensors, float]:
        """Run off the event loop, in the shared worker pool: the outputs, and the seconds
        ONNX Runtime itself took (timed in the worker thread: the wait for a worker and for
        the event loop to take the answer back are not in it)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._run_timed, feeds)

    def _run_timed(self, feeds: Tensors) -> tuple[Tensors, float]:
        started = time.perf_counter()
        out = self.run_sync(feeds, self.signature.output_names)
        return out, time.perf_counter() - started
