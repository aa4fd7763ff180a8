"""A gateway's bulk steps before and after a burst of KServe v2 steps, on one server.

`python -m bench.bulk_after_burst [--servers 3] [--burst v2-http ...] [--duration 8]
[--warmup 2] [--sessions 256] [--bulk-sessions 1024]`

Why it exists: bench.peers measures its bulk row after the v2 phases of the same round, and
that row used to fall there (95k to 73k steps/s in one run) while it held when measured
alone. This bench isolates that: for each of `--servers` fresh servers, bulk binary steps
(1024 sessions a request, one client: bench.peers' bulk load) are measured, then a burst of
one phase of bench.peers' load of 256 sessions (`--burst`: KServe v2 HTTP sequences, the
default; gRPC ModelStreamInfer or unary ModelInfer sequences; REST session steps), then bulk
steps again. It prints both figures and after ÷ before per server and burst, and the median
ratio per burst. With several bursts, each server takes them in the order given, and each
"before" is the figure measured after the previous burst.

The fall went away when the all-cores runs of a 1024-row batch got a calling thread of their
own instead of the shared worker pool, which the burst leaves with two live threads
(engine/runner.py says what was and was not found about why)."""

from __future__ import annotations

import argparse
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path

from bench.medium_model import MediumConfig, write_model_files
from bench.peers.plan import Plan, parse_plan
from bench.peers.servers import peers_rnnserve_flags
from bench.peers.systems import Phase, bulk, rest, v2_grpc, v2_http
from bench.procs import ServerProcess, start_rnnserve

BURSTS: dict[str, Callable[[ServerProcess, Plan], Phase]] = {
    "v2-http": lambda server, plan: v2_http(server, plan, "binary", plan.sessions),
    "grpc-stream": lambda server, plan: v2_grpc(server, plan, False, True, plan.sessions),
    "grpc-unary": lambda server, plan: v2_grpc(server, plan, False, False, plan.sessions),
    "rest": lambda server, plan: rest(server, plan, plan.sessions),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--servers", type=int, default=3, help="fresh servers, one after another")
    parser.add_argument("--burst", nargs="+", choices=sorted(BURSTS), default=["v2-http"],
                        help="the load of the burst (several: one after another)")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds measured per phase")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up per phase")
    parser.add_argument("--sessions", type=int, default=256, help="v2 sequences of the burst")
    parser.add_argument("--bulk-sessions", type=int, default=1024, help="sessions a bulk request")
    args = parser.parse_args(argv)
    plan = parse_plan(["--no-peer", "--duration", str(args.duration),
                       "--warmup", str(args.warmup), "--sessions", str(args.sessions),
                       "--bulk-sessions", str(args.bulk_sessions)])
    flags = peers_rnnserve_flags()
    grpc = any(burst.startswith("grpc") for burst in args.burst)
    ratios: dict[str, list[float]] = {burst: [] for burst in args.burst}
    errors = 0
    with tempfile.TemporaryDirectory(prefix="rnnserve-burst-") as tmp:
        workdir = Path(tmp)
        repository = write_model_files(workdir, MediumConfig()).repository
        for number in range(1, args.servers + 1):
            with start_rnnserve(repository, workdir, flags, grpc=grpc) as server:
                steps = bulk(server, plan, binary=True)
                before = steps()
                errors += before["errors"]
                for name in args.burst:
                    burst = BURSTS[name](server, plan)()
                    after = steps()
                    errors += burst["errors"] + after["errors"]
                    rate_before, rate_after = before["sequences_per_s"], after["sequences_per_s"]
                    ratios[name].append(rate_after / rate_before)
                    print(f"server {number}: bulk binary {rate_before:,.0f} steps/s before, "
                          f"{rate_after:,.0f} after {name} at {burst['sequences_per_s']:,.0f} "
                          f"steps/s ({plan.sessions} sessions): after ÷ before "
                          f"{ratios[name][-1]:.3f}; server CPU "
                          f"{before['cpu_ms_per_request']['server']:.1f} / "
                          f"{after['cpu_ms_per_request']['server']:.1f} ms a request; errors "
                          f"{before['errors']} / {burst['errors']} / {after['errors']}",
                          flush=True)
                    before = after
    for name, values in ratios.items():
        print(f"after {name}: after ÷ before, median of {len(values)}: "
              f"{statistics.median(values):.3f}")
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
