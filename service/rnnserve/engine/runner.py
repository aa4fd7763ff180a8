"""One ONNX Runtime session per model version, and the only place that calls it.

Sessions are created at start-up (creating one holds the GIL for a while). Runs happen in a
shared pool of worker threads: ONNX Runtime releases the GIL, so runs overlap while the event
loop keeps serving.

On the CPU with one intra-op thread per run (the default), a model version also gets an
all-cores session (`--all-cores-rows`): the same graph with one thread per core that sleeps
between runs instead of spinning. A batch of that many rows or more runs there. Measured on 2
cores with the medium LSTM: 512 rows take 2.3 ms there against 4.3 ms on one thread, for the
same CPU time, so a gateway's 1024-session step is one call of about 5 ms rather than two
parallel halves of about 6; small batches, where the event loop and not the run is the cost,
keep their one thread and leave the other core to the loop.

The all-cores session is always called from one thread of its own (`_wide_pool`), never from
the shared pool. Two of its runs at once would only contend for the same cores. And measured
(`python -m bench.bulk_after_burst`: a gateway's 1024-session bulk steps before and after a
burst of KServe v2 steps on one server), while its runs came from the shared pool the bulk
steps fell after the burst to 0.73-0.86 of their rate before it (median 0.81, 7 servers), and
with this thread to 0.83-1.12 (median 0.94, 13 servers). Which part of the shared pool's state
slows ONNX Runtime was not found: in one process, without the server, neither two threads
taking turns nor a thread that had run thousands of small batches called it more slowly. A run
there holds one of the batcher's run slots like any other, so `--inference-workers` (or a
model's own `inference_workers`) still bounds the runs at once."""

from __future__ import annotations

import asyncio
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import numpy as np
import onnxruntime as ort

from rnnserve.engine.graph import read_graph
from rnnserve.engine.model_settings import ModelSettings, SettingDefaults
from rnnserve.engine.providers import CPU, ProviderSpec, check_session_providers
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
    all_cores_rows: int = 0
    """Batches of this many rows or more run on the all-cores session (0: none is made)."""


def _session_options(intra_op_threads: int, spinning: bool = True) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    if not spinning:  # idle threads sleep: they leave the cores to the event loop between runs
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
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
        self.all_cores_rows = 0
        self._all_cores: ort.InferenceSession | None = None
        self._wide_pool: ThreadPoolExecutor | None = None
        if (options.all_cores_rows and options.intra_op_threads == 1 and self.provider == CPU
                and usable_cores() > 1):
            self._all_cores = ort.InferenceSession(
                str(source.onnx_path), sess_options=_session_options(0, spinning=False),
                providers=[CPU])
            self.all_cores_rows = options.all_cores_rows
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
        if self._all_cores is not None:  # its first large run allocates: not a client's
            try:
                self._warm_up(self.signature, self._all_cores, rows=self.all_cores_rows)
            except (InferenceFailed, ValueError):  # a fixed batch size: it would never run
                self._all_cores, self.all_cores_rows = None, 0
        if self._all_cores is not None:  # its one calling thread starts at its first run
            self._wide_pool = ThreadPoolExecutor(
                1, thread_name_prefix=f"onnxruntime-all-cores-{source.name}-{source.version}")
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
        for pool in (self._own_pool, self._wide_pool):
            if pool is not None:
                pool.shutdown(wait=False)

    @property
    def name(self) -> str:
        return self.source.name

    @property
    def version(self) -> int:
        return self.source.version

    def _warm_up(self, signature: Signature, session: ort.InferenceSession | None = None,
                 rows: int = 1) -> Signature:
        """Run once on a zero step of `rows` rows: proves the model runs and learns a dynamic
        output size."""
        feeds: Tensors = {signature.input_name: np.zeros((rows, 1, signature.input_size),
                                                         np.float32)}
        for state in signature.states:
            feeds[state.input] = np.zeros(state.shape(rows), np.float32)
        out = self.run_sync(feeds, signature.output_names, session)
        y = out[signature.output_name]
        if y.ndim != 3 or y.shape[:2] != (rows, 1):
            raise ValueError(f"output {signature.output_name!r} came back with shape {y.shape}")
        for state in signature.states:
            if out[state.output].shape != state.shape(rows):
                raise ValueError(f"state output {state.output!r} has shape "
                                 f"{out[state.output].shape}, expected {state.shape(rows)}")
        if signature.output_size == 0:
            signature = replace(signature, output_size=int(y.shape[2]))
        return signature

    def run_sync(self, feeds: Tensors, output_names: tuple[str, ...],
                 session: ort.InferenceSession | None = None) -> Tensors:
        """One blocking ONNX Runtime call (on `session`, else the model's own one-thread
        session); its errors become InferenceFailed."""
        try:
            values = (session or self.session).run(list(output_names), feeds)
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
        if self._wide_pool is not None and self.is_wide(feeds):
            return await loop.run_in_executor(self._wide_pool, self._run_timed, feeds)
        return await loop.run_in_executor(self._pool, self._run_timed, feeds)

    def is_wide(self, feeds: Tensors) -> bool:
        """Whether a run of these feeds goes to the all-cores session."""
        return (self._all_cores is not None
                and len(feeds[self.signature.input_name]) >= self.all_cores_rows)

    def _run_timed(self, feeds: Tensors) -> tuple[Tensors, float]:
        started = time.perf_counter()
        out = self.run_sync(feeds, self.signature.output_names,
                            self._all_cores if self.is_wide(feeds) else None)
        return out, time.perf_counter() - started


def usable_cores() -> int:
    """The cores this process may run on (its affinity: a container or taskset limits it)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
