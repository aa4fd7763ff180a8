"""Server subprocesses for benchmarks: pick a free port, start, wait until ready, stop.

Servers run as separate processes so that their CPU use can be read from /proc and so that a
crash or hang in one never takes the benchmark down with it. Their output goes to a log file,
not a pipe: a pipe nobody reads fills up and silently stalls a chatty server.
"""

from __future__ import annotations

import functools
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import TypeVar

EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
LOWEST_PORT = 10000


@functools.cache
def lowest_ephemeral_port() -> int:
    """The low end of the range the kernel draws outgoing connections' local ports from."""
    try:
        return int(EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now, drawn below the kernel's ephemeral range. A port the
    OS picks (bind to 0) comes from that range, which every outgoing connection draws from too:
    in the second or so before a server binds it, a load generator's clients (hundreds of
    connections; the test suite runs two workers at once) could take it. A race with another
    program picking the same port remains, a small one: `with_fresh_ports` starts a server
    again on new ports when its own were taken (the test suite's servers and Redis do the
    same)."""
    low = lowest_ephemeral_port()
    rng = random.SystemRandom()
    drawn = [rng.randrange(LOWEST_PORT, low) for _ in range(200)] if low > LOWEST_PORT else []
    for port in [*drawn, 0]:  # 0 last: all drawn ones taken, the OS picks
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:  # taken (or a listener on every address holds it): another
                continue
            return int(sock.getsockname()[1])
    raise OSError(f"no free TCP port on {host}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by process `pid` (Linux /proc; 0.0 elsewhere).

    Read before and after a measurement to get the server's CPU cost per request: on a shared
    2-core machine throughput alone hides whether a server is slow or just starved."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    # Fields after the ")" that closes the command name; utime and stime are fields 14 and 15.
    fields = stat.rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


PORT_TAKEN = "already in use"
"""In the log of a server whose port was taken: "address already in use" (uvicorn, gRPC,
podman, redis-server), "Socket '127.0.0.1:8000' already in use" (Triton's HTTP server)."""


class PortTaken(RuntimeError):
    """The server exited before it was ready because a port it was given was taken: another
    process bound it between its pick (free_port) and the server's bind."""


Started = TypeVar("Started", bound="ServerProcess")


def with_fresh_ports(start: Callable[[], Started], attempts: int = 3) -> Started:
    """`start()` (which picks its ports and starts the server), again while it fails with
    PortTaken, up to `attempts` times in all: a benchmark or test does not fail on a port
    someone else took in that second."""
    for _ in range(attempts - 1):
        try:
            return start()
        except PortTaken:
            pass
    return start()


class ServerProcess:
    """One server subprocess with a readiness URL; use as a context manager so that it is
    always stopped (SIGTERM, then SIGKILL after `stop_grace_s`)."""

    grpc_target = ""  # host:port of its gRPC server; "" when it has none

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        ready_url: str,
        log_path: Path,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        stop_grace_s: float = 10.0,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.ready_url = ready_url
        self.log_path = log_path
        self.env = env
        self.cwd = cwd
        self.stop_grace_s = stop_grace_s
        self._popen: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        if self._popen is None:
            raise RuntimeError(f"{self.name} is not started")
        return self._popen.pid

    def start(self, ready_timeout_s: float = 60.0) -> None:
        """Start the process and block until `ready_url` answers 200 (raises with the log's
        tail if the process exits or the timeout passes first)."""
        with open(self.log_path, "wb") as log:
            self._popen = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                cwd=self.cwd,
            )
        deadline = time.monotonic() + ready_timeout_s
        while True:
            code = self._popen.poll()
            if code is not None:
                tail = self.log_tail()
                failure = PortTaken if PORT_TAKEN in tail.lower() else RuntimeError
                raise failure(f"{self.name} exited with code {code} before it was ready:\n{tail}")
            if self.is_ready():
                return
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"{self.name} not ready at {self.ready_url} after {ready_timeout_s:.0f} s:\n"
                    f"{self.log_tail()}"
                )
            time.sleep(0.1)

    def exit_code(self) -> int | None:
        """The exit code once the process has ended, else None (still running or not started)."""
        return None if self._popen is None else self._popen.poll()

    def is_ready(self) -> bool:
        """Whether the server answers yet: `ready_url` answers 200 (a subclass may check
        otherwise, e.g. a gRPC-only server)."""
        return _answers_200(self.ready_url)

    def stop(self) -> int | None:
        """SIGTERM, wait up to `stop_grace_s`, then SIGKILL. Returns the exit code."""
        if self._popen is None or self._popen.poll() is not None:
            return None if self._popen is None else self._popen.returncode
        self._popen.send_signal(signal.SIGTERM)
        try:
            return self._popen.wait(timeout=self.stop_grace_s)
        except subprocess.TimeoutExpired:
            self._popen.kill()
            return self._popen.wait(timeout=self.stop_grace_s)

    def log_tail(self, max_chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-max_chars:]
        except OSError:
            return "(no log)"

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _answers_200(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1.0) as response:
            return int(response.status) == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


