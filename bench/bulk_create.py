"""Sessions created per second through the API, single creates against bulk creates, in one
run on one server: start `rnnserve serve` on a loopback port (memory store, or a throwaway
redis-server on another loopback port), create SINGLE sessions one request each
(`POST /v1/models/{m}/sessions`, 32 in flight on keep-alive connections), then BULK sessions
with `{"sessions": [{}, ...]}` bodies of --per-request items (4 requests in flight), and print
sessions/s of each and their ratio as one JSON line.

    python -m bench.bulk_create --store memory
    python -m bench.bulk_create --store redis --record-format 2

Bounded: the creates go to 127.0.0.1, then everything it started is stopped."""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import tempfile
import time
from pathlib import Path

import orjson

from bench.server_memory import create, rss_bytes, start_redis, start_server, stop_all

BULK_CONCURRENCY = 4


async def create_bulk(port: int, model: str, n: int, per_request: int) -> int:
    """n sessions in bodies of `per_request` items on BULK_CONCURRENCY keep-alive
    connections; every item must come back as a session. Returns how many were made."""
    body = orjson.dumps({"sessions": [{}] * per_request})
    request = (f"POST /v1/models/{model}/sessions HTTP/1.1\r\nhost: 127.0.0.1\r\n"
               f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
               ).encode() + body
    todo = iter(range(n // per_request))
    made = 0

    async def worker() -> None:
        nonlocal made
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for _ in todo:
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                if not head.startswith(b"HTTP/1.1 200"):
                    raise RuntimeError(f"bulk create refused: {head!r}")
                length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:"))
                results = orjson.loads(await reader.readexactly(length))["results"]
                failed = [r for r in results if "session_id" not in r]
                if failed:
                    raise RuntimeError(f"{len(failed)} items failed, e.g. {failed[0]}")
                made += len(results)
        finally:
            writer.close()
    await asyncio.gather(*(worker() for _ in range(BULK_CONCURRENCY)))
    return made


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", choices=["memory", "redis"], default="memory")
    parser.add_argument("--single", type=int, default=20_000,
                        help="sessions made by single creates")
    parser.add_argument("--bulk", type=int, default=200_000,
                        help="sessions made by bulk creates")
    parser.add_argument("--per-request", type=int, default=1024)
    parser.add_argument("--model", default="temperature-lstm")
    parser.add_argument("--record-format", type=int, choices=[1, 2], default=1)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="rnnserve-bulk-"))
    started: list[subprocess.Popen[bytes]] = []
    store = "memory"
    try:
        if args.store == "redis":
            proc, redis_port = start_redis(work)
            started.append(proc)
            store = f"redis://127.0.0.1:{redis_port}/0"
        server, port = start_server(
            work, store, "--max-sessions", str(args.single + args.bulk + 1000),
            "--max-sessions-per-request", str(args.per_request),
            "--redis-record-format", str(args.record_format))
        started.append(server)
        began = time.perf_counter()
        asyncio.run(create(port, args.model, args.single))
        single_s = time.perf_counter() - began
        began = time.perf_counter()
        made = asyncio.run(create_bulk(port, args.model, args.bulk, args.per_request))
        bulk_s = time.perf_counter() - began
        single_rate, bulk_rate = args.single / single_s, made / bulk_s
        print(json.dumps({
            "store": args.store, "model": args.model, "per_request": args.per_request,
            "single_sessions": args.single, "single_per_s": round(single_rate),
            "bulk_sessions": made, "bulk_per_s": round(bulk_rate),
            "bulk_over_single": round(bulk_rate / single_rate, 1),
            "server_rss_mib": round(rss_bytes(server.pid) / 2**20, 1),
            **({"record_format": args.record_format} if args.store == "redis" else {})}))
    finally:
        stop_all(started, work)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
