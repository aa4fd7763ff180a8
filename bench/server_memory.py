"""A real server's memory at N live sessions, for sizing Kubernetes requests and Redis's
maxmemory: start `rnnserve serve` on a loopback port (memory store, or a throwaway
redis-server on another loopback port), read its RSS from /proc, create N sessions through
`POST /v1/models/{m}/sessions` (the API has no bulk create; CONCURRENCY requests in flight on
keep-alive connections), read the RSS again and, with Redis, `INFO memory` used_memory.

    python -m bench.server_memory --store memory --sessions 100000
    python -m bench.server_memory --store redis --sessions 100000
    python -m bench.server_memory --store redis --sessions 100000 --record-format 2

Bounded: N creates to 127.0.0.1, then everything it started is stopped."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.procs import free_port

CONCURRENCY = 32


def rss_bytes(pid: int) -> int:
    """Resident set size of `pid` from /proc (Linux)."""
    pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}")
        try:
            if httpx.get(url + "/v2/health/ready", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError("the server did not get ready")


async def create(port: int, model: str, n: int) -> None:
    """n creates on CONCURRENCY keep-alive connections, written and parsed by hand: httpx's
    own cost per request would dominate the run on a small machine."""
    todo = iter(range(n))
    request = (f"POST /v1/models/{model}/sessions HTTP/1.1\r\nhost: 127.0.0.1\r\n"
               "content-length: 0\r\n\r\n").encode()

    async def worker() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for _ in todo:
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                if not head.startswith(b"HTTP/1.1 201"):
                    raise RuntimeError(f"create refused: {head!r}")
                length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:"))
                await reader.readexactly(length)
        finally:
            writer.close()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))


def redis_used_memory(port: int) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"INFO memory\r\n")
        reply = b""
        while b"used_memory:" not in reply or not reply.endswith(b"\r\n\r\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            reply += chunk
    line = next(x for x in reply.decode().splitlines() if x.startswith("used_memory:"))
    return int(line.split(":")[1])


def start_redis(work: Path) -> tuple[subprocess.Popen[bytes], int]:
    """A throwaway redis-server on a free loopback port (no persistence, its files in
    `work`), and that port; SystemExit when the binary is missing."""
    redis_server = shutil.which("redis-server")
    if redis_server is None:
        raise SystemExit("redis-server is not installed")
    port = free_port()
    proc = subprocess.Popen(
        [redis_server, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(work)], stdout=subprocess.DEVNULL)
    time.sleep(0.5)
    return proc, port


def start_server(work: Path, store: str, *flags: str) -> tuple[subprocess.Popen[bytes], int]:
    """`rnnserve serve` on a free loopback port with that state store, no per-client cap,
    and `flags`; its log in `work`. Returns once it is ready."""
    port = free_port()
    log = open(work / "server.log", "wb")  # noqa: SIM115 - lives as long as the server
    server = subprocess.Popen(
        [sys.executable, "-m", "rnnserve", "serve", "--host", "127.0.0.1", "--port",
         str(port), "--grpc-port", "0", "--state-store", store, "--log-level", "warning",
         "--max-sessions-per-client", "0", *flags],
        stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_ready(f"http://127.0.0.1:{port}", server)
    except BaseException:
        server.kill()
        raise
    return server, port


def stop_all(started: list[subprocess.Popen[bytes]], work: Path) -> None:
    """Stop what start_redis and start_server started, last first, and remove `work`."""
    for proc in reversed(started):
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
    shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", choices=["memory", "redis"], default="memory")
    parser.add_argument("--sessions", type=int, default=100_000)
    parser.add_argument("--model", default="temperature-lstm")
    parser.add_argument("--record-format", type=int, choices=[1, 2], default=1,
                        help="with --store redis: the record format the server writes")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="rnnserve-mem-"))
    started: list[subprocess.Popen[bytes]] = []
    redis_port = 0
    store = "memory"
    try:
        if args.store == "redis":
            proc, redis_port = start_redis(work)
            started.append(proc)
            store = f"redis://127.0.0.1:{redis_port}/0"
        server, port = start_server(work, store, "--max-sessions", str(args.sessions + 1000),
                                    "--redis-record-format", str(args.record_format))
        started.append(server)
        rss_before = rss_bytes(server.pid)
        redis_before = redis_used_memory(redis_port) if redis_port else 0
        began = time.perf_counter()
        asyncio.run(create(port, args.model, args.sessions))
        seconds = time.perf_counter() - began
        time.sleep(1)
        row = {"store": args.store, "model": args.model, "sessions": args.sessions,
               "server_rss_before_mib": round(rss_before / 2**20, 1),
               "server_rss_after_mib": round(rss_bytes(server.pid) / 2**20, 1),
               "create_seconds": round(seconds, 1)}
        if redis_port:
            used = redis_used_memory(redis_port)
            row["redis_used_memory_mib"] = round(used / 2**20, 1)
            row["redis_bytes_per_session"] = round((used - redis_before) / args.sessions)
            row["record_format"] = args.record_format
        print(json.dumps(row))
    finally:
        stop_all(started, work)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
