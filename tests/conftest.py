"""Shared fixtures: tiny recurrent models exported with the project's exporter, engines,
in-process ASGI clients and real servers on free loopback ports."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest

from bench.procs import (
    PORT_TAKEN,
    free_port,  # below the range outgoing connections take their ports from
)

ROOT = Path(__file__).resolve().parent.parent
pytest_plugins = ["tests.parallel"]  # how scripts/test.sh spreads the suite over two processes
COMMITTED_MODELS = ROOT / "models"


def committed_meta(model: str = "temperature-gru") -> dict[str, Any]:
    """A committed model's model.json."""
    import json

    return dict(json.loads((COMMITTED_MODELS / model / "model.json").read_text()))


def committed_width(model: str = "temperature-gru") -> int:
    """How many features a committed model takes per timestep (its model.json's input_size)."""
    return int(committed_meta(model)["input_size"])


def weather_rows(hours: int = 1, seed: int = 0, model: str = "temperature-gru",
                 temperature_f: float | None = None) -> list[list[float]]:
    """`hours` rows of plausible inputs for a committed model, in its model.json's feature order
    and physical units: each feature at its training mean (`normalization.feature_mean`) plus a
    quarter of its standard deviation of noise (seeded), rounded to 4 places; `temperature_f`,
    when given, fixes the first feature. Tests build inputs from this instead of hard-coding the
    width, so a retrained model with other features needs no test edits."""
    import numpy as np

    norm = committed_meta(model)["normalization"]
    rng = np.random.default_rng(seed)
    mean, std = np.asarray(norm["feature_mean"]), np.asarray(norm["feature_std"])
    rows = mean + 0.25 * std * rng.standard_normal((hours, len(mean)))
    if temperature_f is not None:
        rows[:, 0] = temperature_f
    return [[round(float(v), 4) for v in row] for row in rows]


BIDIRECTIONAL = {"bi-gru": ("GRU", 2, 6), "bi-lstm": ("LSTM", 1, 7)}
"""The tiny repository's bidirectional models: name -> (nn class, layers, seed)."""


def bidirectional_modules(name: str) -> tuple[Any, Any]:
    """The PyTorch recurrent layer and head (eval mode) exported as the tiny repository's
    bidirectional model `name`: input 3, hidden 8 each way, head 16 -> 1."""
    import torch
    from torch import nn

    kind, layers, seed = BIDIRECTIONAL[name]
    torch.manual_seed(seed)
    rnn = getattr(nn, kind)(3, 8, num_layers=layers, batch_first=True, bidirectional=True)
    return rnn.eval(), nn.Linear(16, 1).eval()


def build_tiny_repository(root: Path) -> Path:
    """tiny-lstm (versions 1 and 2, different weights), tiny-gru, tiny-rnn: input 3,
    hidden 8, 2 layers, head to 1; plus renamed-gru whose tensors have other names (declared in
    model.json), broken (a file that is not ONNX), bi-gru (2 layers) and bi-lstm (1 layer),
    bidirectional, so predict only (bi-gru and plain-gru, a GRU, carry no ONNX metadata: only
    their graphs say what they are)."""
    import onnx
    import torch
    from rnnserve.export.onnx_export import export_recurrent
    from torch import nn

    def export(cls: type[nn.Module], folder: Path, seed: int) -> Path:
        torch.manual_seed(seed)
        rnn = cls(3, 8, num_layers=2, batch_first=True)
        head = nn.Linear(8, 1)
        folder.mkdir(parents=True, exist_ok=True)
        return export_recurrent(rnn, head, folder / "model.onnx")

    def strip_metadata(path: Path) -> None:
        model = onnx.load(str(path))
        del model.metadata_props[:]
        onnx.save(model, str(path))

    export(nn.LSTM, root / "tiny-lstm" / "1", 1)
    export(nn.LSTM, root / "tiny-lstm" / "2", 2)
    export(nn.GRU, root / "tiny-gru", 3)
    export(nn.RNN, root / "tiny-rnn", 4)
    for name in BIDIRECTIONAL:
        export_recurrent(*bidirectional_modules(name), root / name / "model.onnx")
    strip_metadata(root / "bi-gru" / "model.onnx")
    strip_metadata(export(nn.GRU, root / "plain-gru", 8))

    path = export(nn.GRU, root / "renamed-gru", 5)
    model = onnx.load(str(path))
    renames = {"input": "x", "h0": "state_in", "output": "y", "hn": "state_out"}
    for value in [*model.graph.input, *model.graph.output]:
        value.name = renames.get(value.name, value.name)
    for node in model.graph.node:
        node.input[:] = [renames.get(n, n) for n in node.input]
        node.output[:] = [renames.get(n, n) for n in node.output]
    onnx.save(model, str(path))
    (root / "renamed-gru" / "model.json").write_text(
        '{"description": "a GRU with its own tensor names", "cell": "gru", '
        '"sequence_input": "x", "sequence_output": "y", '
        '"state_pairs": [{"input": "state_in", "output": "state_out"}]}'
    )
    (root / "broken").mkdir()
    (root / "broken" / "model.onnx").write_bytes(b"this is not an onnx file")
    return root


@pytest.fixture(scope="session")
def tiny_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_repository(tmp_path_factory.mktemp("models"))


@pytest.fixture
def make_settings(tiny_repo: Path) -> Callable[..., object]:
    from rnnserve.settings import Settings

    def make(**overrides: object) -> Settings:
        values: dict[str, object] = {"models": tiny_repo, "grpc_port": 0}
        values.update(overrides)
        return Settings(**values)  # type: ignore[arg-type]

    return make


