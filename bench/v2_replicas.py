"""KServe v2 sequence steps against one rnnserve process and against two, on this machine.

`python -m bench.v2_replicas [--rounds 2] [--duration 10] [--sessions 256]`

bench.peers shows one rnnserve process answering v2 HTTP sequence steps at about half of
Triton's rate, near the floor of a one-process Python HTTP server. The obvious remedy is more
serving processes over one session store. This measures whether that pays on the machine the
targets are set on. It uses bench.peers' v2 client (binary tensors, `sequence_id`, 256
sessions, one medium-LSTM step a request, keep-alive connections) in four set-ups:

* `1 × memory`: one server, sessions in its memory (what bench.peers measures);
* `1 × redis`: one server, sessions in a real redis-server;
* `2 × redis`: two servers on that Redis, connections split evenly between them;
* `2 × memory`: two servers, each with its own sessions. This is NOT a deployable set-up (a
  sequence whose requests reached the other server would be unknown there). It is here as
  the upper bound: what two processes would give if the shared store cost nothing. Every
  sequence keeps to one connection here, so it is measurable.

Printed per set-up and round: steps/s, p50/p99, server CPU per step (the servers', and Redis's
separately), all from one run with the same client."""

from __future__ import annotations

import argparse
import itertools
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.client_loop import run_client
from bench.medium_model import MODEL_NAME, MediumConfig, write_model_files
from bench.peers.closedloop import run_sequences
from bench.peers.servers import tree_cpu
from bench.peers.systems import STATE_SHAPE, _port
from bench.peers.v2http import BinaryCodec, HttpLink
from bench.procs import HOST, RnnserveProcess, free_port, start_rnnserve
from bench.report import environment
from bench.sessions.plan import RNNSERVE_FLAGS
from bench.sessions.points import step_inputs

SETUPS = (("1 × memory", 1, "memory"), ("1 × redis", 1, "redis"),
          ("2 × redis", 2, "redis"), ("2 × memory", 2, "memory"))


def measure(servers: list[RnnserveProcess], redis_pid: int, args: argparse.Namespace,
            first_id: int) -> dict[str, Any]:
    ports = [_port(s) for s in servers]
    turn = itertools.count()

    async def opener() -> HttpLink:  # connection i goes to server i mod n
        return await HttpLink.open(HOST, ports[next(turn) % len(ports)])

    codec = BinaryCodec(HOST, MODEL_NAME, step_inputs(MediumConfig()), False, STATE_SHAPE,
                        first_id)
    probes = {f"server {i}": tree_cpu(s.pid) for i, s in enumerate(servers)}
    probes["redis"] = tree_cpu(redis_pid)
    result = run_client(run_sequences(opener, codec, concurrency=args.sessions,
                                  duration_s=args.duration, warmup_s=args.warmup,
                                  max_requests=args.max_requests, cpu_probes=probes))
    return result.summary()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--sessions", type=int, default=256)
    parser.add_argument("--max-requests", type=int, default=1_000_000)
    args = parser.parse_args()
    before = environment()
    print(f"code: commit {before['git_commit']}; load average "
          f"{before['load_average']}; {args.sessions} sessions, {args.duration:g} s "
          "phases", flush=True)
    with tempfile.TemporaryDirectory(prefix="rnnserve-v2-replicas-") as tmp:
        workdir = Path(tmp)
        files = write_model_files(workdir)
        redis_port = free_port()
        redis = subprocess.Popen(["redis-server", "--port", str(redis_port), "--bind", HOST,
                                  "--save", "", "--appendonly", "no"],
                                 stdout=subprocess.DEVNULL)
        try:
            time.sleep(0.5)
            rows = []
            for round_number, (label, count, store) in itertools.product(
                    range(args.rounds), SETUPS):
                flags = [*RNNSERVE_FLAGS, "--max-sessions", "100000"]
                if store == "redis":
                    flags += ["--state-store", f"redis://{HOST}:{redis_port}/0"]
                servers = [start_rnnserve(files.repository, workdir, flags)
                           for _ in range(count)]
                try:
                    first_id = 1 + 1_000_000 * len(rows)
                    summary = measure(servers, redis.pid, args, first_id)
                finally:
                    for server in servers:
                        server.stop()
                cpu = summary["cpu_ms_per_request"]
                serving = sum(v or 0 for k, v in cpu.items() if k.startswith("server"))
                rows.append((label, round_number + 1, summary["requests_per_s"],
                             summary["p50_ms"], summary["p99_ms"], serving,
                             cpu.get("redis") or 0.0, summary["errors"]))
                print(f"round {round_number + 1}  {label:10}  {summary['requests_per_s']:8,.0f} "
                      f"steps/s  p50 {summary['p50_ms']:6.1f} ms  p99 {summary['p99_ms']:6.1f} "
                      f"ms  servers' CPU {serving:.3f} ms a step  redis {cpu.get('redis') or 0:.3f}"
                      f"  errors {summary['errors']}", flush=True)
        finally:
            redis.terminate()
            redis.wait(10)
    print(f"\nload average after {environment()['load_average']}")
    by_setup: dict[str, list[float]] = {}
    for label, _, rate, *_ in rows:
        by_setup.setdefault(label, []).append(rate)
    base = by_setup["1 × memory"]
    for label, rates in by_setup.items():
        ratios = " / ".join(f"{r / b:.2f}" for r, b in zip(rates, base, strict=True))
        print(f"{label:10} ÷ 1 × memory, per round: {ratios}")


if __name__ == "__main__":
    main()
