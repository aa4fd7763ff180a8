"""Stateful sessions, side by side, on the medium LSTM (bench/medium_model.py):

1. streaming: N closed-loop clients, each its own session, ONE timestep per message, over
   rnnserve's WebSocket stream (`ws`), rnnserve's REST step (`rest`), a naive stateful FastAPI +
   ONNX Runtime server (`naive`, bench/naive_stateful_server.py), and two transport floors
   that do no model work: a WebSocket echo (`echo-ws`) and a FastAPI JSON echo (`echo-rest`)
   (bench/echo_server.py); and over rnnserve's KServe v2 gRPC `ModelStreamInfer`
   (`grpc-stream`, bench/grpcload.py: a stream per sequence on one HTTP/2 connection;
   docs/bench_grpc.md); steps/s, p50, p99, CPU per step of the server and of this process;
2. gateway: `POST /v1/models/medium-lstm/steps` carrying 1024 sessions' steps per request,
   1 and 2 concurrent gateway clients, against the in-process ONNX Runtime ceiling that steps
   the same 1024 states ([2, 1024, 128]) in one `session.run` per step, in a loop;
3. memory per idle session (`python -m bench.session_memory`, run as a subprocess);
4. the targets as ratios with PASS/MISS, a scaling plot (steps/s and p99 vs sessions).

    python -m bench.sessions            # full: 2 rounds of 5 s per point (about 10 minutes)
    python -m bench.sessions --quick    # 1 round of 2 s per point, N up to 1024
    python -m bench.sessions --profile  # also: py-spy on rnnserve under the WS 256 load

Servers run as subprocesses (bench/procs.py) on 127.0.0.1; each point opens its sessions
first (untimed), warms up, then measures a window bounded in time and message count, then
deletes its sessions. Systems take turns at each N, round after round; the round with the
median throughput stands for a point. Results: tables on stdout, bench/results/sessions-*.json
and a PNG (`--plot`, e.g. docs/bench_sessions.png).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from bench import ceiling
from bench.grpcload import encode_bodies, run_grpc_stream_point
from bench.inprocess import run_threads
from bench.loadgen import Request, run_load
from bench.medium_model import (
    MODEL_NAME,
    MediumConfig,
    ModelFiles,
    load_state,
    reference_outputs,
    sample_sequences,
    write_model_files,
)
from bench.procs import REPO_ROOT, ServerProcess, cpu_seconds, free_port, start_server
from bench.report import Results, Summary, environment, figures
from bench.stats import LoadResult
from bench.wsload import create_sessions, delete_sessions, run_uv, run_ws_point

STREAM_SYSTEMS = ("ws", "grpc-stream", "rest", "naive", "echo-ws", "echo-rest", "echo-ws-asyncio")
DEFAULT_SYSTEMS = STREAM_SYSTEMS[:6]
RESULTS_DIR = Path(__file__).resolve().parent / "results"
DISTINCT_MESSAGES = 64
GATEWAY_SESSIONS = 1024
TOLERANCE = 1e-4
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


def parse_plan(argv: list[str] | None) -> tuple[Plan, argparse.Namespace]:
    parser = argparse.ArgumentParser(
        prog="python -m bench.sessions", description=__doc__.split("\n\n")[0]
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


# ------------------------------------------------------------------------------ servers


class RnnserveProcess(ServerProcess):
    grpc_target = ""  # host:port of its gRPC server; "" when gRPC is off


def start_rnnserve(
    files: ModelFiles, workdir: Path, flags: tuple[str, ...], grpc: bool = False
) -> ServerProcess:
    """gRPC on a free port only when a gRPC system is measured (else off, `--grpc-port 0`, so
    that the other systems' figures stay comparable with earlier runs)."""
    port = free_port()
    grpc_port = free_port() if grpc else 0
    argv = [
        sys.executable,
        "-m",
        "rnnserve",
        "serve",
        "--models",
        str(files.repository),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--grpc-port",
        str(grpc_port),
        *flags,
    ]
    server = start_server("rnnserve", argv, port, workdir, RnnserveProcess)
    assert isinstance(server, RnnserveProcess)
    server.grpc_target = f"127.0.0.1:{grpc_port}" if grpc_port else ""
    return server


def start_naive(files: ModelFiles, workdir: Path) -> ServerProcess:
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "bench.naive_stateful_server",
        "--model",
        str(files.onnx),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    return start_server("naive", argv, port, workdir)


def start_echo(workdir: Path, loop: str = "auto") -> ServerProcess:
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "bench.echo_server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--loop",
        loop,
    ]
    return start_server("echo" if loop == "auto" else f"echo-{loop}", argv, port, workdir)


def base_url(server: ServerProcess) -> str:
    return server.ready_url.removesuffix("/v2/health/ready")


def ws_url(server: ServerProcess) -> str:
    return base_url(server).replace("http://", "ws://") + f"/v1/models/{MODEL_NAME}/stream"


# ------------------------------------------------------------------------------ workload


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