REPO_ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
READY_PATH = "/v2/health/ready"


def start_server(
    name: str, argv: list[str], port: int, workdir: Path, kind: type[ServerProcess] = ServerProcess
) -> ServerProcess:
    """Start a benchmark server (run from the repository root, logging to
    `workdir/<name>.log`) and wait until its /v2/health/ready answers 200."""
    server = kind(
        name, argv, f"http://{HOST}:{port}{READY_PATH}", workdir / f"{name}.log", cwd=REPO_ROOT
    )
    server.start(ready_timeout_s=90)
    return server


def base_url(server: ServerProcess) -> str:
    return server.ready_url.removesuffix(READY_PATH)


def start_module(
    name: str,
    module: Sequence[str],
    workdir: Path,
    after: Sequence[str] = (),
    kind: type[ServerProcess] = ServerProcess,
    port: int | None = None,
) -> ServerProcess:
    """`python -m <module...> --host 127.0.0.1 --port <port> <after...>` with this interpreter
    (so the venv's packages), through `start_server`; `port` defaults to a free one (a new
    one if it was taken before the server bound it)."""

    def start(port: int) -> ServerProcess:
        argv = [sys.executable, "-m", *module, "--host", HOST, "--port", str(port), *after]
        return start_server(name, argv, port, workdir, kind)

    return start(port) if port else with_fresh_ports(lambda: start(free_port()))


# ------------------------------------------------------------------------------ the servers


class RnnserveProcess(ServerProcess):
    grpc_target = ""  # host:port of its gRPC server; "" when gRPC is off


def start_rnnserve(
    repository: Path, workdir: Path, flags: Sequence[str] = (), grpc: bool = False
) -> RnnserveProcess:
    """`rnnserve serve` on the model repository, on free ports (new ones if one was taken
    before the server bound it). gRPC on a free port only when a gRPC system is measured
    (else off, `--grpc-port 0`, so that the other systems' figures stay comparable with
    earlier runs)."""

    def start() -> RnnserveProcess:  # new ports each time: with_fresh_ports
        grpc_port = free_port() if grpc else 0
        server = start_module(
            "rnnserve",
            ["rnnserve", "serve", "--models", str(repository)],
            workdir,
            ["--grpc-port", str(grpc_port), *flags],
            RnnserveProcess,
            free_port(),
        )
        assert isinstance(server, RnnserveProcess)
        server.grpc_target = f"{HOST}:{grpc_port}" if grpc_port else ""
        return server

    return with_fresh_ports(start)


def start_naive_predict(state: Path, workdir: Path, torch_threads: int | None) -> ServerProcess:
    """bench/naive_server.py (FastAPI + PyTorch eager) on the torch state: bench.predict."""
    after = [] if torch_threads is None else ["--torch-threads", str(torch_threads)]
    return start_module("naive", ["bench.naive_server", "--checkpoint", str(state)], workdir, after)


def start_naive_stateful(onnx: Path, workdir: Path) -> ServerProcess:
    """bench/naive_stateful_server.py (FastAPI + ONNX Runtime, state in a dict): bench.sessions."""
    return start_module("naive", ["bench.naive_stateful_server", "--model", str(onnx)], workdir)


def start_raw_echo(workdir: Path) -> ServerProcess:
    """bench/raw_http_echo.py, the v2 row's floor with no framework (uvloop + httptools)."""
    return start_module("raw-echo", ["bench.raw_http_echo"], workdir)


def start_echo(workdir: Path, loop: str = "auto") -> ServerProcess:
    """bench/echo_server.py, the transport floor (WebSocket and JSON echo, no model work)."""
    name = "echo" if loop == "auto" else f"echo-{loop}"
    return start_module(name, ["bench.echo_server"], workdir, ["--loop", loop])
