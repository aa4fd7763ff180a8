"""Which server serves which streaming system, starting them, and what rnnserve exposes that
the points read (its WebSocket URL, its batch-size counters)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from bench.medium_model import MODEL_NAME, ModelFiles
from bench.procs import (
    ServerProcess,
    base_url,
    cpu_seconds,
    start_echo,
    start_naive_stateful,
    start_rnnserve,
)
from bench.sessions.plan import Plan

SYSTEMS_OF = {  # server -> the streaming systems measured on it
    "rnnserve": ("ws", "rest", "grpc-stream"),
    "naive": ("naive",),
    "echo": ("echo-ws", "echo-rest"),
    "echo-asyncio": ("echo-ws-asyncio",),
}
SERVER_OF = {system: server for server, systems in SYSTEMS_OF.items() for system in systems}


def start_servers(
    plan: Plan,
    files: ModelFiles,
    workdir: Path,
    stack: ExitStack,
    need_rnnserve: bool,
    unavailable: dict[str, Any],
) -> dict[str, ServerProcess]:
    """The servers the plan's systems need (rnnserve also when `need_rnnserve`: the gateway
    and the profiles use it), each stopped when `stack` closes. One that fails to start is
    reported in `unavailable` and its systems are left out; the rest of the run goes on."""
    starters: dict[str, Callable[[], ServerProcess]] = {
        "rnnserve": lambda: start_rnnserve(
            files.repository, workdir, plan.rnnserve_flags, grpc="grpc-stream" in plan.systems
        ),
        "naive": lambda: start_naive_stateful(files.onnx, workdir),
        "echo": lambda: start_echo(workdir),
        "echo-asyncio": lambda: start_echo(workdir, "asyncio"),
    }
    servers: dict[str, ServerProcess] = {}
    for name, start in starters.items():
        if not (set(SYSTEMS_OF[name]) & set(plan.systems)) and not (
            name == "rnnserve" and need_rnnserve
        ):
            continue
        try:
            servers[name] = stack.enter_context(start())
            print(f"{name}: ready at {base_url(servers[name])}", flush=True)
        except Exception as exc:
            unavailable[name] = f"{type(exc).__name__}: {exc}"
            print(f"{name}: UNAVAILABLE ({exc})", file=sys.stderr, flush=True)
    return servers


def server_cpu(server: ServerProcess) -> dict[str, Callable[[], float]]:
    """The load generators' CPU probe of the server process: CPU per request is read from it."""
    pid = server.pid
    return {"server": lambda: cpu_seconds(pid)}


def ws_url(server: ServerProcess) -> str:
    return base_url(server).replace("http://", "ws://") + f"/v1/models/{MODEL_NAME}/stream"


def batch_counters(server: ServerProcess) -> tuple[float, float] | None:
    """(rows, runs) so far from rnnserve's /metrics (batch_rows histogram), else None."""
    if server.name != "rnnserve":
        return None
    import urllib.request

    try:
        with urllib.request.urlopen(base_url(server) + "/metrics", timeout=10) as response:
            text = response.read().decode()
    except OSError:
        return None
    found: dict[str, float] = {}
    for line in text.splitlines():
        for kind in ("sum", "count"):
            if line.startswith(f"rnnserve_batch_rows_{kind}{{") and MODEL_NAME in line:
                found[kind] = found.get(kind, 0.0) + float(line.rsplit(" ", 1)[1])
    return (found["sum"], found["count"]) if len(found) == 2 else None


def mean_batch_rows(
    before: tuple[float, float] | None, after: tuple[float, float] | None
) -> float | None:
    """Rows per ONNX Runtime run between two readings (warm-up included)."""
    if before is None or after is None or after[1] <= before[1]:
        return None
    return round((after[0] - before[0]) / (after[1] - before[1]), 2)
