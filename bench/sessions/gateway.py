"""The gateway: `POST /v1/models/medium-lstm/steps` carrying 1024 sessions' steps per request,
against the in-process ONNX Runtime loop that steps the same 1024 states per session.run."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import orjson

from bench import ceiling
from bench.inprocess import run_threads
from bench.loadgen import Request, run_load
from bench.medium_model import MODEL_NAME, MediumConfig, ModelFiles
from bench.procs import ServerProcess, base_url
from bench.report import Summary
from bench.sessions.plan import GATEWAY_SESSIONS, Plan
from bench.sessions.points import print_point
from bench.sessions.servers import batch_counters, mean_batch_rows, server_cpu
from bench.stats import LoadResult
from bench.wsload import create_sessions


def gateway_measure(
    server: ServerProcess, files: ModelFiles, config: MediumConfig, plan: Plan
) -> dict[str, Any]:
    """Gateway requests of 1024 sessions each (one set of sessions per gateway client) vs the
    in-process ceiling stepping 1024 states per session.run."""
    rng = np.random.default_rng(config.seed + 3)
    headers = {"content-type": "application/json"}
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
        states = [
            {name: np.zeros(shape, np.float32) for name in ("h0", "c0")} for _ in range(loops)
        ]

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
                **plan.window(),
                validate=check,
                cpu_probes=server_cpu(server),
            )
            gw = _gateway_summary(result, round_number)
            gw["mean_batch_rows"] = mean_batch_rows(counters, batch_counters(server))
            in_proc = run_threads(
                ceiling_work,
                concurrency=clients,
                **plan.window(),
            )
            ceil = _gateway_summary(in_proc, round_number)
            measured = [("gateway", gw), ("ceiling", ceil)]
            if clients == 1:  # one loop over the same 1024 states with both cores inside it
                in_proc_2t = run_threads(
                    ceiling_work_2t,
                    concurrency=1,
                    **plan.window(),
                )
                measured.append(("ceiling-2t", _gateway_summary(in_proc_2t, round_number)))
            for name, summary in measured:
                out["rounds"].setdefault(name, {}).setdefault(clients, []).append(summary)
                print_point(
                    f"  round {round_number} clients={clients} {name:<8} "
                    f"{summary['sequences_per_s']:>9.0f} steps/s  "
                    f"{summary['requests_per_s']:.1f} calls/s  p50 {summary['p50_ms']} ms  "
                    f"p99 {summary['p99_ms']} ms  errors {summary['errors']}  rows/run "
                    f"{summary.get('mean_batch_rows')}",
                    summary,
                )
    return out  # its sessions stay (the gateway profile steps them); the server ends soon


def _gateway_summary(result: LoadResult, round_number: int) -> Summary:
    summary = result.summary(items_per_request=GATEWAY_SESSIONS)
    summary["round"] = round_number
    cpu = summary["cpu_ms_per_request"]
    summary["cpu_us_per_step"] = {
        k: (round(v * 1e3 / GATEWAY_SESSIONS, 3) if v else None) for k, v in cpu.items()
    }
    return summary
