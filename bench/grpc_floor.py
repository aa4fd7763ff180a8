"""rnnserve's KServe v2 gRPC against its transport floor, in one run: N closed-loop sequences
(one timestep of the medium LSTM per message, `sequence_id` / `sequence_start` /
`sequence_end` parameters, the server keeps the state) over `ModelStreamInfer` (a stream per
sequence, all on one channel: bench/grpcload.py) and over unary `ModelInfer`, against a bare
grpc.aio server answering the same methods with replies of the same size
(bench/grpc_echo.py, with --match-ids). Prints steps/s, p50/p99, server and client CPU per
step, rows per ONNX Runtime run, and each rnnserve system's ratio to the echo of the same round.

    python -m bench.grpc_floor                      # 256 sequences, 2 rounds of 10 s
    python -m bench.grpc_floor --duration 5 --rounds 1 --systems stream echo-stream"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bench.client_loop import run_client
from bench.grpcload import encode_bodies, encode_prefix, run_grpc_stream_point
from bench.medium_model import MODEL_NAME, MediumConfig, write_model_files
from bench.peers.servers import start_grpc_echo
from bench.procs import RnnserveProcess, cpu_seconds, start_rnnserve
from bench.sessions.servers import batch_counters, mean_batch_rows
from bench.stats import CpuMarks, CpuProbe, LoadResult, Window

SYSTEMS = ("stream", "echo-stream", "unary", "echo-unary")
RATIOS = {"stream": "echo-stream", "unary": "echo-unary"}
FLAGS = ["--max-sessions", "20000", "--log-level", "warning"]
UNARY = "/inference.GRPCInferenceService/ModelInfer"


async def run_unary_point_async(
    target: str, bodies: list[bytes], *, concurrency: int, duration_s: float, warmup_s: float,
    max_requests: int, first_sequence_id: int, output_bytes: int,
    cpu_probes: Mapping[str, CpuProbe] | None = None,
) -> LoadResult:
    """`concurrency` sequences over unary ModelInfer (bytes in, bytes out, on one channel):
    each started (sequence_start) before the clock, stepped closed-loop, ended after it."""
    import grpc
    from rnnserve.grpc.generated import inference_pb2 as pb

    parse = pb.ModelInferResponse.FromString
    async with grpc.aio.insecure_channel(target) as channel:
        call = channel.unary_unary(UNARY)

        async def send(message: bytes) -> str | None:
            try:
                response = parse(await call(message, timeout=60))
            except grpc.aio.AioRpcError as exc:
                return f"{exc.code().name}: {exc.details()}"
            sizes = [len(b) for b in response.raw_output_contents]
            return None if sizes == [output_bytes] else f"bad reply {sizes}"

        def message(i: int, number: int, start: bool = False, end: bool = False) -> bytes:
            prefix = encode_prefix(MODEL_NAME, str(i), first_sequence_id + i, start=start, end=end)
            return prefix + bodies[(i + number) % len(bodies)]

        started = await asyncio.gather(*(send(message(i, 0, start=True))
                                         for i in range(concurrency)))
        if any(started):
            raise RuntimeError(f"sequences failed to start: {[e for e in started if e][:3]}")
        prefixes = [encode_prefix(MODEL_NAME, str(i), first_sequence_id + i)
                    for i in range(concurrency)]
        result = LoadResult(concurrency=concurrency, window_s=0.0)
        window = Window(time.perf_counter(), warmup_s, duration_s, max_requests)
        cpu = CpuMarks(cpu_probes)

        async def one(i: int) -> None:
            number = 1
            while window.open_for_new(time.perf_counter()):
                body = prefixes[i] + bodies[(i + number) % len(bodies)]
                number += 1
                began = time.perf_counter()
                error = await send(body)
                if not window.record(result, began, time.perf_counter(), error):
                    return

        timer = asyncio.create_task(cpu.mark_window_edges(window))
        try:
            await asyncio.gather(*(one(i) for i in range(concurrency)))
        finally:
            timer.cancel()
        result.window_s = window.length()
        cpu.into(result)
        await asyncio.gather(*(send(message(i, 0, end=True)) for i in range(concurrency)))
        return result


def _row(name: str, summary: dict[str, Any]) -> str:
    cpu = summary["cpu_ms_per_request"]
    return (f"{name:12s} {summary['requests_per_s']:>9.0f} {summary['p50_ms']:>8.2f} "
            f"{summary['p99_ms']:>8.2f} {cpu.get('server') or 0:>10.4f} "
            f"{cpu.get('client') or 0:>10.4f} {summary.get('mean_batch_rows') or '-':>6} "
            f"{summary['errors']:>6}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.grpc_floor",
                                     description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--max-requests", type=int, default=500_000)
    parser.add_argument("--systems", nargs="+", choices=SYSTEMS, default=list(SYSTEMS))
    parser.add_argument("--rnnserve-flag", action="append", default=[])
    parser.add_argument("--out", type=Path, help="JSON of every point")
    args = parser.parse_args(argv)
    config = MediumConfig()
    import numpy as np

    rng = np.random.default_rng(config.seed + 2)
    steps = rng.standard_normal((64, config.input_size)).astype(np.float32)
    bodies = encode_bodies("input", "output", steps)
    output_bytes = 4 * config.output_size
    workdir = Path(tempfile.mkdtemp(prefix="grpc-floor-"))
    files = write_model_files(workdir)
    results: list[dict[str, Any]] = []
    with start_rnnserve(files.repository, workdir, [*FLAGS, *args.rnnserve_flag],
                        grpc=True) as rnnserve:
        assert isinstance(rnnserve, RnnserveProcess)
        with start_grpc_echo(workdir, None, ["--output-size", str(config.output_size),
                                             "--match-ids"]) as echo:
            servers = {"stream": rnnserve, "unary": rnnserve, "echo-stream": echo,
                       "echo-unary": echo}
            targets = {"stream": rnnserve.grpc_target, "unary": rnnserve.grpc_target,
                       "echo-stream": echo.grpc_target, "echo-unary": echo.grpc_target}
            next_id = 1
            print(f"{'system':12s} {'steps/s':>9s} {'p50 ms':>8s} {'p99 ms':>8s} "
                  f"{'srv ms/st':>10s} {'cli ms/st':>10s} {'rows':>6s} {'errors':>6s}")
            for round_no in range(args.rounds):
                by_system: dict[str, dict[str, Any]] = {}
                for system in args.systems:
                    server = servers[system]
                    probes = {"server": lambda pid=server.pid: cpu_seconds(pid)}
                    window = dict(concurrency=args.concurrency, duration_s=args.duration,
                                  warmup_s=args.warmup, max_requests=args.max_requests,
                                  first_sequence_id=next_id, output_bytes=output_bytes,
                                  cpu_probes=probes)
                    next_id += args.concurrency
                    counters = batch_counters(server)
                    if system.endswith("stream"):
                        result, _, _ = run_grpc_stream_point(targets[system], MODEL_NAME,
                                                             bodies, **window)
                    else:
                        result = run_client(run_unary_point_async(targets[system], bodies,
                                                              **window))
                    summary = result.summary()
                    summary["mean_batch_rows"] = mean_batch_rows(counters,
                                                                 batch_counters(server))
                    by_system[system] = summary
                    print(_row(system, summary), flush=True)
                for system, floor in RATIOS.items():
                    if system in by_system and floor in by_system:
                        ratio = (by_system[system]["requests_per_s"]
                                 / max(by_system[floor]["requests_per_s"], 1e-9))
                        print(f"round {round_no + 1}: {system} / {floor} = {ratio:.2f}")
                results.append(by_system)
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
