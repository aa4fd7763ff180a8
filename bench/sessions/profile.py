"""Where rnnserve's CPU goes under load: py-spy on the server process while the WS, REST or
gateway load runs, summarised by function and by library."""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.loadgen import Request, run_load
from bench.medium_model import MODEL_NAME
from bench.procs import ServerProcess, base_url, cpu_seconds
from bench.sessions.servers import ws_url
from bench.stats import LoadResult
from bench.wsload import create_sessions, delete_sessions, run_ws_point


def profile_server(
    server: ServerProcess,
    run: Callable[[dict[str, Any]], LoadResult],
    seconds: float,
    workdir: Path,
    tag: str,
) -> dict[str, Any]:
    """py-spy record (non-idle threads, 100 Hz, --nonblocking) on `server` while `run(probes)`
    loads it (collapsed stacks kept in `workdir`, for a flame graph); the recorder starts at
    the measured window's first edge (when the probes are first read). Returns the top
    functions by own and by inclusive samples."""
    raw = workdir / f"pyspy-{tag}-{time.strftime('%Y%m%d-%H%M%S')}.txt"
    raw.parent.mkdir(parents=True, exist_ok=True)
    pyspy = Path(sys.executable).with_name("py-spy")
    if not pyspy.exists():
        return {"error": "py-spy not installed (pip install py-spy into the venv)"}
    recorders: list[subprocess.Popen[bytes]] = []

    def probe() -> float:
        if not recorders:
            recorders.append(
                subprocess.Popen(
                    [
                        str(pyspy),
                        "record",
                        "--pid",
                        str(server.pid),
                        "--duration",
                        str(int(seconds)),
                        "--rate",
                        "100",
                        "--format",
                        "raw",
                        "--output",
                        str(raw),
                        "--nonblocking",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                )
            )
        return cpu_seconds(server.pid)

    result = run({"server": probe})
    if not recorders:
        return {"error": "the load never reached its window"}
    _, err = recorders[0].communicate(timeout=60)
    if not raw.exists():
        return {"error": f"py-spy failed: {err.decode(errors='replace')[-500:]}"}
    summary = summarise_collapsed(raw.read_text())
    summary["what"] = tag
    summary["collapsed_stacks"] = str(raw)
    summary["load"] = result.summary()
    summary["load"].pop("error_samples", None)
    return summary


def profiles(
    kinds: list[str],
    server: ServerProcess,
    messages: list[str],
    conc: int,
    seconds: float,
    workdir: Path,
    gateway_body: bytes | None,
) -> dict[str, Any]:
    """Profiles of rnnserve under the WS load, the REST load (`conc` clients) and the gateway
    load (one client of 1024-session requests)."""
    out: dict[str, Any] = {}
    window: dict[str, Any] = {"duration_s": seconds + 1.0, "warmup_s": 1.0, "max_requests": 10**7}
    headers = {"content-type": "application/json"}

    def run_ws(probes: dict[str, Any]) -> LoadResult:
        result, sids, _ = run_ws_point(
            ws_url(server), messages, concurrency=conc, cpu_probes=probes, **window
        )
        delete_sessions(base_url(server), sids)
        return result

    def run_rest(probes: dict[str, Any]) -> LoadResult:
        sids = create_sessions(base_url(server), MODEL_NAME, conc)
        requests = [
            Request("POST", f"/v1/sessions/{sid}/step", messages[0].encode(), headers)
            for sid in sids
        ]
        result = run_load(
            base_url(server),
            lambda c, n: requests[c],
            concurrency=conc,
            cpu_probes=probes,
            **window,
        )
        delete_sessions(base_url(server), sids)
        return result

    def run_gateway(probes: dict[str, Any]) -> LoadResult:
        assert gateway_body is not None
        request = Request("POST", f"/v1/models/{MODEL_NAME}/steps", gateway_body, headers)
        return run_load(
            base_url(server), lambda c, n: request, concurrency=1, cpu_probes=probes, **window
        )

    runs: dict[str, tuple[str, Callable[[dict[str, Any]], LoadResult]]] = {
        "ws": (f"ws-{conc}", run_ws),
        "rest": (f"rest-{conc}", run_rest),
        "gateway": ("gateway-1x1024", run_gateway),
    }
    for kind in kinds:
        if kind == "gateway" and gateway_body is None:
            continue
        print(f"  profiling rnnserve under {kind} ({seconds:.0f} s)...", flush=True)
        tag, run = runs[kind]
        out[tag] = profile_server(server, run, seconds, workdir, tag)
    return out


def _frame_name(frame: str) -> str:
    """`func (path/to/file.py:123)` -> `func (file.py)`, shortened to a readable module path."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "/work/main/", "lib/python3.11/"):
        if marker in where:
            where = where.split(marker, 1)[1]
    return f"{name} ({where})" if where else name


PROFILE_AREAS = (  # (label, substring of a frame's file): the first match of the leaf frame
    ("ONNX Runtime run", "onnxruntime/"),
    ("rnnserve engine (service/rnnserve/engine)", "service/rnnserve/engine/"),
    ("rnnserve HTTP/WS layer + metrics (service/rnnserve/)", "service/rnnserve/"),
    ("prometheus_client", "prometheus_client/"),
    ("numpy", "numpy/"),
    ("uvicorn + websockets/httptools protocol", "uvicorn/"),
    ("uvicorn + websockets/httptools protocol", "websockets/"),
    ("starlette + fastapi routing", "starlette/"),
    ("starlette + fastapi routing", "fastapi/"),
    ("orjson/json", "json"),
    ("thread pool hand-off (concurrent.futures, threading)", "concurrent/"),
    ("thread pool hand-off (concurrent.futures, threading)", "threading"),
    ("asyncio event loop + sockets (selectors)", "asyncio/"),
    ("asyncio event loop + sockets (selectors)", "selectors"),
)


def summarise_collapsed(text: str, top: int = 20) -> dict[str, Any]:
    """Own (leaf) samples per function, inclusive samples per rnnserve function (service/),
    and own samples per area (which library the leaf frame is in)."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    areas: Counter[str] = Counter()
    total = 0
    for line in text.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        raw_frames = [f for f in stack.split(";") if f]
        if not raw_frames:
            continue
        frames = [_frame_name(f) for f in raw_frames]
        own[frames[-1]] += count
        leaf_file = raw_frames[-1].partition(" (")[2]
        area = next((label for label, key in PROFILE_AREAS if key in leaf_file), "other")
        areas[area] += count
        for name in {
            f
            for f in frames
            if "(service/" in f
            and "__main__" not in f
            and "cli.py" not in f
            and "serve.py" not in f
        }:
            inclusive[name] += count

    def share(c: int) -> float:
        return round(100.0 * c / total, 1) if total else 0.0

    return {
        "samples": total,
        "areas": [(name, share(c)) for name, c in areas.most_common()],
        "top_own": [(name, share(c)) for name, c in own.most_common(top)],
        "top_inclusive": [(name, share(c)) for name, c in inclusive.most_common(top)],
    }


def format_profile(profile: dict[str, Any]) -> str:
    if "error" in profile:
        return f"profile: {profile['error']}"
    lines = [
        f"py-spy on rnnserve under {profile['what']}: {profile['samples']} samples of "
        f"non-idle threads (load: {profile['load']['requests_per_s']:.0f} requests/s, "
        f"server CPU {profile['load']['cpu_ms_per_request'].get('server')} ms/request)",
        "  % own  area (the library the sample's innermost frame is in)",
    ]
    lines += [f"  {pct:5.1f}  {name}" for name, pct in profile.get("areas", [])]
    lines += ["  % own  function (own = the sample's innermost frame)"]
    lines += [f"  {pct:5.1f}  {name}" for name, pct in profile["top_own"]]
    lines += ["  % incl rnnserve function (inclusive: anywhere on the stack)"]
    lines += [f"  {pct:5.1f}  {name}" for name, pct in profile["top_inclusive"]]
    return "\n".join(lines)
