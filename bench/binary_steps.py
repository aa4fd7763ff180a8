"""Bulk steps per second, JSON bodies against binary ones (raw float32 with a JSON header,
http/binary_steps.py), against in-process ONNX Runtime stepping the same 1024 states, in one
run: the medium LSTM (8 inputs, 2 × 128 hidden), 1024 sessions per request, one set of
sessions per client, closed loop.

    python -m bench.binary_steps                 # clients 1 and 2, 5 s windows
    python -m bench.binary_steps --clients 1 2 4 --seconds 10
    python -m bench.binary_steps --churn 4000    # sessions made as bench.peers' bulk row makes them

The ceiling is the better of ONNX Runtime's library defaults (intra-op threads: one per
core) in one loop and one thread per loop in as many loops as clients. The gateway's sessions
are created in one bulk request, so they sit in consecutive slots of the store; `--churn N`
first creates N sessions and deletes them in random order, then creates the measured ones one
request each, 64 at once (as bench.peers' bulk row does, after its earlier phases' sessions
came and went). Prints one line per point (with the server's gather and scatter time per
binary batch) and a JSON summary with each ratio. Bounded: requests to 127.0.0.1 only, for the
windows given; the server is stopped at the end."""

from __future__ import annotations

import argparse
import json
import random
import shlex
import tempfile
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson

from bench import ceiling
from bench.inprocess import run_threads
from bench.loadgen import Request, run_load
from bench.medium_model import MODEL_NAME, MediumConfig, write_model_files
from bench.procs import base_url, start_rnnserve
from bench.sessions.servers import server_cpu
from bench.wsload import create_sessions, delete_sessions

SESSIONS = 1024
BODIES = 4  # different inputs per client, cycled


def bulk_sessions(url: str, count: int) -> list[str]:
    r = httpx.post(f"{url}/v1/models/{MODEL_NAME}/sessions",
                   json={"sessions": [{}] * count}, timeout=60)
    r.raise_for_status()
    return [item["session_id"] for item in r.json()["results"]]


def churned_sessions(url: str, churn: int, count: int) -> list[str]:
    """`churn` sessions created and deleted in random order, then `count` created one request
    each, 64 at once."""
    made = create_sessions(url, MODEL_NAME, churn)
    random.Random(churn).shuffle(made)
    delete_sessions(url, made)
    return create_sessions(url, MODEL_NAME, count)


def copy_ms(url: str) -> dict[str, float]:
    """The server's cumulative gather and scatter time (its v2 statistics: compute_input and
    compute_output, counted per row as Triton counts them) and their count, to take
    differences of around a point."""
    stats = httpx.get(f"{url}/v2/models/{MODEL_NAME}/stats", timeout=10).json()
    phases = stats["model_stats"][0]["inference_stats"]
    return {"gather": phases["compute_input"]["ns"] / 1e6,
            "scatter": phases["compute_output"]["ns"] / 1e6,
            "rows": float(phases["compute_input"]["count"])}


def json_body(ids: list[str], x: np.ndarray) -> bytes:
    steps = [{"session_id": sid, "inputs": xi} for sid, xi in zip(ids, x, strict=True)]
    return orjson.dumps({"steps": steps}, option=orjson.OPT_SERIALIZE_NUMPY)


def binary_body(ids: list[str], x: np.ndarray) -> tuple[bytes, dict[str, str]]:
    head = orjson.dumps({"session_ids": ids, "shape": list(x.shape), "datatype": "FP32"})
    return head + x.astype("<f4").tobytes(), {
        "content-type": "application/octet-stream",
        "inference-header-content-length": str(len(head))}


def check_json(status: int, body: bytes) -> str | None:
    if status != 200:
        return f"HTTP {status}: {body[:200]!r}"
    return f"item error: {body[:300]!r}" if b'"error"' in body else None


def check_binary(status: int, body: bytes) -> str | None:
    if status != 200:
        return f"HTTP {status}: {body[:200]!r}"
    return f"item error: {body[:300]!r}" if b'"errors":[]' not in body[:20000] else None


