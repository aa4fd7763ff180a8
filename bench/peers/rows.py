"""The issue's rows: which systems each compares, on which server, and its targets.

A system is a key (e.g. "v2-http/triton"), a label, the server it needs, and how its phase
is made. A target is a value computed from the rounds (a ratio of two systems measured in the
same round, median over rounds; or a latency of one system's median round) and a goal; a
target with no goal is reported only."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.medium_model import ModelFiles
from bench.peers import systems as s
from bench.peers.plan import Plan
from bench.procs import ServerProcess

Rounds = dict[str, list[dict[str, Any]]]  # system -> one summary per round
RATE = "sequences_per_s"
BULK_BINARY = "bulk/rnnserve-binary"  # measured only where the server takes binary bulk bodies


@dataclass(frozen=True)
class System:
    key: str
    label: str
    server: str  # the name in the run's servers (a missing one makes the system unavailable)
    make: Callable[[ServerProcess], s.Phase]


@dataclass(frozen=True)
class Target:
    label: str
    value: Callable[[Rounds], float | None]
    goal: str
    ok: Callable[[float], bool] | None  # None: reported, no verdict


def clean(rounds: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rounds without failed requests, or all of them when every round had some (a
    phase with errors, e.g. a server that crashed in it, does not stand for a system)."""
    return [r for r in rounds if not r["errors"]] or rounds


