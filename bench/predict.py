"""Stateless prediction, side by side: rnnserve vs a naive FastAPI + PyTorch server vs ONNX
Runtime in-process, on the medium LSTM (bench/medium_model.py), one 168×8 sequence per request,
at several concurrencies.

    python -m bench.predict            # full run: 3 rounds of 5 s per point (about 3 minutes)
    python -m bench.predict --quick    # 1 round of 2 s per point (about 30 seconds)

Each point: N closed-loop clients (each sends its next request when the previous reply is in),
a warm-up, then a fixed window bounded in time and request count; sequences/s, p50 and p99
latency, and CPU per sequence of the server and of the load generator. The systems take turns
at each concurrency, round after round, and the round with the median throughput is shown, so
that a noisy neighbour on the shared machine affects them alike. Everything runs on this
machine and talks to 127.0.0.1 only. Results: a table and ratios on stdout, and
bench/results/predict-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import orjson

from bench import ceiling
from bench.inprocess import run_threads
from bench.loadgen import ClientKind, Request, run_load
from bench.medium_model import (
    MODEL_NAME,
    MediumConfig,
    agreement,
    load_state,
    reference_outputs,
    sample_sequences,
    write_model_files,
)
from bench.procs import (
    ServerProcess,
    base_url,
    cpu_seconds,
    start_naive_predict,
    start_rnnserve,
)
from bench.report import Results, environment, figures, format_ratios, format_table, ratios
from bench.stats import LoadResult

SYSTEMS = ("rnnserve", "naive", "ceiling")
RESULTS_DIR = Path(__file__).resolve().parent / "results"
DISTINCT_SEQUENCES = 64  # requests cycle through these; enough that no cache sees a repeat


@dataclass(frozen=True)
class Plan:
    """How long and how hard to push each point."""

    concurrencies: tuple[int, ...]
    duration_s: float
    warmup_s: float
    max_requests: int
    systems: tuple[str, ...]
    rounds: int
    client: ClientKind
    ceiling_intra_op_threads: int


def parse_plan(argv: list[str] | None) -> tuple[Plan, argparse.Namespace]:
    parser = argparse.ArgumentParser(
        prog="python -m bench.predict", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--quick", action="store_true", help="one round of 2 s per point (default: 3 of 5 s)"
    )
    parser.add_argument("--duration", type=float, help="seconds measured per point")
    parser.add_argument("--warmup", type=float, help="seconds of warm-up per point")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--rounds", type=int, help="rounds per point; the median one is shown")
    parser.add_argument("--max-requests", type=int, default=50_000, help="bound per point")
    parser.add_argument("--systems", nargs="+", choices=SYSTEMS, default=list(SYSTEMS))
    parser.add_argument("--client", choices=["aiohttp", "httpx"], default="aiohttp")
    parser.add_argument("--ceiling-intra-op-threads", type=int, default=1)
    parser.add_argument("--naive-torch-threads", type=int, default=None)
    parser.add_argument("--out", type=Path, help="JSON path (default bench/results/...)")
    args = parser.parse_args(argv)
    plan = Plan(
        concurrencies=tuple(args.concurrency),
        duration_s=args.duration or (2.0 if args.quick else 5.0),
        warmup_s=args.warmup or (0.5 if args.quick else 1.0),
        rounds=args.rounds or (1 if args.quick else 3),
        max_requests=args.max_requests,
        systems=tuple(s for s in SYSTEMS if s in args.systems),
        client=args.client,
        ceiling_intra_op_threads=args.ceiling_intra_op_threads,
    )
    return plan, args


# ------------------------------------------------------------------------------ the systems


def predict_bodies(sequences: np.ndarray) -> list[bytes]:
    """One pre-encoded `{"inputs": [seq]}` body per sequence (float32 reprs, ~15 kB each)."""
    return [orjson.dumps({"inputs": [seq]}, option=orjson.OPT_SERIALIZE_NUMPY) for seq in sequences]


def predict_factory(bodies: list[bytes]) -> Callable[[int, int], Request]:
    path = f"/v1/models/{MODEL_NAME}/predict"
    headers = {"content-type": "application/json"}
    requests = [Request("POST", path, body, headers) for body in bodies]

    def factory(client: int, number: int) -> Request:
        return requests[(client + number) % len(requests)]

    return factory


def check_server(server: ServerProcess, body: bytes, expected: np.ndarray) -> dict[str, Any]:
    """Send one sequence and compare the reply with PyTorch: the systems must do the same work."""
    import urllib.request

    request = urllib.request.Request(
        base_url(server) + f"/v1/models/{MODEL_NAME}/predict",
        data=body, headers={"content-type": "application/json"}, method="POST",
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=30) as response:
        reply = json.loads(response.read())
    got = np.asarray(reply["outputs"][0], dtype=np.float32).reshape(expected.shape)
    return agreement(got, expected)


# ------------------------------------------------------------------------------ the run


def main(argv: list[str] | None = None) -> int:
    plan, args = parse_plan(argv)
    config = MediumConfig()
    report: dict[str, Any] = {
        "benchmark": "predict",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "plan": asdict(plan),
        "model": asdict(config),
        "environment_before": environment(),
        "unavailable": {},
        "correctness": {},
    }
    with tempfile.TemporaryDirectory(prefix="rnnserve-bench-") as tmp, ExitStack() as stack:
        workdir = Path(tmp)
        print(f"model: medium LSTM {config}; exporting to {workdir}", flush=True)
        env = report["environment_before"]
        dirty = " + uncommitted changes in service/" if env["service_uncommitted_changes"] else ""
        print(f"code: commit {env['git_commit']}{dirty}; load average {env['load_average']}")
        files = write_model_files(workdir, config)
        sequences = sample_sequences(DISTINCT_SEQUENCES, config)
        expected = reference_outputs(load_state(files.state), sequences[:1])[0]  # [time, out]
        bodies = predict_bodies(sequences)

        servers: dict[str, ServerProcess] = {}
        starters: list[tuple[str, Callable[[], ServerProcess]]] = [
            ("rnnserve", lambda: start_rnnserve(files.repository, workdir)),
            ("naive", lambda: start_naive_predict(files.state, workdir, args.naive_torch_threads)),
        ]
        for system, start in starters:
            if system not in plan.systems:
                continue
            try:
                servers[system] = stack.enter_context(start())
                report["correctness"][system] = check_server(servers[system], bodies[0], expected)
                print(f"{system}: ready at {base_url(servers[system])}", flush=True)
            except Exception as exc:  # report what is missing and measure the rest
                report["unavailable"][system] = f"{type(exc).__name__}: {exc}"
                print(f"{system}: UNAVAILABLE, skipped ({exc})", file=sys.stderr, flush=True)
                if system in servers:
                    servers.pop(system).stop()

        points: dict[str, Callable[[int], LoadResult]] = {}
        factory = predict_factory(bodies)
        for name, server in servers.items():
            points[name] = _http_point(server, factory, plan)
        if "ceiling" in plan.systems:
            session = ceiling.ort_session(files.onnx, plan.ceiling_intra_op_threads)
            got = ceiling.predict_outputs(session, sequences[0])
            report["correctness"]["ceiling"] = agreement(got, expected)
            points["ceiling"] = _ceiling_point(session, sequences, plan)
        for system, verdict in report["correctness"].items():
            if not verdict["ok"]:
                print(f"WARNING: {system} disagrees with PyTorch: {verdict}", file=sys.stderr)

        results = measure(points, plan)
        for name, server in servers.items():
            report.setdefault("server_logs_tail", {})[name] = server.log_tail(1500)

    chosen = figures(results)
    report["environment_after"] = environment()
    report["rounds"] = {s: {str(c): r for c, r in pts.items()} for s, pts in results.items()}
    report["figures"] = {s: list(pts.values()) for s, pts in chosen.items()}
    print("\n" + format_table(chosen))
    if "rnnserve" in chosen and len(chosen) > 1:
        report["ratios"] = ratios(results)
        print("\n" + format_ratios(report["ratios"]))
    out = args.out or RESULTS_DIR / f"predict-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nresults: {out}")
    if report["unavailable"]:
        print(f"not measured: {', '.join(report['unavailable'])} (reasons in the JSON)")
    return 0


def measure(points: dict[str, Callable[[int], LoadResult]], plan: Plan) -> Results:
    """Every point of every system, round after round; within a round the systems take turns
    at each concurrency, so slow drift in the neighbours' load hits them alike."""
    results: Results = {}
    for round_number in range(1, plan.rounds + 1):
        for conc in plan.concurrencies:
            for system, point in points.items():
                summary = point(conc).summary()
                summary["round"] = round_number
                results.setdefault(system, {}).setdefault(conc, []).append(summary)
                print(
                    f"  round {round_number} c={conc:<3} {system:<9} "
                    f"{summary['sequences_per_s']:>8.1f} seq/s  p50 {summary['p50_ms']} ms  "
                    f"p99 {summary['p99_ms']} ms  errors {summary['errors']}",
                    flush=True,
                )
    return results


def _http_point(
    server: ServerProcess, factory: Callable[[int, int], Request], plan: Plan
) -> Callable[[int], LoadResult]:
    pid = server.pid

    def point(conc: int) -> LoadResult:
        return run_load(
            base_url(server), factory, concurrency=conc, duration_s=plan.duration_s,
            warmup_s=plan.warmup_s, max_requests=plan.max_requests, client=plan.client,
            cpu_probes={"server": lambda: cpu_seconds(pid)},
        )  # fmt: skip

    return point


def _ceiling_point(
    session: ort.InferenceSession, sequences: np.ndarray, plan: Plan
) -> Callable[[int], LoadResult]:
    work = ceiling.predict_work(session, sequences)

    def point(conc: int) -> LoadResult:
        return run_threads(
            work, concurrency=conc, duration_s=plan.duration_s, warmup_s=plan.warmup_s,
            max_requests=plan.max_requests,
        )  # fmt: skip

    return point


if __name__ == "__main__":
    raise SystemExit(main())
