"""The streaming systems' load points: N closed-loop clients, each its own session, one
timestep per message, over WebSocket, gRPC ModelStreamInfer or REST; and the rounds that take
every system through every N."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson

from bench.grpcload import encode_bodies, run_grpc_stream_point
from bench.loadgen import Request, run_load
from bench.medium_model import MODEL_NAME, MediumConfig
from bench.procs import RnnserveProcess, ServerProcess, base_url
from bench.report import Results
from bench.sessions.plan import DISTINCT_MESSAGES, ONNX_INPUT, ONNX_OUTPUT, Plan
from bench.sessions.servers import SERVER_OF, batch_counters, mean_batch_rows, server_cpu, ws_url
from bench.stats import LoadResult
from bench.wsload import create_sessions, delete_sessions, run_ws_point


def step_inputs(config: MediumConfig) -> np.ndarray:
    """The timesteps every streaming system sends, float32 [DISTINCT_MESSAGES, 1, features]."""
    rng = np.random.default_rng(config.seed + 2)
    return rng.standard_normal((DISTINCT_MESSAGES, 1, config.input_size)).astype(np.float32)


def step_messages(config: MediumConfig) -> list[str]:
    """Pre-encoded `{"inputs": [[8 floats]]}` messages: one timestep each (float32 reprs)."""
    xs = step_inputs(config)
    return [orjson.dumps({"inputs": x}, option=orjson.OPT_SERIALIZE_NUMPY).decode() for x in xs]


def grpc_bodies(config: MediumConfig) -> list[bytes]:
    """The same timesteps as ModelInferRequest fragments (bench/grpcload.py)."""
    return encode_bodies(ONNX_INPUT, ONNX_OUTPUT, step_inputs(config)[:, 0, :])


PointFn = Callable[[int], dict[str, Any]]


def _point_summary(
    result: LoadResult, batch_rows: float | None, setup_s: float, delete_failures: int
) -> dict[str, Any]:
    """A load point's summary plus what every system's point reports beside it."""
    summary = result.summary()
    summary["mean_batch_rows"] = batch_rows
    summary["connect_s"] = round(setup_s, 2)
    summary["delete_failures"] = delete_failures
    return summary


def ws_point(server: ServerProcess, messages: list[str], plan: Plan) -> PointFn:
    def point(conc: int) -> dict[str, Any]:
        counters = batch_counters(server)
        result, sids, connect_s = run_ws_point(
            ws_url(server),
            messages,
            concurrency=conc,
            **plan.window(),
            cpu_probes=server_cpu(server),
        )
        batch = mean_batch_rows(counters, batch_counters(server))
        failed = delete_sessions(base_url(server), sids) if "echo" not in server.name else 0
        return _point_summary(result, batch, connect_s, failed)

    return point


def grpc_point(server: ServerProcess, bodies: list[bytes], plan: Plan) -> PointFn:
    assert isinstance(server, RnnserveProcess) and server.grpc_target
    next_id = [1]  # sequence ids never repeat across points, even if a sequence failed to end

    def point(conc: int) -> dict[str, Any]:
        first, next_id[0] = next_id[0], next_id[0] + conc
        counters = batch_counters(server)
        result, setup_s, end_failures = run_grpc_stream_point(
            server.grpc_target,
            MODEL_NAME,
            bodies,
            concurrency=conc,
            **plan.window(),
            first_sequence_id=first,
            per_stream=plan.grpc_per_stream,
            client=plan.grpc_client,
            loop=plan.grpc_loop,
            output_bytes=4 * MediumConfig().output_size,
            cpu_probes=server_cpu(server),
        )
        batch = mean_batch_rows(counters, batch_counters(server))
        summary = _point_summary(result, batch, setup_s, end_failures)
        summary["streams"] = -(-conc // plan.grpc_per_stream)
        return summary

    return point


def rest_point(server: ServerProcess, messages: list[str], plan: Plan) -> PointFn:
    headers = {"content-type": "application/json"}
    bodies = [m.encode() for m in messages]

    def point(conc: int) -> dict[str, Any]:
        started = time.perf_counter()
        sids = create_sessions(base_url(server), MODEL_NAME, conc)
        create_s = time.perf_counter() - started
        requests = [
            [Request("POST", f"/v1/sessions/{sid}/step", body, headers) for body in bodies]
            for sid in sids
        ]

        def factory(client: int, number: int) -> Request:
            return requests[client][(client + number) % len(bodies)]

        # the keep-alive pool opens during warm-up: give big N time to connect
        warmup = plan.warmup_s + conc / 1000
        counters = batch_counters(server)
        result = run_load(
            base_url(server),
            factory,
            concurrency=conc,
            **plan.window(warmup_s=warmup),
            cpu_probes=server_cpu(server),
        )
        batch = mean_batch_rows(counters, batch_counters(server))
        failed = delete_sessions(base_url(server), sids)
        return _point_summary(result, batch, create_s, failed)

    return point


def measure_stream(
    points: dict[str, PointFn], plan: Plan, failures: dict[str, str] | None = None
) -> Results:
    """Every point of every system, round after round. A point that cannot run at all (its
    load generator fails to open the connections) is reported in `failures` and that system
    skips its larger N from then on; the rest of the run goes on."""
    results: Results = {}
    failed_at: dict[str, int] = {}
    for round_number in range(1, plan.rounds + 1):
        for conc in plan.concurrencies:
            for system, point in points.items():
                if conc >= failed_at.get(system, conc + 1):
                    continue
                load = os.getloadavg()[0]
                try:
                    summary = point(conc)
                except Exception as exc:  # noqa: BLE001 - reported, and the run goes on
                    failed_at[system] = conc
                    reason = f"N={conc}: {type(exc).__name__}: {str(exc)[:400]}"
                    if failures is not None:
                        failures[system] = reason
                    print(
                        f"  round {round_number} N={conc:<5} {system:<11} FAILED {reason}",
                        flush=True,
                    )
                    continue
                summary["round"] = round_number
                summary["load_average_1m"] = round(load, 2)
                results.setdefault(system, {}).setdefault(conc, []).append(summary)
                cpu = summary["cpu_ms_per_request"]
                print_point(
                    f"  round {round_number} N={conc:<5} {system:<11} "
                    f"{summary['sequences_per_s']:>8.0f} steps/s  p50 {summary['p50_ms']} ms"
                    f"  p99 {summary['p99_ms']} ms  server {cpu.get('server')} ms/step  "
                    f"client {cpu.get('client')} ms/step  errors {summary['errors']}"
                    f"  rows/run {summary.get('mean_batch_rows')}"
                    f"  (setup {summary['connect_s']} s, load {load:.1f})",
                    summary,
                )
    return results


def print_point(line: str, summary: dict[str, Any]) -> None:
    """A measured point's line, then its error samples if it had errors (as it runs: flushed)."""
    print(line, flush=True)
    if summary["errors"]:
        print(f"    errors: {summary['error_samples']}", flush=True)


def make_points(
    servers: dict[str, ServerProcess], plan: Plan, config: MediumConfig, messages: list[str]
) -> dict[str, PointFn]:
    """A point function per planned system whose server started, in the plan's order."""
    points: dict[str, PointFn] = {}
    for system in plan.systems:
        server = servers.get(SERVER_OF[system])
        if server is None:
            continue
        if system == "grpc-stream":
            points[system] = grpc_point(server, grpc_bodies(config), plan)
        else:
            maker = ws_point if "ws" in system else rest_point
            points[system] = maker(server, messages, plan)
    return points
