"""The plan of a run, from the command line, and the constants the benchmark's parts share."""

from __future__ import annotations

import argparse
import resource
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STREAM_SYSTEMS = ("ws", "grpc-stream", "rest", "naive", "echo-ws", "echo-rest", "echo-ws-asyncio")
DEFAULT_SYSTEMS = STREAM_SYSTEMS[:6]
RESULTS_DIR = Path(__file__).resolve().parents[1] / "results"  # bench/results
DISTINCT_MESSAGES = 64
GATEWAY_SESSIONS = 1024
RNNSERVE_FLAGS = ["--max-sessions", "20000", "--log-level", "warning"]
ONNX_INPUT, ONNX_OUTPUT = "input", "output"  # the exported model's tensor names


@dataclass(frozen=True)
class Plan:
    concurrencies: tuple[int, ...]
    gateway_clients: tuple[int, ...]
    systems: tuple[str, ...]
    duration_s: float
    warmup_s: float
    rounds: int
    max_requests: int
    memory_sessions: int
    rnnserve_flags: tuple[str, ...]
    grpc_per_stream: int = 1
    grpc_client: str = "raw"
    grpc_loop: str = "uvloop"

    def window(self, warmup_s: float | None = None) -> dict[str, Any]:
        """The window every point and in-process loop measures, as the load generators'
        keyword arguments: seconds measured, seconds of warm-up (the plan's unless given), and
        the bound on messages."""
        return {
            "duration_s": self.duration_s,
            "warmup_s": self.warmup_s if warmup_s is None else warmup_s,
            "max_requests": self.max_requests,
        }


def parse_plan(argv: list[str] | None) -> tuple[Plan, argparse.Namespace]:
    from bench import sessions  # the package's docstring; its first paragraph says what runs

    parser = argparse.ArgumentParser(
        prog="python -m bench.sessions", description=(sessions.__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="1 round of 2 s per point, N = 1 64 256 1024 (default: 2 of 5 s, N up to 4096)",
    )
    parser.add_argument("--duration", type=float, help="seconds measured per point")
    parser.add_argument("--warmup", type=float, help="seconds of warm-up per point")
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--concurrency", type=int, nargs="+")
    parser.add_argument("--gateway-clients", type=int, nargs="+", default=[1, 2])
    parser.add_argument(
        "--systems",
        nargs="+",
        choices=STREAM_SYSTEMS,
        default=list(DEFAULT_SYSTEMS),
        help="echo-ws-asyncio: the WS echo on the stdlib asyncio loop instead "
        "of uvloop (rnnserve serve runs on asyncio.run's loop); not default",
    )
    parser.add_argument("--max-requests", type=int, default=200_000, help="bound per point")
    parser.add_argument(
        "--grpc-per-stream",
        type=int,
        default=1,
        help="grpc-stream: sequences per ModelStreamInfer stream (default 1: a stream per "
        "sequence, all on one channel; e.g. 64 to multiplex)",
    )
    parser.add_argument(
        "--grpc-client",
        choices=["raw", "tritonclient"],
        default="raw",
        help="grpc-stream load generator: grpc.aio with pre-encoded bytes (raw) or "
        "tritonclient.grpc.aio's stream_infer",
    )
    parser.add_argument(
        "--grpc-loop",
        choices=["uvloop", "asyncio"],
        default="uvloop",
        help="event loop of the grpc-stream load generator",
    )
    parser.add_argument("--memory-sessions", type=int, help="for bench.session_memory")
    parser.add_argument(
        "--rnnserve-flag",
        action="append",
        default=[],
        help="extra flag for rnnserve serve (repeat; e.g. --rnnserve-flag=--max-delay-ms=0)",
    )
    parser.add_argument(
        "--skip",
        nargs="+",
        default=[],
        choices=["stream", "gateway", "memory"],
        help="parts to leave out",
    )
    parser.add_argument(
        "--profile",
        nargs="*",
        choices=["ws", "rest", "gateway"],
        help="py-spy record rnnserve under these loads (no value: all three)",
    )
    parser.add_argument("--profile-n", type=int, default=256)
    parser.add_argument("--profile-seconds", type=float, default=8.0)
    parser.add_argument("--plot", type=Path, help="PNG path (default bench/results/...)")
    parser.add_argument("--out", type=Path, help="JSON path (default bench/results/...)")
    args = parser.parse_args(argv)
    default_conc = (1, 64, 256, 1024) if args.quick else (1, 64, 256, 1024, 4096)
    plan = Plan(
        concurrencies=tuple(args.concurrency or default_conc),
        gateway_clients=tuple(args.gateway_clients),
        systems=tuple(s for s in STREAM_SYSTEMS if s in args.systems),
        duration_s=args.duration or (2.0 if args.quick else 5.0),
        warmup_s=args.warmup or (0.5 if args.quick else 1.0),
        rounds=args.rounds or (1 if args.quick else 2),
        max_requests=args.max_requests,
        memory_sessions=args.memory_sessions or (20_000 if args.quick else 100_000),
        rnnserve_flags=tuple(RNNSERVE_FLAGS + args.rnnserve_flag),
        grpc_per_stream=args.grpc_per_stream,
        grpc_client=args.grpc_client,
        grpc_loop=args.grpc_loop,
    )
    return plan, args


def raise_fd_limit(needed: int) -> dict[str, int]:
    """Raise the soft open-files limit to the hard one (children inherit it): N sessions
    need N sockets in this process and N in the server."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        print(f"WARNING: open-files limit {soft} < {needed} needed", file=sys.stderr)
    return {"soft": soft, "hard": hard}