def check_rest(server: ServerProcess, sequence: np.ndarray, expected: np.ndarray) -> dict[str, Any]:
    """Create a session, step it one timestep at a time, compare with PyTorch's outputs."""
    import urllib.request

    def post(path: str, body: bytes = b"") -> Any:
        request = urllib.request.Request(
            base_url(server) + path,
            data=body,
            method="POST",
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    sid = post(f"/v1/models/{MODEL_NAME}/sessions")["session_id"]
    got = [
        post(
            f"/v1/sessions/{sid}/step",
            orjson.dumps({"inputs": x[None]}, option=orjson.OPT_SERIALIZE_NUMPY),
        )
        for x in sequence
    ]
    outputs = np.asarray([g["outputs"][0] for g in got], dtype=np.float32)
    delete_sessions(base_url(server), [sid])
    diff = float(np.max(np.abs(outputs - expected)))
    return {"max_abs_diff": diff, "ok": diff <= TOLERANCE, "steps": got[-1]["steps"]}


def check_grpc(server: ServerProcess, sequence: np.ndarray, expected: np.ndarray) -> dict[str, Any]:
    """One sequence over one ModelStreamInfer stream with the project's stubs, checked."""
    import grpc
    from rnnserve.grpc.generated import inference_pb2 as pb
    from rnnserve.grpc.generated import inference_pb2_grpc

    assert isinstance(server, RnnserveProcess) and server.grpc_target
    requests = []
    for i, x in enumerate(sequence):
        request = pb.ModelInferRequest(model_name=MODEL_NAME, id=f"check-{i}")
        request.parameters["sequence_id"].string_param = "bench-sessions-check"
        request.parameters["sequence_start"].bool_param = i == 0
        request.parameters["sequence_end"].bool_param = i == len(sequence) - 1
        request.inputs.add(name=ONNX_INPUT, datatype="FP32", shape=[1, 1, x.shape[-1]])
        request.outputs.add(name=ONNX_OUTPUT)
        request.raw_input_contents.append(np.asarray(x, dtype="<f4").tobytes())
        requests.append(request)
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = inference_pb2_grpc.GRPCInferenceServiceStub(channel)
        responses = list(stub.ModelStreamInfer(iter(requests), timeout=60))
    errors = [r.error_message for r in responses if r.error_message]
    if errors or len(responses) != len(sequence):
        return {"ok": False, "errors": errors[:3], "responses": len(responses)}
    by_id = {r.infer_response.id: r.infer_response for r in responses}
    outputs = np.asarray(
        [
            np.frombuffer(by_id[f"check-{i}"].raw_output_contents[0], dtype="<f4")
            for i in range(len(sequence))
        ],
        dtype=np.float32,
    ).reshape(expected.shape)
    diff = float(np.max(np.abs(outputs - expected)))
    return {"max_abs_diff": diff, "ok": diff <= TOLERANCE, "steps": len(responses)}


def check_ws(server: ServerProcess, sequence: np.ndarray, expected: np.ndarray) -> dict[str, Any]:
    async def go() -> tuple[list[Any], str]:
        import aiohttp

        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(ws_url(server)) as ws:
                sid = orjson.loads((await ws.receive()).data)["session_id"]
                replies = []
                for x in sequence:
                    await ws.send_str(
                        orjson.dumps(
                            {"inputs": x[None]}, option=orjson.OPT_SERIALIZE_NUMPY
                        ).decode()
                    )
                    replies.append(orjson.loads((await ws.receive()).data))
                return replies, sid

    replies, sid = run_uv(go())
    delete_sessions(base_url(server), [sid])
    outputs = np.asarray([r["outputs"][0] for r in replies], dtype=np.float32)
    diff = float(np.max(np.abs(outputs - expected)))
    return {
        "max_abs_diff": diff,
        "ok": diff <= TOLERANCE,
        "steps": replies[-1]["steps"],
        "reply_sample": orjson.dumps(replies[-1]).decode(),
    }


# ------------------------------------------------------------------------------ points


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


PointFn = Callable[[int], dict[str, Any]]


def _point_summary(result: LoadResult, batch_rows: float | None, setup_s: float,
                   delete_failures: int) -> dict[str, Any]:
    """A load point's summary plus what every system's point reports beside it."""
    summary = result.summary()
    summary["mean_batch_rows"] = batch_rows
    summary["connect_s"] = round(setup_s, 2)
    summary["delete_failures"] = delete_failures
    return summary


def ws_point(server: ServerProcess, messages: list[str], plan: Plan) -> PointFn:
    pid = server.pid

    def point(conc: int) -> dict[str, Any]:
        counters = batch_counters(server)
        result, sids, connect_s = run_ws_point(
            ws_url(server),
            messages,
            concurrency=conc,
            duration_s=plan.duration_s,
            warmup_s=plan.warmup_s,
            max_requests=plan.max_requests,
            cpu_probes={"server": lambda: cpu_seconds(pid)},
        )
        batch = mean_batch_rows(counters, batch_counters(server))
        failed = delete_sessions(base_url(server), sids) if "echo" not in server.name else 0
        return _point_summary(result, batch, connect_s, failed)

    return point


def grpc_point(server: ServerProcess, bodies: list[bytes], plan: Plan) -> PointFn:
    assert isinstance(server, RnnserveProcess) and server.grpc_target
    pid = server.pid
    next_id = [1]  # sequence ids never repeat across points, even if a sequence failed to end

    def point(conc: int) -> dict[str, Any]:
        first, next_id[0] = next_id[0], next_id[0] + conc
        counters = batch_counters(server)
        result, setup_s, end_failures = run_grpc_stream_point(
            server.grpc_target,
            MODEL_NAME,
            bodies,
            concurrency=conc,
            duration_s=plan.duration_s,
            warmup_s=plan.warmup_s,
            max_requests=plan.max_requests,
            first_sequence_id=first,
            per_stream=plan.grpc_per_stream,
            client=plan.grpc_client,
            loop=plan.grpc_loop,
            output_bytes=4 * MediumConfig().output_size,
            cpu_probes={"server": lambda: cpu_seconds(pid)},
        )
        batch = mean_batch_rows(counters, batch_counters(server))
        summary = _point_summary(result, batch, setup_s, end_failures)
        summary["streams"] = -(-conc // plan.grpc_per_stream)
        return summary

    return point


def rest_point(server: ServerProcess, messages: list[str], plan: Plan) -> PointFn:
    pid = server.pid
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
            duration_s=plan.duration_s,
            warmup_s=warmup,
            max_requests=plan.max_requests,
            cpu_probes={"server": lambda: cpu_seconds(pid)},
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
                    print(f"  round {round_number} N={conc:<5} {system:<11} FAILED {reason}",
                          flush=True)
                    continue
                summary["round"] = round_number
                summary["load_average_1m"] = round(load, 2)
                results.setdefault(system, {}).setdefault(conc, []).append(summary)
                cpu = summary["cpu_ms_per_request"]
                print(
                    f"  round {round_number} N={conc:<5} {system:<11} "
                    f"{summary['sequences_per_s']:>8.0f} steps/s  p50 {summary['p50_ms']} ms"
                    f"  p99 {summary['p99_ms']} ms  server {cpu.get('server')} ms/step  "
                    f"client {cpu.get('client')} ms/step  errors {summary['errors']}"
                    f"  rows/run {summary.get('mean_batch_rows')}"
                    f"  (setup {summary['connect_s']} s, load {load:.1f})",
                    flush=True,
                )
                if summary["errors"]:
                    print(f"    errors: {summary['error_samples']}", flush=True)
    return results


# ------------------------------------------------------------------------------ gateway


def gateway_measure(
    server: ServerProcess, files: ModelFiles, config: MediumConfig, plan: Plan
) -> dict[str, Any]:
    """Gateway requests of 1024 sessions each (one set of sessions per gateway client) vs the
    in-process ceiling stepping 1024 states per session.run."""
    rng = np.random.default_rng(config.seed + 3)
    headers = {"content-type": "application/json"}
    pid = server.pid
    out: dict[str, Any] = {"rounds": {}}
    max_clients = max(plan.gateway_clients)
    sids = [
        create_sessions(base_url(server), MODEL_NAME, GATEWAY_SESSIONS) for _ in range(max_clients)
    ]
    bodies: list[list[bytes]] = []
    for client_sids in sids:
        client_bodies = []
        for _ in range(4):
            xs = rng.standard_normal((GATEWAY_SESSIONS, 1, config.input_size)).astype(np.float32)
            steps = [
                {"session_id": sid, "inputs": x} for sid, x in zip(client_sids, xs, strict=True)
            ]
            client_bodies.append(orjson.dumps({"steps": steps}, option=orjson.OPT_SERIALIZE_NUMPY))
        bodies.append(client_bodies)
    out["request_bytes"] = len(bodies[0][0])
    out["sample_body"] = bodies[0][0]
    path = f"/v1/models/{MODEL_NAME}/steps"

    def factory(client: int, number: int) -> Request:
        return Request("POST", path, bodies[client][number % 4], headers)

    def check(status: int, body: bytes) -> str | None:
        if status != 200:
            return f"HTTP {status}: {body[:200]!r}"
        if b'"error"' in body:
            return f"item error: {body[:300]!r}"
        return None

    ceiling_inputs = rng.standard_normal((4, GATEWAY_SESSIONS, 1, config.input_size)).astype(
        np.float32
    )

    def stepping_loops(intra_op_threads: int, loops: int) -> Callable[[int, int], None]:
        """In-process work: loop `worker` steps its own 1024 states, fed back each call."""
        session = ceiling.ort_session(files.onnx, intra_op_threads)
        shape = (config.num_layers, GATEWAY_SESSIONS, config.hidden_size)
        states = [{name: np.zeros(shape, np.float32) for name in ("h0", "c0")}
                  for _ in range(loops)]

        def work(worker: int, number: int) -> None:
            own = states[worker]
            _, own["h0"], own["c0"] = session.run(
                ["output", "hn", "cn"], {"input": ceiling_inputs[number % 4], **own}
            )

        return work

    ceiling_work = stepping_loops(1, max_clients)
    ceiling_work_2t = stepping_loops(2, 1)

    for round_number in range(1, plan.rounds + 1):
        for clients in plan.gateway_clients:
            counters = batch_counters(server)
            result = run_load(
                base_url(server),
                factory,
                concurrency=clients,
                duration_s=plan.duration_s,
                warmup_s=plan.warmup_s,
                max_requests=plan.max_requests,
                validate=check,
                cpu_probes={"server": lambda: cpu_seconds(pid)},
            )
            gw = _gateway_summary(result, round_number)
            gw["mean_batch_rows"] = mean_batch_rows(counters, batch_counters(server))
            in_proc = run_threads(
                ceiling_work,
                concurrency=clients,
                duration_s=plan.duration_s,
                warmup_s=plan.warmup_s,
                max_requests=plan.max_requests,
            )
            ceil = _gateway_summary(in_proc, round_number)
            measured = [("gateway", gw), ("ceiling", ceil)]
            if clients == 1:  # one loop over the same 1024 states with both cores inside it
                in_proc_2t = run_threads(
                    ceiling_work_2t,
                    concurrency=1,
                    duration_s=plan.duration_s,
                    warmup_s=plan.warmup_s,
                    max_requests=plan.max_requests,
                )
                measured.append(("ceiling-2t", _gateway_summary(in_proc_2t, round_number)))
            for name, summary in measured:
                out["rounds"].setdefault(name, {}).setdefault(clients, []).append(summary)
                print(
                    f"  round {round_number} clients={clients} {name:<8} "
                    f"{summary['sequences_per_s']:>9.0f} steps/s  "
                    f"{summary['requests_per_s']:.1f} calls/s  p50 {summary['p50_ms']} ms  "
                    f"p99 {summary['p99_ms']} ms  errors {summary['errors']}  rows/run "
                    f"{summary.get('mean_batch_rows')}",
                    flush=True,
                )
                if summary["errors"]:
                    print(f"    errors: {summary['error_samples']}", flush=True)
    return out  # its sessions stay (the gateway profile steps them); the server ends soon


def _gateway_summary(result: LoadResult, round_number: int) -> Summary:
    summary = result.summary(items_per_request=GATEWAY_SESSIONS)
    summary["round"] = round_number
    cpu = summary["cpu_ms_per_request"]
    summary["cpu_us_per_step"] = {
        k: (round(v * 1e3 / GATEWAY_SESSIONS, 3) if v else None) for k, v in cpu.items()
    }
    return summary


# ------------------------------------------------------------------------------ profile


def profile_server(
    server: ServerProcess,
    run: Callable[[dict[str, Any]], LoadResult],
    seconds: float,
    workdir: Path,
    tag: str,
) -> dict[str, Any]:
    """py-spy record (non-idle threads, 100 Hz, --nonblocking) on `server` while `run(probes)`
    loads it (collapsed stacks kept in `workdir`, for a flame graph); the recorder starts at
    the measured window's first edge (when the probes are first read). Returns the top
    functions by own and by inclusive samples."""
    raw = workdir / f"pyspy-{tag}-{time.strftime('%Y%m%d-%H%M%S')}.txt"
    raw.parent.mkdir(parents=True, exist_ok=True)
    pyspy = Path(sys.executable).with_name("py-spy")
    if not pyspy.exists():
        return {"error": "py-spy not installed (pip install py-spy into the venv)"}
    recorders: list[subprocess.Popen[bytes]] = []

    def probe() -> float:
        if not recorders:
            recorders.append(
                subprocess.Popen(
                    [
                        str(pyspy),
                        "record",
                        "--pid",
                        str(server.pid),
                        "--duration",
                        str(int(seconds)),
                        "--rate",
                        "100",
                        "--format",
                        "raw",
                        "--output",
                        str(raw),
                        "--nonblocking",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                )
            )
        return cpu_seconds(server.pid)

    result = run({"server": probe})
    if not recorders:
        return {"error": "the load never reached its window"}
    _, err = recorders[0].communicate(timeout=60)
    if not raw.exists():
        return {"error": f"py-spy failed: {err.decode(errors='replace')[-500:]}"}
    summary = summarise_collapsed(raw.read_text())
    summary["what"] = tag
    summary["collapsed_stacks"] = str(raw)
    summary["load"] = result.summary()
    summary["load"].pop("error_samples", None)
    return summary


def profiles(
    kinds: list[str],
    server: ServerProcess,
    messages: list[str],
    conc: int,
    seconds: float,
    workdir: Path,
    gateway_body: bytes | None,
) -> dict[str, Any]:
    """Profiles of rnnserve under the WS load, the REST load (`conc` clients) and the gateway
    load (one client of 1024-session requests)."""
    out: dict[str, Any] = {}
    window: dict[str, Any] = {"duration_s": seconds + 1.0, "warmup_s": 1.0, "max_requests": 10**7}
    headers = {"content-type": "application/json"}

    def run_ws(probes: dict[str, Any]) -> LoadResult:
        result, sids, _ = run_ws_point(
            ws_url(server), messages, concurrency=conc, cpu_probes=probes, **window
        )
        delete_sessions(base_url(server), sids)
        return result

    def run_rest(probes: dict[str, Any]) -> LoadResult:
        sids = create_sessions(base_url(server), MODEL_NAME, conc)
        requests = [
            Request("POST", f"/v1/sessions/{sid}/step", messages[0].encode(), headers)
            for sid in sids
        ]
        result = run_load(
            base_url(server),
            lambda c, n: requests[c],
            concurrency=conc,
            cpu_probes=probes,
            **window,
        )
        delete_sessions(base_url(server), sids)
        return result

    def run_gateway(probes: dict[str, Any]) -> LoadResult:
        assert gateway_body is not None
        request = Request("POST", f"/v1/models/{MODEL_NAME}/steps", gateway_body, headers)
        return run_load(
            base_url(server), lambda c, n: request, concurrency=1, cpu_probes=probes, **window
        )

    runs: dict[str, tuple[str, Callable[[dict[str, Any]], LoadResult]]] = {
        "ws": (f"ws-{conc}", run_ws),
        "rest": (f"rest-{conc}", run_rest),
        "gateway": ("gateway-1x1024", run_gateway),
    }
    for kind in kinds:
        if kind == "gateway" and gateway_body is None:
            continue
        print(f"  profiling rnnserve under {kind} ({seconds:.0f} s)...", flush=True)
        tag, run = runs[kind]
        out[tag] = profile_server(server, run, seconds, workdir, tag)
    return out


def _frame_name(frame: str) -> str:
    """`func (path/to/file.py:123)` -> `func (file.py)`, shortened to a readable module path."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "/work/main/", "lib/python3.11/"):
        if marker in where:
            where = where.split(marker, 1)[1]
    return f"{name} ({where})" if where else name


PROFILE_AREAS = (  # (label, substring of a frame's file): the first match of the leaf frame
    ("ONNX Runtime run", "onnxruntime/"),
    ("rnnserve engine (service/rnnserve/engine)", "service/rnnserve/engine/"),
    ("rnnserve HTTP/WS layer + metrics (service/rnnserve/)", "service/rnnserve/"),
    ("prometheus_client", "prometheus_client/"),
    ("numpy", "numpy/"),
    ("uvicorn + websockets/httptools protocol", "uvicorn/"),
    ("uvicorn + websockets/httptools protocol", "websockets/"),
    ("starlette + fastapi routing", "starlette/"),
    ("starlette + fastapi routing", "fastapi/"),
    ("orjson/json", "json"),
    ("thread pool hand-off (concurrent.futures, threading)", "concurrent/"),
    ("thread pool hand-off (concurrent.futures, threading)", "threading"),
    ("asyncio event loop + sockets (selectors)", "asyncio/"),
    ("asyncio event loop + sockets (selectors)", "selectors"),
)


def summarise_collapsed(text: str, top: int = 20) -> dict[str, Any]:
    """Own (leaf) samples per function, inclusive samples per rnnserve function (service/),
    and own samples per area (which library the leaf frame is in)."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    areas: Counter[str] = Counter()
    total = 0
    for line in text.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        raw_frames = [f for f in stack.split(";") if f]
        if not raw_frames:
            continue
        frames = [_frame_name(f) for f in raw_frames]
        own[frames[-1]] += count
        leaf_file = raw_frames[-1].partition(" (")[2]
        area = next((label for label, key in PROFILE_AREAS if key in leaf_file), "other")
        areas[area] += count
        for name in {
            f
            for f in frames
            if "(service/" in f
            and "__main__" not in f
            and "cli.py" not in f
            and "serve.py" not in f
        }:
            inclusive[name] += count

    def share(c: int) -> float:
        return round(100.0 * c / total, 1) if total else 0.0

    return {
        "samples": total,
        "areas": [(name, share(c)) for name, c in areas.most_common()],
        "top_own": [(name, share(c)) for name, c in own.most_common(top)],
        "top_inclusive": [(name, share(c)) for name, c in inclusive.most_common(top)],
    }


def format_profile(profile: dict[str, Any]) -> str:
    if "error" in profile:
        return f"profile: {profile['error']}"
    lines = [
        f"py-spy on rnnserve under {profile['what']}: {profile['samples']} samples of "
        f"non-idle threads (load: {profile['load']['requests_per_s']:.0f} requests/s, "
        f"server CPU {profile['load']['cpu_ms_per_request'].get('server')} ms/request)",
        "  % own  area (the library the sample's innermost frame is in)",
    ]
    lines += [f"  {pct:5.1f}  {name}" for name, pct in profile.get("areas", [])]
    lines += ["  % own  function (own = the sample's innermost frame)"]
    lines += [f"  {pct:5.1f}  {name}" for name, pct in profile["top_own"]]
    lines += ["  % incl rnnserve function (inclusive: anywhere on the stack)"]
    lines += [f"  {pct:5.1f}  {name}" for name, pct in profile["top_inclusive"]]
    return "\n".join(lines)


# ------------------------------------------------------------------------------ memory


def session_memory(sessions: int) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "bench.session_memory", "--sessions", str(sessions)],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
    )
    return {
        "sessions": sessions,
        "returncode": done.returncode,
        "output": done.stdout.strip() or done.stderr.strip()[-2000:],
    }


# ------------------------------------------------------------------------------ report


def _fmt(value: float | None, digits: int = 2) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if abs(value) < 100 else f"{value:.0f}"


def stream_table(chosen: dict[str, dict[int, Summary]], markdown: bool = False) -> str:
    cols = [
        "N",
        "system",
        "steps/s",
        "p50 ms",
        "p99 ms",
        "server CPU ms/step",
        "server cores busy",
        "client CPU ms/step",
        "rows/run",
        "errors",
    ]
    rows = []
    for conc in sorted({c for pts in chosen.values() for c in pts}):
        for system, pts in chosen.items():
            if conc not in pts:
                continue
            r = pts[conc]
            cpu = r["cpu_ms_per_request"]
            rows.append(
                [
                    str(conc),
                    system,
                    f"{r['sequences_per_s']:.0f}",
                    _fmt(r["p50_ms"]),
                    _fmt(r["p99_ms"]),
                    _fmt(cpu.get("server"), 3),
                    _fmt(_cores(r, "server")),
                    _fmt(cpu.get("client"), 3),
                    _fmt(r.get("mean_batch_rows"), 1),
                    str(r["errors"]),
                ]
            )
    return _table(cols, rows, markdown)


def _cores(summary: Summary, probe: str) -> float | None:
    """Cores a process kept busy over the window: steps/s × CPU s per step."""
    per_step = summary["cpu_ms_per_request"].get(probe)
    return None if per_step is None else summary["requests_per_s"] * per_step / 1e3


def gateway_table(gateway: dict[str, Any], markdown: bool = False) -> str:
    cols = [
        "clients",
        "system",
        "steps/s",
        "calls/s",
        "p50 ms",
        "p99 ms",
        "server CPU µs/step",
        "client CPU µs/step",
        "errors",
    ]
    chosen = figures(gateway["rounds"])
    rows = []
    for clients in sorted({c for pts in chosen.values() for c in pts}):
        for system, pts in chosen.items():
            if clients not in pts:
                continue
            r = pts[clients]
            cpu = r["cpu_us_per_step"]
            server = cpu.get("server") if system == "gateway" else cpu.get("client")
            client = cpu.get("client") if system == "gateway" else None
            rows.append(
                [
                    str(clients),
                    system,
                    f"{r['sequences_per_s']:.0f}",
                    f"{r['requests_per_s']:.1f}",
                    _fmt(r["p50_ms"]),
                    _fmt(r["p99_ms"]),
                    _fmt(server),
                    _fmt(client),
                    str(r["errors"]),
                ]
            )
    return _table(cols, rows, markdown)


def _table(cols: list[str], rows: list[list[str]], markdown: bool) -> str:
    if markdown:
        text = {"system", "target", "goal", "verdict", "note"}
        lines = [
            "| " + " | ".join(cols) + " |",
            "|" + "|".join("---" if c in text else "---:" for c in cols) + "|",
        ]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [
        max(len(c), *(len(r[i]) for r in rows)) if rows else len(c) for i, c in enumerate(cols)
    ]
    fmt = "  ".join(f"{{:<{w}}}" if i == 1 else f"{{:>{w}}}" for i, w in enumerate(widths))
    lines = [fmt.format(*cols), "-" * (sum(widths) + 2 * (len(cols) - 1))]
    lines += [fmt.format(*row) for row in rows]
    return "\n".join(lines)


def _same_round(results: Results, a: str, b: str, conc: int, key: str) -> float | None:
    """Median over rounds of a[key] / b[key], both from the same round."""
    if a not in results or b not in results or conc not in results[a] or conc not in results[b]:
        return None
    theirs = {s["round"]: s for s in results[b][conc]}
    values = sorted(
        s[key] / theirs[s["round"]][key]
        for s in results[a][conc]
        if s["round"] in theirs and s[key] and theirs[s["round"]][key]
    )
    return round(values[(len(values) - 1) // 2], 3) if values else None


def targets(results: Results, gateway: dict[str, Any] | None) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []

    def add(name: str, value: float | None, goal: str, ok: bool | None, note: str = "") -> None:
        verdict = "n/a" if ok is None else ("PASS" if ok else "MISS")
        rows.append(
            {"target": name, "value": value, "goal": goal, "verdict": verdict, "note": note}
        )

    n = 256
    rate = "sequences_per_s"
    v = _same_round(results, "ws", "echo-ws", n, rate)
    add("WS steps/s @256 ÷ WS echo", v, ">= 0.75", None if v is None else v >= 0.75)
    v = _same_round(results, "ws", "naive", n, rate)
    add("WS steps/s @256 ÷ naive", v, ">= 5", None if v is None else v >= 5)
    chosen = figures(results)
    p99 = chosen.get("ws", {}).get(n, {}).get("p99_ms")
    echo_ratio = _same_round(results, "ws", "echo-ws", n, "p99_ms")
    ok = None if p99 is None else (p99 < 50 or (echo_ratio is not None and echo_ratio < 1.5))
    add(
        "WS p99 @256 (ms)", p99, "< 50 ms, or < 1.5x echo p99", ok, f"p99 ÷ echo p99 = {echo_ratio}"
    )
    for conc in sorted(results.get("grpc-stream", {})):
        v = _same_round(results, "grpc-stream", "ws", conc, rate)
        add(f"(info) gRPC stream steps/s @{conc} ÷ WS", v, "-", None, "same round")
        v = _same_round(results, "grpc-stream", "ws", conc, "p99_ms")
        add(f"(info) gRPC stream p99 @{conc} ÷ WS p99", v, "-", None, "same round")
    v = _same_round(results, "rest", "naive", n, rate)
    add("REST steps/s @256 ÷ naive", v, ">= 2", None if v is None else v >= 2)
    cpu = figures(results)

    def cpu_ratio(a: str, b: str) -> float | None:
        try:
            mine = cpu[a][n]["cpu_ms_per_request"]["server"]
            theirs = cpu[b][n]["cpu_ms_per_request"]["server"]
        except KeyError:
            return None
        return round(theirs / mine, 3) if mine and theirs else None

    for a, b in (("ws", "echo-ws"), ("ws", "naive"), ("rest", "naive")):
        add(
            f"(info) steps per server CPU-second @256, {a} ÷ {b}",
            cpu_ratio(a, b),
            "same goal as above",
            None,
            "throughput if both servers had the same CPU; contention-proof",
        )
    if gateway:
        chosen_gw = figures(gateway["rounds"])
        ceilings = chosen_gw.get("ceiling", {})
        best_gateway = max((s[rate] for s in chosen_gw.get("gateway", {}).values()), default=0)
        loops = [
            ("1 intra-op thread (the issue's 1024 in 4-5 ms)", ceilings.get(1)),
            ("2 intra-op threads (both cores)", chosen_gw.get("ceiling-2t", {}).get(1)),
        ]
        for label, ceiling_summary in loops:
            top = ceiling_summary[rate] if ceiling_summary else 0
            v = round(best_gateway / top, 3) if top and best_gateway else None
            add(
                f"gateway steps/s ÷ in-process loop, {label}",
                v,
                ">= 0.40",
                None if v is None else v >= 0.40,
                f"one loop stepping the same {GATEWAY_SESSIONS} states: {top:.0f} steps/s; "
                "gateway: best of its client counts",
            )
        for clients, summary in sorted(chosen_gw.get("gateway", {}).items()):
            if clients > 1 and clients in ceilings:
                w = round(summary[rate] / ceilings[clients][rate], 3)
                add(
                    f"(info) gateway ({clients} clients) ÷ {clients} in-process loops",
                    w,
                    "-",
                    None,
                    f"{clients} loops of {GATEWAY_SESSIONS} states, 1 thread each "
                    f"({ceilings[clients][rate]:.0f} steps/s)",
                )
    return rows


def targets_table(rows: list[dict[str, Any]], markdown: bool = False) -> str:
    cols = ["target", "measured", "goal", "verdict", "note"]
    body = [
        [
            r["target"],
            "-" if r["value"] is None else f"{r['value']}",
            r["goal"],
            r["verdict"],
            r["note"],
        ]
        for r in rows
    ]
    return _table(cols, body, markdown)


def plot(chosen: dict[str, dict[int, Summary]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    styles = {
        "ws": ("rnnserve WebSocket", "C0", "o-"),
        "rest": ("rnnserve REST", "C1", "s-"),
        "naive": ("naive stateful (FastAPI+ORT)", "C3", "^-"),
        "echo-ws": ("WebSocket echo", "C2", "o--"),
        "echo-rest": ("FastAPI JSON echo", "C7", "s--"),
        "echo-ws-asyncio": ("WebSocket echo, asyncio loop", "C4", "o:"),
        "grpc-stream": ("rnnserve gRPC ModelStreamInfer", "C5", "D-"),
    }
    for system, pts in chosen.items():
        label, color, style = styles.get(system, (system, None, "x-"))
        ns = sorted(pts)
        left.plot(ns, [pts[n]["sequences_per_s"] for n in ns], style, color=color, label=label)
        right.plot(ns, [pts[n]["p99_ms"] or np.nan for n in ns], style, color=color, label=label)
    left.set(
        xscale="log",
        xlabel="concurrent sessions (closed loop, 1 step per message)",
        ylabel="steps/s",
        title="throughput",
    )
    right.set(
        xscale="log",
        yscale="log",
        xlabel="concurrent sessions",
        ylabel="p99 ms",
        title="p99 latency",
    )
    for ax in (left, right):
        ax.grid(True, which="both", alpha=0.3)
    left.set_ylim(bottom=0)
    left.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    plan, args = parse_plan(argv)
    config = MediumConfig()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    report: dict[str, Any] = {
        "benchmark": "sessions",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "plan": asdict(plan),
        "model": asdict(config),
        "environment_before": environment(),
        "fd_limit": raise_fd_limit(2 * max(plan.concurrencies) + 256),
        "correctness": {},
        "unavailable": {},
    }
    env = report["environment_before"]
    dirty = " + uncommitted changes in service/" if env["service_uncommitted_changes"] else ""
    print(
        f"code: commit {env['git_commit']}{dirty}; load average {env['load_average']}; "
        f"open files limit {report['fd_limit']}"
    )
    print(f"rnnserve flags: {' '.join(plan.rnnserve_flags)}", flush=True)
    gateway: dict[str, Any] | None = None
    profile: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="rnnserve-bench-") as tmp, ExitStack() as stack:
        workdir = Path(tmp)
        files = write_model_files(workdir, config)
        messages = step_messages(config)
        sequence = sample_sequences(1, config)[0][:6]
        expected = reference_outputs(load_state(files.state), sequence[None])[0]
        servers: dict[str, ServerProcess] = {}
        wanted = {
            "rnnserve": {"ws", "rest", "grpc-stream"},
            "naive": {"naive"},
            "echo": {"echo-ws", "echo-rest"},
            "echo-asyncio": {"echo-ws-asyncio"},
        }
        starters: dict[str, Callable[[], ServerProcess]] = {
            "rnnserve": lambda: start_rnnserve(
                files, workdir, plan.rnnserve_flags, grpc="grpc-stream" in plan.systems
            ),
            "naive": lambda: start_naive(files, workdir),
            "echo": lambda: start_echo(workdir),
            "echo-asyncio": lambda: start_echo(workdir, "asyncio"),
        }
        if args.profile is not None and not args.profile:
            args.profile = ["ws", "rest", "gateway"]
        need_rnnserve = ("gateway" not in args.skip) or bool(args.profile)
        for name, start in starters.items():
            if not (wanted[name] & set(plan.systems)) and not (
                name == "rnnserve" and need_rnnserve
            ):
                continue
            try:
                servers[name] = stack.enter_context(start())
                print(f"{name}: ready at {base_url(servers[name])}", flush=True)
            except Exception as exc:
                report["unavailable"][name] = f"{type(exc).__name__}: {exc}"
                print(f"{name}: UNAVAILABLE ({exc})", file=sys.stderr, flush=True)
        if "rnnserve" in servers:
            report["correctness"]["rest"] = check_rest(servers["rnnserve"], sequence, expected)
            report["correctness"]["ws"] = check_ws(servers["rnnserve"], sequence, expected)
            if "grpc-stream" in plan.systems:
                report["correctness"]["grpc-stream"] = check_grpc(
                    servers["rnnserve"], sequence, expected
                )
        if "naive" in servers:
            report["correctness"]["naive"] = check_rest(servers["naive"], sequence, expected)
        for system, verdict in report["correctness"].items():
            print(f"correctness {system}: {verdict}", flush=True)

        points: dict[str, PointFn] = {}
        for system in plan.systems:
            server = servers.get(
                {
                    "ws": "rnnserve",
                    "grpc-stream": "rnnserve",
                    "rest": "rnnserve",
                    "naive": "naive",
                    "echo-ws": "echo",
                    "echo-rest": "echo",
                    "echo-ws-asyncio": "echo-asyncio",
                }[system]
            )
            if server is None:
                continue
            if system == "grpc-stream":
                points[system] = grpc_point(server, grpc_bodies(config), plan)
            else:
                maker = ws_point if "ws" in system else rest_point
                points[system] = maker(server, messages, plan)
        results: Results = {}
        gateway_body: bytes | None = None
        if "stream" not in args.skip and points:
            print("\nstreaming (closed loop, one timestep per message):", flush=True)
            results = measure_stream(points, plan, report.setdefault("failed_points", {}))
        if "gateway" not in args.skip and "rnnserve" in servers:
            print(
                f"\ngateway ({GATEWAY_SESSIONS} sessions per request) vs in-process ceiling:",
                flush=True,
            )
            gateway = gateway_measure(servers["rnnserve"], files, config, plan)
            gateway_body = gateway.pop("sample_body")
        if args.profile and "rnnserve" in servers:
            print(f"\nprofiles (N={args.profile_n} clients for ws and rest):", flush=True)
            profile = profiles(
                args.profile,
                servers["rnnserve"],
                messages,
                args.profile_n,
                args.profile_seconds,
                RESULTS_DIR,
                gateway_body,
            )
        for name, server in servers.items():
            report.setdefault("server_logs_tail", {})[name] = server.log_tail(1500)
    memory = None if "memory" in args.skip else session_memory(plan.memory_sessions)

    report["environment_after"] = environment()
    chosen = figures(results)
    report["rounds"] = {s: {str(c): r for c, r in pts.items()} for s, pts in results.items()}
    report["gateway"] = gateway and {
        "request_bytes": gateway["request_bytes"],
        "rounds": {s: {str(c): r for c, r in pts.items()} for s, pts in gateway["rounds"].items()},
    }
    report["targets"] = targets(results, gateway)
    report["profile"] = profile
    report["memory"] = memory
    if chosen:
        print("\n" + stream_table(chosen))
        for system, reason in report.get("failed_points", {}).items():
            print(f"{system}: no figures from {reason}")
    if gateway:
        print("\n" + gateway_table(gateway))
    print("\n" + targets_table(report["targets"]))
    for one in profile.values():
        print("\n" + format_profile(one))
    if memory:
        print("\n" + memory["output"])
    print(
        f"\nload average before {env['load_average']}, after "
        f"{report['environment_after']['load_average']}"
    )
    if chosen:
        png = args.plot or RESULTS_DIR / f"sessions-{stamp}.png"
        plot(
            chosen,
            png,
            f"medium LSTM sessions, 1 step/message, closed loop; commit "
            f"{env['git_commit']}, 2 shared cores",
        )
        report["plot"] = str(png)
        print(f"plot: {png}")
    out = args.out or RESULTS_DIR / f"sessions-{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"results: {out}")
    return 0


def markdown(path: Path) -> str:
    """The tables of a saved run as Markdown: `python -m bench.sessions --markdown FILE`."""
    report = json.loads(path.read_text())
    results: Results = {
        s: {int(c): r for c, r in pts.items()} for s, pts in report["rounds"].items()
    }
    parts = [stream_table(figures(results), markdown=True)]
    gw = None
    if report.get("gateway"):
        gw = {
            "rounds": {
                s: {int(c): r for c, r in pts.items()}
                for s, pts in report["gateway"]["rounds"].items()
            }
        }
        parts.append(gateway_table(gw, markdown=True))
    parts.append(targets_table(targets(results, gw), markdown=True))
    for one in (report.get("profile") or {}).values():
        parts.append("```\n" + format_profile(one) + "\n```")
    if report.get("memory"):
        parts.append("```\n" + report["memory"]["output"] + "\n```")
    return "\n\n".join(parts)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--markdown":
        print(markdown(Path(sys.argv[2])))
        raise SystemExit(0)
    raise SystemExit(main())
