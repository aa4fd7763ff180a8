"""The servers of a peers run, each a subprocess stopped when the run's ExitStack closes:
rnnserve (HTTP and gRPC), the HTTP/WebSocket echo (bench/echo_server.py), the framework-free
v2 echo (bench/raw_http_echo.py), the gRPC echo
(bench/grpc_echo.py) and the Triton peer (bench/peers/triton.py). One that cannot start is
reported and its rows say so; the others go on."""

from __future__ import annotations

import socket
import sys
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path

from bench.procs import (
    HOST,
    REPO_ROOT,
    ServerProcess,
    base_url,
    cpu_seconds,
    free_port,
    start_echo,
    start_raw_echo,
    start_rnnserve,
    with_fresh_ports,
)
from bench.sessions.plan import RNNSERVE_FLAGS


class GrpcEchoProcess(ServerProcess):
    """bench/grpc_echo.py: ready once its port accepts a connection (it has no HTTP)."""

    def is_ready(self) -> bool:
        host, port = self.grpc_target.rsplit(":", 1)
        try:
            with socket.create_connection((host, int(port)), timeout=1.0):
                return True
        except OSError:
            return False


def start_grpc_echo(workdir: Path, reply: bytes | None,
                    flags: Sequence[str] = ()) -> GrpcEchoProcess:
    """bench/grpc_echo.py on a free port (a new one if it was taken before the echo bound
    it), answering `reply` when given, with its other `flags`."""
    after = list(flags)
    if reply is not None:
        reply_file = workdir / "grpc-echo-reply.bin"
        reply_file.write_bytes(reply)
        after += ["--reply-file", str(reply_file)]

    def start() -> GrpcEchoProcess:  # new port each time: with_fresh_ports
        port = free_port()
        argv = [sys.executable, "-m", "bench.grpc_echo", "--host", HOST, "--port", str(port),
                *after]
        server = GrpcEchoProcess("grpc-echo", argv, "", workdir / "grpc-echo.log",
                                 cwd=REPO_ROOT)
        server.grpc_target = f"{HOST}:{port}"
        server.start(ready_timeout_s=60)
        return server

    return with_fresh_ports(start)


def start_named(
    name: str,
    start: Callable[[], ServerProcess],
    stack: ExitStack,
    servers: dict[str, ServerProcess],
    unavailable: dict[str, str],
) -> None:
    """Start one server into `servers`, or note in `unavailable` why it could not start."""
    try:
        servers[name] = stack.enter_context(start())
        server = servers[name]
        where = [base_url(server)] if server.ready_url else []
        where += [f"gRPC {server.grpc_target}"] if server.grpc_target else []
        print(f"{name}: ready at {', '.join(where)}", flush=True)
    except Exception as exc:  # reported; the rows of the others go on
        unavailable[name] = f"{type(exc).__name__}: {str(exc)[-1500:]}"
        print(f"{name}: UNAVAILABLE ({unavailable[name]})", file=sys.stderr, flush=True)


def peers_rnnserve_flags() -> list[str]:
    """bench.sessions' rnnserve flags with room for 100,000 sessions: bulk rounds leave theirs."""
    flags = [*RNNSERVE_FLAGS]
    flags[flags.index("--max-sessions") + 1] = "100000"
    return flags


def start_rnnserve_and_echo(
    repository: Path, workdir: Path, stack: ExitStack, unavailable: dict[str, str]
) -> dict[str, ServerProcess]:
    servers: dict[str, ServerProcess] = {}
    flags = peers_rnnserve_flags()
    start_named(
        "rnnserve",
        lambda: start_rnnserve(repository, workdir, flags, grpc=True),
        stack,
        servers,
        unavailable,
    )
    start_named("echo", lambda: start_echo(workdir), stack, servers, unavailable)
    start_named("raw-echo", lambda: start_raw_echo(workdir), stack, servers, unavailable)
    return servers


def tree_cpu(pid: int) -> Callable[[], float]:
    """CPU seconds of a process and its children (Triton's Python backend runs the model in a
    stub process of its own: its CPU is Triton's too)."""

    def probe() -> float:
        return cpu_seconds(pid) + sum(cpu_seconds(child) for child in _children(pid))

    return probe


def _children(pid: int) -> list[int]:
    """Direct children of `pid`, from every process's /proc stat (its 4th field: ppid)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found
