"""Redis record formats side by side: what format 2 (the state in one field) costs or saves
against format 1 (a field per tensor), in Redis memory per session and in the store's own
time per batch step (gather + scatter, one round trip each), measured in one run on one
throwaway redis-server on a loopback port.

    python -m bench.redis_records                       # medium LSTM: 2 layers x 128, h and c
    python -m bench.redis_records --layers 2 --hidden 64 --sessions 20000

For each format it creates the sessions through the store (one script each), reads Redis's
used_memory, then runs ROUNDS batches of --batch sessions (gather, scatter with a step id and
outputs, as the batcher does) and reports steps per second of store time. Bounded: N creates
and ROUNDS batches to 127.0.0.1, then the redis-server is stopped."""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import redis
from rnnserve.state.base import SessionRecord, StateLayout
from rnnserve.state.redis import RedisStateStore

from bench.server_memory import start_redis, stop_all

ROUNDS = 200


def used_memory(url: str) -> int:
    client = redis.Redis.from_url(url)
    try:
        return int(client.info("memory")["used_memory"])
    finally:
        client.close()


def flush(url: str) -> None:
    client = redis.Redis.from_url(url)
    try:
        client.flushall()
    finally:
        client.close()


async def measure(url: str, fmt: int, layout: StateLayout, sessions: int,
                  batch: int) -> dict[str, float]:
    flush(url)
    before = used_memory(url)
    store = RedisStateStore(url, ttl_s=3600, max_sessions=sessions + 1, record_format=fmt,
                            sweep_interval_s=3600)
    await store.start()
    try:
        now = time.time()
        rng = np.random.default_rng(fmt)
        ids = [f"s{i}" for i in range(sessions)]
        for start in range(0, sessions, 32):  # 32 creates in flight at a time (the pool's size)
            await asyncio.gather(*(
                store.create(layout, SessionRecord(id=sid, model=layout.model, version=1,
                                                   created=now, last_used=now, ttl_s=0),
                             None)
                for sid in ids[start:start + 32]))
        per_session = (used_memory(url) - before) / sessions
        outputs = np.zeros((batch, 1, 1), np.float32)
        state = {name: rng.standard_normal((layers, batch, hidden)).astype(np.float32)
                 for name, layers, hidden in layout.tensors}
        spent = 0.0
        for r in range(ROUNDS):
            rows = ids[(r * batch) % sessions:][:batch]
            began = time.perf_counter()
            gathered = await store.gather(layout, rows, [""] * len(rows))
            written = await store.scatter(gathered, state, [1] * len(rows), outputs,
                                          [f"{r}"] * len(rows))
            spent += time.perf_counter() - began
            assert not any(written.errors) and not any(written.conflict)
        return {"record_format": fmt, "redis_bytes_per_session": round(per_session),
                "store_steps_per_s": round(ROUNDS * batch / spent)}
    finally:
        await store.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--lstm", action=argparse.BooleanOptionalAction, default=True,
                        help="two state tensors (h and c); --no-lstm: one (h)")
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args(argv)
    names = ("h0", "c0") if args.lstm else ("h0",)
    layout = StateLayout("bench", 1, tuple((n, args.layers, args.hidden) for n in names))
    work = Path(tempfile.mkdtemp(prefix="rnnserve-records-"))
    proc, port = start_redis(work)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                used_memory(url)
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        rows = [asyncio.run(measure(url, fmt, layout, args.sessions, args.batch))
                for fmt in (1, 2)]
        for row in rows:
            print(json.dumps({"layout": [list(t) for t in layout.tensors], **row}))
        one, two = rows
        print(f"format 2 / format 1: memory per session "
              f"{two['redis_bytes_per_session'] / one['redis_bytes_per_session']:.3f}, "
              f"store steps/s {two['store_steps_per_s'] / one['store_steps_per_s']:.2f}")
    finally:
        stop_all([proc], work)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