def point(result: Any) -> dict[str, Any]:
    summary = result.summary(items_per_request=SESSIONS)
    cpu = summary["cpu_ms_per_request"].get("server")
    return {"steps_per_s": round(summary["sequences_per_s"]), "p50_ms": summary["p50_ms"],
            "p99_ms": summary["p99_ms"], "errors": summary["errors"],
            "error_samples": summary["error_samples"],
            "server_cpu_us_per_step": round(cpu * 1e3 / SESSIONS, 3) if cpu else None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--churn", type=int, default=0,
                        help="sessions created and deleted before the measured ones, which are "
                             "then created one request each")
    parser.add_argument("--server-flags", default="",
                        help='more `rnnserve serve` flags, one string: "--max-batch 1024"')
    args = parser.parse_args(argv)
    config = MediumConfig()
    rng = np.random.default_rng(11)
    out: dict[str, Any] = {"sessions_per_request": SESSIONS, "points": {}}
    with tempfile.TemporaryDirectory(prefix="rnnserve-binsteps-") as tmp:
        work = Path(tmp)
        files = write_model_files(work, config)
        server = start_rnnserve(files.repository, work,
                                ["--log-level", "warning", *shlex.split(args.server_flags)])
        try:
            url = base_url(server)
            clients = max(args.clients)
            inputs = rng.standard_normal((clients, BODIES, SESSIONS, 1, config.input_size)
                                         ).astype(np.float32)
            ids = [churned_sessions(url, args.churn, SESSIONS) if args.churn
                   else bulk_sessions(url, SESSIONS) for _ in range(clients)]
            json_bodies = [[json_body(ids[c], inputs[c, b]) for b in range(BODIES)]
                           for c in range(clients)]
            binary_bodies = [[binary_body(ids[c], inputs[c, b]) for b in range(BODIES)]
                             for c in range(clients)]
            path = f"/v1/models/{MODEL_NAME}/steps"
            json_headers = {"content-type": "application/json"}
            window = {"duration_s": args.seconds, "warmup_s": 1.0}

            def json_request(client: int, number: int) -> Request:
                return Request("POST", path, json_bodies[client][number % BODIES], json_headers)

            def binary_request(client: int, number: int) -> Request:
                body, headers = binary_bodies[client][number % BODIES]
                return Request("POST", path, body, headers)

            defaults = ceiling.ort_session(files.onnx, 0)
            single = ceiling.ort_session(files.onnx, 1)
            shape = (config.num_layers, SESSIONS, config.hidden_size)

            def loops(session: Any, count: int) -> Any:
                states = [{"h0": np.zeros(shape, np.float32), "c0": np.zeros(shape, np.float32)}
                          for _ in range(count)]

                def work(worker: int, number: int) -> None:
                    own = states[worker]
                    _, own["h0"], own["c0"] = session.run(
                        ["output", "hn", "cn"], {"input": inputs[0, number % BODIES], **own})
                return work

            for count in args.clients:
                row: dict[str, Any] = {}
                row["json"] = point(run_load(url, json_request, concurrency=count, **window,
                                             validate=check_json,
                                             cpu_probes=server_cpu(server)))
                before = copy_ms(url)
                row["binary"] = point(run_load(url, binary_request, concurrency=count,
                                               **window, validate=check_binary,
                                               cpu_probes=server_cpu(server)))
                after = copy_ms(url)
                rows = max(1.0, after["rows"] - before["rows"])
                row["binary"]["gather_ms"], row["binary"]["scatter_ms"] = (
                    round((after[k] - before[k]) / rows, 3) for k in ("gather", "scatter"))
                in_defaults = point(run_threads(loops(defaults, 1), concurrency=1, **window))
                in_loops = point(run_threads(loops(single, count), concurrency=count, **window))
                row["in_process"] = max(in_defaults, in_loops, key=lambda p: p["steps_per_s"])
                row["in_process"]["how"] = ("library defaults, one loop"
                                            if row["in_process"] is in_defaults else
                                            f"1 thread × {count} loops")
                top = row["in_process"]["steps_per_s"]
                row["json_over_in_process"] = round(row["json"]["steps_per_s"] / top, 3)
                row["binary_over_in_process"] = round(row["binary"]["steps_per_s"] / top, 3)
                row["binary_over_json"] = round(
                    row["binary"]["steps_per_s"] / max(1, row["json"]["steps_per_s"]), 2)
                out["points"][count] = row
                print(f"clients={count}: json {row['json']['steps_per_s']:,} steps/s, binary "
                      f"{row['binary']['steps_per_s']:,}, in-process {top:,} "
                      f"({row['in_process']['how']}): json {row['json_over_in_process']}×, "
                      f"binary {row['binary_over_in_process']}× (target 0.40×); a binary "
                      f"batch's gather {row['binary']['gather_ms']} ms, scatter "
                      f"{row['binary']['scatter_ms']} ms", flush=True)
        finally:
            server.stop()
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