@pytest.fixture
async def make_client(
    make_settings: Callable[..., object],
) -> AsyncIterator[Callable[..., Awaitable[httpx.AsyncClient]]]:
    """`await make_client(**settings)`: an httpx.AsyncClient speaking to the app in-process
    (ASGI), its engine started and opened (ASGITransport runs no lifespan)."""
    from rnnserve.engine import Engine
    from rnnserve.http.app import create_app

    engines: list[Engine] = []

    async def make(**overrides: object) -> httpx.AsyncClient:
        engine = Engine(make_settings(**overrides))  # type: ignore[arg-type]
        engine.start()
        await engine.open()
        engines.append(engine)
        app = create_app(engine, manage_engine=False)
        transport = httpx.ASGITransport(app=app)
        return httpx.AsyncClient(transport=transport, base_url="http://rnnserve.test")

    yield make
    for engine in engines:
        await engine.aclose()
        engine.close()


@pytest.fixture
async def client(
    make_client: Callable[..., Awaitable[httpx.AsyncClient]],
) -> AsyncIterator[httpx.AsyncClient]:
    async with await make_client() as c:
        yield c


class LoggedProcess:
    """A subprocess whose output goes to a log file (a pipe nobody reads would stall it),
    stopped with a signal, then killed if it does not exit."""

    logs: ClassVar[list[Path]] = []
    """Every such process's log, for the report of a test that fails (pytest_runtest_makereport)."""

    def __init__(self, args: list[str], log_path: Path, cwd: Path = ROOT) -> None:
        self.log_path = log_path
        LoggedProcess.logs.append(log_path)
        self.cwd = cwd
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = self._spawn(args)

    def _spawn(self, args: list[str]) -> subprocess.Popen[bytes]:
        return subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT, cwd=self.cwd,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


class ServerProcess(LoggedProcess):
    """`python -m rnnserve serve` on a free loopback port (HTTP only unless `args` say
    otherwise; later flags win), stopped by whoever started it."""

    def __init__(self, args: list[str], log_path: Path, *, grpc: bool = False) -> None:
        self.extra_args = args
        self.port_retries = 0
        self.grpc = grpc
        self._pick_grpc_port()
        self._pick_port()
        super().__init__(self._command(), log_path)

    def _pick_port(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"

    def _pick_grpc_port(self) -> None:
        self.grpc_port = free_port() if self.grpc else 0
        self.grpc_url = f"127.0.0.1:{self.grpc_port}"

    def _command(self) -> list[str]:
        return [sys.executable, "-m", "rnnserve", "serve", "--host", "127.0.0.1",
                "--port", str(self.port), "--grpc-port", str(self.grpc_port), *self.extra_args]

    def wait_ready(self, timeout: float = 60) -> None:
        """Until /v2/health/ready answers 200. A free port can be taken by another process
        between being picked and being bound (more often with the suite's two workers
        starting servers at once): then start again on new ones, the gRPC port too (gRPC says
        "Address already in use", uvicorn "address already in use")."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                if PORT_TAKEN in self.log().lower() and self.port_retries < 3:
                    self.port_retries += 1
                    self._pick_port()
                    self._pick_grpc_port()
                    self.proc = self._spawn(self._command())
                    continue
                raise RuntimeError(f"server exited {self.proc.returncode}: {self.log()}")
            try:
                if httpx.get(self.url + "/v2/health/ready", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"server not ready after {timeout}s: {self.log()}")


@contextmanager
def serving(args: list[str], log_path: Path, *, grpc: bool = False
            ) -> Iterator[ServerProcess]:
    """A ready server for the body of a `with` (a module fixture's lifetime, say); with
    `grpc`, gRPC listens on a free port of its own (`grpc_url`)."""
    server = ServerProcess(args, log_path, grpc=grpc)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@contextmanager
def serving_replicas(args: list[str], log_dir: Path, count: int, name: str = "replica"
                     ) -> Iterator[list[ServerProcess]]:
    """`count` ready servers with the same arguments (replicas sharing one state store), each
    logging to log_dir/{name}-{i}.log, all stopped after the `with`."""
    servers = [ServerProcess(args, log_dir / f"{name}-{i}.log") for i in range(count)]
    try:
        for server in servers:
            server.wait_ready()
        yield servers
    finally:
        for server in servers:
            server.stop()


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    servers: list[ServerProcess] = []

    def start(*args: str, wait: bool = True) -> ServerProcess:
        server = ServerProcess(list(args), tmp_path / f"server-{len(servers)}.log")
        servers.append(server)
        if wait:
            server.wait_ready()
        return server

    yield start
    for server in servers:
        server.stop()


LOG_SIZES = pytest.StashKey[dict[Path, int]]()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    item.stash[LOG_SIZES] = {p: p.stat().st_size for p in LoggedProcess.logs if p.exists()}


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                              ) -> Iterator[pytest.TestReport]:
    """A failed test's report carries the tracebacks its processes logged: what their logs
    gained while it ran (tests/server_errors.py says why)."""
    report = yield
    sizes = item.stash.get(LOG_SIZES, None)
    if report.failed and sizes is not None:
        from tests.server_errors import logged_errors

        grown = [(p, sizes.get(p, 0)) for p in dict.fromkeys(LoggedProcess.logs)
                 if p.exists() and p.stat().st_size > sizes.get(p, 0)]
        errors = "\n\n".join(filter(None, (logged_errors(p, since) for p, since in grown)))
        if errors:
            report.sections.append(("server logs: tracebacks", errors))
    return report
