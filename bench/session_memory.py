"""Memory per idle session: create N sessions of the medium LSTM (2 layers × 128 hidden, h and
c: 2,048 raw state bytes each) and report RSS growth ÷ N against the raw state size, for
rnnserve's memory store and, as a baseline, the obvious design (a dict of session objects
holding numpy arrays). Each store is measured in a fresh subprocess, so one's garbage never
counts against the other.

    python -m bench.session_memory [--sessions 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

# imported before any measurement: importing (onnxruntime comes with the engine) is not a cost
# of sessions
from rnnserve.engine import new_session_id
from rnnserve.state import SessionRecord, StateLayout
from rnnserve.state.memory import MemoryStateStore

LAYERS, HIDDEN = 2, 128
RAW_BYTES = 2 * LAYERS * HIDDEN * 4  # h and c, float32


def rss_bytes() -> int:
    """Resident set size from /proc (Linux): what the OS really holds for the process."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


async def fill_rnnserve(n: int) -> object:
    layout = StateLayout("medium-lstm", 1, (("h0", LAYERS, HIDDEN), ("c0", LAYERS, HIDDEN)))
    store = MemoryStateStore(ttl_s=3600, max_sessions=n + 1)
    rng = np.random.default_rng(0)
    state = {"h0": rng.normal(size=(LAYERS, 1, HIDDEN)).astype(np.float32),
             "c0": rng.normal(size=(LAYERS, 1, HIDDEN)).astype(np.float32)}
    now = time.time()
    for _ in range(n):  # every row written: a live session's state is resident memory
        record = SessionRecord(new_session_id(), "medium-lstm", 1, now, now, 3600)
        await store.create(layout, record, state)
    return store


def fill_dict(n: int) -> object:
    """The afternoon design: {session_id: {"h": array, "c": array, "steps": int, ...}}."""
    rng = np.random.default_rng(0)
    h = rng.normal(size=(LAYERS, HIDDEN)).astype(np.float32)
    sessions = {}
    now = time.time()
    for _ in range(n):
        sessions[new_session_id()] = {"h": h.copy(), "c": h.copy(), "steps": 0,
                                      "created": now, "last_used": now}
    return sessions


def measure(kind: str, n: int) -> dict[str, float]:
    """Run in a child process: RSS before, fill, collect garbage, RSS after."""
    gc.collect()
    before = rss_bytes()
    started = time.perf_counter()
    holder = asyncio.run(fill_rnnserve(n)) if kind == "rnnserve" else fill_dict(n)
    seconds = time.perf_counter() - started
    gc.collect()
    growth = rss_bytes() - before
    assert holder is not None
    return {"sessions": n, "rss_growth_bytes": growth, "bytes_per_session": growth / n,
            "ratio_to_raw_state": growth / n / RAW_BYTES, "fill_seconds": seconds}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=100_000)
    parser.add_argument("--child", choices=["rnnserve", "dict"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure(args.child, args.sessions)))
        return 0
    rows = {}
    for kind in ("rnnserve", "dict"):
        out = subprocess.run([sys.executable, "-m", "bench.session_memory", "--child", kind,
                              "--sessions", str(args.sessions)], capture_output=True, text=True,
                             check=True)
        rows[kind] = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"memory per idle session, medium LSTM ({RAW_BYTES} raw state bytes), "
          f"{args.sessions:,} sessions")
    print(f"{'store':<22}{'bytes/session':>15}{'× raw state':>13}{'fill s':>9}")
    labels = {"rnnserve": "rnnserve memory store", "dict": "dict of numpy arrays"}
    for kind, row in rows.items():
        print(f"{labels[kind]:<22}{row['bytes_per_session']:>15,.0f}"
              f"{row['ratio_to_raw_state']:>13.3f}{row['fill_seconds']:>9.1f}")
    ratio = rows["dict"]["bytes_per_session"] / rows["rnnserve"]["bytes_per_session"]
    print(f"rnnserve uses {1 / ratio:.2f}× the memory of the dict design (target: ≤ 1.3× raw)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