def median_round(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    ordered = sorted(clean(rounds), key=lambda r: r[RATE])
    return ordered[(len(ordered) - 1) // 2]


def ratio(a: str, b: str, key: str = RATE) -> Callable[[Rounds], float | None]:
    """Median over rounds of a[key] / b[key], both from the same round (the phases of one
    round ran back to back, under the same neighbours); rounds with errors left out."""

    def value(rounds: Rounds) -> float | None:
        theirs = {r["round"]: r for r in clean(rounds.get(b, []))}
        pairs = [(x, theirs[x["round"]]) for x in clean(rounds.get(a, [])) if x["round"] in theirs]
        values = sorted(x[key] / y[key] for x, y in pairs if x[key] and y[key])
        return round(values[(len(values) - 1) // 2], 3) if values else None

    return value


def figure(system: str, key: str) -> Callable[[Rounds], float | None]:
    def value(rounds: Rounds) -> float | None:
        return median_round(rounds[system]).get(key) if rounds.get(system) else None

    return value


def tail_ratio(system: str) -> Callable[[Rounds], float | None]:
    """p99 ÷ p50 of one phase (the median round)."""

    def value(rounds: Rounds) -> float | None:
        if not rounds.get(system):
            return None
        one = median_round(rounds[system])
        return round(one["p99_ms"] / one["p50_ms"], 2) if one["p50_ms"] else None

    return value


def at_least(goal: float) -> Callable[[float], bool]:
    return lambda v: v >= goal


def below(goal: float) -> Callable[[float], bool]:
    return lambda v: v < goal


def systems_of(plan: Plan, files: ModelFiles) -> dict[str, list[System]]:
    """Row -> its systems, in the order they take turns within a round."""
    n, small = plan.sessions, plan.small_sessions
    bulk: list[System] = [
        System(
            BULK_BINARY,
            f"rnnserve bulk steps, binary, {plan.bulk_sessions} a request",
            "rnnserve",
            lambda srv: s.bulk(srv, plan, binary=True),
        ),
        System(
            "bulk/rnnserve-json",
            f"rnnserve bulk steps, JSON, {plan.bulk_sessions} a request",
            "rnnserve",
            lambda srv: s.bulk(srv, plan, binary=False),
        ),
        System(
            "bulk/in-process",
            "in-process ONNX Runtime (default threads), same states",
            "rnnserve",
            lambda srv: s.in_process_steps(files.onnx, plan),
        ),
        System(
            "bulk/in-process-1t",
            "in-process ONNX Runtime, 1 intra-op thread, same states",
            "rnnserve",
            lambda srv: s.in_process_steps(files.onnx, plan, 1),
        ),
    ]
    return {
        "v2-http": [
            System(
                "v2-http/rnnserve",
                "rnnserve v2 HTTP binary, sequence_id",
                "rnnserve",
                lambda srv: s.v2_http(srv, plan, "binary", n),
            ),
            System(
                "v2-http/triton",
                "Triton v2 HTTP binary, client carries h/c",
                "triton",
                lambda srv: s.v2_http(srv, plan, "binary-carry", n),
            ),
            System(
                "v2-http/rnnserve-json",
                "rnnserve v2 HTTP JSON, sequence_id",
                "rnnserve",
                lambda srv: s.v2_http(srv, plan, "json", n),
            ),
            System(
                "v2-http/echo",
                "FastAPI v2 binary echo, same request bytes",
                "echo",
                lambda srv: s.v2_http(srv, plan, "binary", n),
            ),
            System(
                "v2-http/raw-echo",
                "uvloop + httptools v2 binary echo, no framework",
                "raw-echo",
                lambda srv: s.v2_http(srv, plan, "binary", n),
            ),
        ],
        "grpc": [
            System(
                "grpc/rnnserve-stream",
                "rnnserve gRPC ModelStreamInfer",
                "rnnserve",
                lambda srv: s.v2_grpc(srv, plan, False, True, n),
            ),
            System(
                "grpc/triton-stream",
                "Triton gRPC ModelStreamInfer, client carries h/c",
                "triton",
                lambda srv: s.v2_grpc(srv, plan, True, True, n),
            ),
            System(
                "grpc/echo-stream",
                "bare grpc.aio stream echo, same-size messages",
                "grpc-echo",
                lambda srv: s.v2_grpc(srv, plan, False, True, n),
            ),
            System(
                "grpc/rnnserve-unary",
                "rnnserve gRPC ModelInfer (unary)",
                "rnnserve",
                lambda srv: s.v2_grpc(srv, plan, False, False, n),
            ),
            System(
                "grpc/triton-unary",
                "Triton gRPC ModelInfer (unary), client carries h/c",
                "triton",
                lambda srv: s.v2_grpc(srv, plan, True, False, n),
            ),
            System(
                "grpc/echo-unary",
                "bare grpc.aio unary echo, same-size messages",
                "grpc-echo",
                lambda srv: s.v2_grpc(srv, plan, False, False, n),
            ),
        ],
        "rest": [
            System(
                "rest/rnnserve",
                f"rnnserve POST /v1/sessions/{{id}}/step @{n}",
                "rnnserve",
                lambda srv: s.rest(srv, plan, n),
            ),
            System(
                "rest/echo",
                f"FastAPI echo, same JSON body @{n}",
                "echo",
                lambda srv: s.rest(srv, plan, n),
            ),
            System(
                f"rest/rnnserve@{small}",
                f"rnnserve REST step @{small}",
                "rnnserve",
                lambda srv: s.rest(srv, plan, small),
            ),
        ],
        "bulk": bulk,
        "ws": [
            System(
                "ws/rnnserve",
                "rnnserve WebSocket stream",
                "rnnserve",
                lambda srv: s.ws(srv, plan, n),
            ),
            System("ws/echo", "bare WebSocket echo", "echo", lambda srv: s.ws(srv, plan, n)),
        ],
    }


def targets_of(plan: Plan) -> dict[str, list[Target]]:
    small = plan.small_sessions
    return {
        "v2-http": [
            Target(
                "v2 HTTP binary: rnnserve ÷ Triton",
                ratio("v2-http/rnnserve", "v2-http/triton"),
                ">= 1.5",
                at_least(1.5),
            ),
            Target(
                "v2 HTTP JSON: rnnserve ÷ Triton binary",
                ratio("v2-http/rnnserve-json", "v2-http/triton"),
                "reported",
                None,
            ),
            Target(
                "v2 HTTP binary: rnnserve ÷ FastAPI echo",
                ratio("v2-http/rnnserve", "v2-http/echo"),
                "reported",
                None,
            ),
            Target(
                "v2 HTTP binary: Triton ÷ FastAPI echo",
                ratio("v2-http/triton", "v2-http/echo"),
                "reported",
                None,
            ),
            Target(
                "v2 HTTP binary: rnnserve ÷ framework-free echo",
                ratio("v2-http/rnnserve", "v2-http/raw-echo"),
                "reported",
                None,
            ),
            Target(
                "v2 HTTP binary: Triton ÷ framework-free echo",
                ratio("v2-http/triton", "v2-http/raw-echo"),
                "reported",
                None,
            ),
        ],
        "grpc": [
            Target(
                "gRPC stream: rnnserve ÷ bare echo",
                ratio("grpc/rnnserve-stream", "grpc/echo-stream"),
                ">= 0.5",
                at_least(0.5),
            ),
            Target(
                "gRPC stream: rnnserve ÷ Triton",
                ratio("grpc/rnnserve-stream", "grpc/triton-stream"),
                ">= 1.0",
                at_least(1.0),
            ),
            Target(
                "gRPC unary: rnnserve ÷ Triton unary",
                ratio("grpc/rnnserve-unary", "grpc/triton-unary"),
                "reported",
                None,
            ),
            Target(
                "gRPC unary: rnnserve ÷ bare unary echo",
                ratio("grpc/rnnserve-unary", "grpc/echo-unary"),
                "reported",
                None,
            ),
        ],
        "rest": [
            Target(
                "REST step ÷ FastAPI echo",
                ratio("rest/rnnserve", "rest/echo"),
                ">= 0.6",
                at_least(0.6),
            ),
            Target(
                "REST step p99 ÷ p50 (same phase)",
                tail_ratio("rest/rnnserve"),
                "<= 2.5",
                lambda v: v <= 2.5,
            ),
            Target(
                f"REST step p99 @{small} (ms)",
                figure(f"rest/rnnserve@{small}", "p99_ms"),
                "< 50 ms",
                below(50),
            ),
        ],
        "bulk": [
            Target(
                "bulk binary ÷ in-process ORT",
                ratio(BULK_BINARY, "bulk/in-process"),
                ">= 0.40",
                at_least(0.40),
            ),
            Target(
                "bulk JSON ÷ in-process ORT",
                ratio("bulk/rnnserve-json", "bulk/in-process"),
                "reported",
                None,
            ),
            Target(
                "bulk binary ÷ in-process ORT, 1 thread",
                ratio(BULK_BINARY, "bulk/in-process-1t"),
                "reported",
                None,
            ),
        ],
        "ws": [
            Target(
                "WebSocket ÷ bare echo", ratio("ws/rnnserve", "ws/echo"), ">= 0.75", at_least(0.75)
            ),
            Target("WebSocket p99 (ms)", figure("ws/rnnserve", "p99_ms"), "< 50 ms", below(50)),
        ],
    }
