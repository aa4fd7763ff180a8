"""The stream beside many idle sessions: WebSocket steps/s and p99 at 256 active sessions of
the medium LSTM with no other session, then again once --idle sessions (1,000,000 by
default) sit idle in the same server (made by bulk creates, whose rate is printed too), with
the server's RSS at each point. One run, one server (memory store, --max-sessions raised to
hold them), one JSON line at the end with the ratios.

    python -m bench.idle_scale
    python -m bench.idle_scale --idle 200000 --seconds 5

Bounded: requests to 127.0.0.1 only; the server is stopped at the end."""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.bulk_create import create_bulk
from bench.client_loop import run_client
from bench.medium_model import MODEL_NAME, MediumConfig, write_model_files
from bench.procs import start_rnnserve
from bench.server_memory import rss_bytes
from bench.sessions.points import step_messages
from bench.sessions.servers import server_cpu, ws_url
from bench.wsload import delete_sessions, run_ws_point

ACTIVE = 256


def ws_point(server: Any, messages: list[str], seconds: float) -> dict[str, Any]:
    result, sids, _ = run_ws_point(ws_url(server), messages, concurrency=ACTIVE,
                                   duration_s=seconds, warmup_s=2.0, max_requests=2_000_000,
                                   cpu_probes=server_cpu(server))
    summary = result.summary()
    delete_sessions(server.ready_url.removesuffix("/v2/health/ready"), sids)
    return {"steps_per_s": round(summary["sequences_per_s"]), "p50_ms": summary["p50_ms"],
            "p99_ms": summary["p99_ms"], "errors": summary["errors"],
            "rss_mib": round(rss_bytes(server.pid) / 2**20, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--idle", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=2,
                        help="points with none idle, then with all idle, this many times each "
                        "(the idle sessions are made once, before the first idle point)")
    args = parser.parse_args(argv)
    config = MediumConfig()
    messages = step_messages(config)
    with tempfile.TemporaryDirectory(prefix="rnnserve-idle-") as tmp:
        work = Path(tmp)
        files = write_model_files(work, config)
        server = start_rnnserve(files.repository, work, [
            "--log-level", "warning", "--max-sessions", str(args.idle + 10_000),
            "--max-sessions-per-client", "0"])
        try:
            port = int(server.ready_url.split(":")[2].split("/")[0])
            none_idle = [ws_point(server, messages, args.seconds) for _ in range(args.rounds)]
            print(f"none idle: {none_idle}", flush=True)
            began = time.perf_counter()
            made = run_client(create_bulk(port, MODEL_NAME, args.idle, 1024))
            create_s = time.perf_counter() - began
            print(f"{made:,} idle sessions in {create_s:.1f} s: {made / create_s:,.0f}/s",
                  flush=True)
            with_idle = [ws_point(server, messages, args.seconds) for _ in range(args.rounds)]
            print(f"{made:,} idle: {with_idle}", flush=True)
        finally:
            server.stop()
    best = {k: min(p["p99_ms"] for p in rows) for k, rows in
            (("none", none_idle), ("idle", with_idle))}
    rate = {k: max(p["steps_per_s"] for p in rows) for k, rows in
            (("none", none_idle), ("idle", with_idle))}
    print(json.dumps({
        "active": ACTIVE, "idle": made, "bulk_create_per_s": round(made / create_s),
        "none_idle": none_idle, "with_idle": with_idle,
        "p99_idle_over_none": round(best["idle"] / best["none"], 2),
        "steps_idle_over_none": round(rate["idle"] / rate["none"], 2),
        "rss_per_idle_session_bytes": round(
            (with_idle[0]["rss_mib"] - none_idle[-1]["rss_mib"]) * 2**20 / max(1, made))}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
