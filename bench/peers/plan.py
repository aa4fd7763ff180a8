"""The command line of `python -m bench.peers` and the plan it makes."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.peers.triton import DEFAULT_VENV
from bench.sessions.plan import Plan as SessionsPlan

ROWS = ("v2-http", "grpc", "rest", "bulk", "ws")
ROUNDS = 3
"""Rounds of a full run. A ratio's verdict is the median round's (rows.ratio), so with three
one phase slowed by a neighbour on this shared machine does not decide it; with two the
median was the lower round's, and one slow 5 s phase of either system flipped a verdict."""


@dataclass(frozen=True)
class Plan:
    rows: tuple[str, ...]
    sessions: int  # concurrent closed-loop sessions of every row (the 256)
    small_sessions: int  # the REST latency row (64)
    bulk_sessions: int  # sessions per bulk request (1024)
    duration_s: float
    warmup_s: float
    rounds: int
    max_requests: int
    peer: bool  # start Triton
    triton_venv: Path
    bulk_binary: str  # auto, yes, no
    json_out: Path | None
    plot: Path | None = None

    def window(self, warmup_s: float | None = None) -> dict[str, Any]:
        return {
            "duration_s": self.duration_s,
            "warmup_s": self.warmup_s if warmup_s is None else warmup_s,
            "max_requests": self.max_requests,
        }

    def sessions_plan(self) -> SessionsPlan:
        """The same window as bench.sessions' plan, for the load points reused from there."""
        return SessionsPlan(
            concurrencies=(self.sessions,),
            gateway_clients=(1,),
            systems=(),
            duration_s=self.duration_s,
            warmup_s=self.warmup_s,
            rounds=self.rounds,
            max_requests=self.max_requests,
            memory_sessions=0,
            rnnserve_flags=(),
        )


def parse_plan(argv: list[str] | None) -> Plan:
    from bench import peers

    parser = argparse.ArgumentParser(
        prog="python -m bench.peers", description=(peers.__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="1 round of 2 s phases (a smoke run, 2-3 minutes); default 3 rounds of 5 s",
    )
    parser.add_argument("--only", nargs="+", choices=ROWS, help="rows to run (default all)")
    parser.add_argument(
        "--json", type=Path, help="save the results here (bench/results/ is git-ignored)"
    )
    parser.add_argument(
        "--no-peer",
        action="store_true",
        help="leave Triton out (its rows say 'peer unavailable'): offline, CI",
    )
    parser.add_argument(
        "--triton-venv",
        type=Path,
        default=DEFAULT_VENV,
        help="the peer's venv, created with pip when absent",
    )
    parser.add_argument(
        "--bulk-binary",
        choices=["auto", "yes", "no"],
        default="auto",
        help="bulk steps with a binary body too: auto (when the server takes them, asked with "
        "one request), yes, no",
    )
    parser.add_argument("--plot", type=Path, help="PNG of the ratios against their goals")
    parser.add_argument("--sessions", type=int, default=256)
    parser.add_argument("--small-sessions", type=int, default=64)
    parser.add_argument("--bulk-sessions", type=int, default=1024)
    parser.add_argument("--duration", type=float, help="seconds measured per phase")
    parser.add_argument("--warmup", type=float, help="seconds of warm-up per phase")
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--max-requests", type=int, default=200_000, help="bound per phase")
    args = parser.parse_args(argv)
    return Plan(
        rows=tuple(r for r in ROWS if r in (args.only or ROWS)),
        sessions=args.sessions,
        small_sessions=args.small_sessions,
        bulk_sessions=args.bulk_sessions,
        duration_s=args.duration or (2.0 if args.quick else 5.0),
        warmup_s=args.warmup or (0.5 if args.quick else 1.0),
        rounds=args.rounds or (1 if args.quick else ROUNDS),
        max_requests=args.max_requests,
        peer=not args.no_peer,
        triton_venv=args.triton_venv,
        bulk_binary=args.bulk_binary,
        json_out=args.json,
        plot=args.plot,
    )
