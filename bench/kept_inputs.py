"""What a session's kept inputs (model.json `rewarm_steps` W, for migration) cost in memory,
per session, in both stores, measured against the same sessions without them.

    python -m bench.kept_inputs                     # W 0, 24, 48, 96; 10 features (the
    python -m bench.kept_inputs --features 3        #   committed models' width)

For each W it creates --sessions sessions through the store, steps each with W + 1 timesteps
in batches of 256 (so every window is full), and reports the bytes per session above W = 0:
the memory store's by tracemalloc (what Python allocated), Redis's by INFO used_memory.
Bounded: the sessions and their batches to 127.0.0.1, then the redis-server is stopped."""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
from rnnserve.state.base import SessionRecord, StateLayout, StateStore
from rnnserve.state.memory import MemoryStateStore

from bench.redis_records import flush, used_memory
from bench.server_memory import start_redis, stop_all

BATCH = 256
TENSORS = (("h0", 2, 64), ("c0", 2, 64))  # temperature-lstm's state


async def fill(store: StateStore, layout: StateLayout, sessions: int, window: int) -> None:
    now = time.time()
    ids = [f"s{i}" for i in range(sessions)]
    for start in range(0, sessions, 32):
        await asyncio.gather(*(store.create(layout, SessionRecord(
            id=sid, model=layout.model, version=1, created=now, last_used=now, ttl_s=0), None)
            for sid in ids[start:start + 32]))
    rng = np.random.default_rng(0)
    timesteps = window + 1
    for start in range(0, sessions, BATCH):
        rows = ids[start:start + BATCH]
        state = {name: rng.standard_normal((layers, len(rows), hidden)).astype(np.float32)
                 for name, layers, hidden in layout.tensors}
        x = rng.standard_normal((len(rows), timesteps, layout.features)).astype(np.float32)
        gathered = await store.gather(layout, rows, [None] * len(rows))
        written = await store.scatter(gathered, state, [timesteps] * len(rows),
                                      np.zeros((len(rows), timesteps, 1), np.float32),
                                      [None] * len(rows), inputs=x if window else None)
        assert not any(written.errors)


async def memory_bytes(layout: StateLayout, sessions: int) -> int:
    store = MemoryStateStore(ttl_s=3600, max_sessions=sessions + 1)
    tracemalloc.start()
    await fill(store, layout, sessions, layout.rewarm_steps)
    used = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return used


async def redis_bytes(url: str, layout: StateLayout, sessions: int) -> int:
    from rnnserve.state.redis import RedisStateStore

    flush(url)
    before = used_memory(url)
    store = RedisStateStore(url, ttl_s=3600, max_sessions=sessions + 1, sweep_interval_s=3600)
    await store.start()
    try:
        await fill(store, layout, sessions, layout.rewarm_steps)
        return used_memory(url) - before
    finally:
        await store.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--features", type=int, default=10)
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--windows", type=int, nargs="+", default=[0, 24, 48, 96])
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="rnnserve-kept-inputs-"))
    proc, port = start_redis(work)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        base: dict[str, float] = {}
        for window in args.windows:
            layout = StateLayout("bench", 1, TENSORS, rewarm_steps=window,
                                 features=args.features)
            per = {"memory": asyncio.run(memory_bytes(layout, args.sessions)) / args.sessions,
                   "redis": asyncio.run(redis_bytes(url, layout, args.sessions))
                   / args.sessions}
            base = base or per
            print(json.dumps({
                "rewarm_steps": window, "features": args.features,
                "raw_bytes": 4 * window * args.features,
                **{f"{k}_extra_bytes_per_session": round(v - base[k]) for k, v in per.items()},
            }))
    finally:
        stop_all([proc], work)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
