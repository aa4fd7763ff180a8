"""The CUDA path, checked end to end on a machine with an NVIDIA GPU and onnxruntime-gpu.

    python bench/device_check.py --devices cpu,cuda [--out DIR]

Starts `rnnserve serve` once per device (loopback, free ports, gRPC off), checks that every
model of the cuda server reports CUDAExecutionProvider, sends both servers the same inputs and
compares the answers (max abs diff, must be <= --tol, 1e-4 by default):

- predict on each model, batch 1 x 256 steps and batch 64 x 256 steps;
- one session per model stepped --session-steps times, one timestep a step (and, on each
  device, the session's outputs against predict of the same sequence);

then measures each server's throughput: predicts/s and sequence-steps/s at batch 64 x 256 with
a few concurrent clients, and session steps/s with 64 concurrent sessions (one connection
each), --duration seconds each. Beside the servers it runs the models in ONNX Runtime directly
(CPU, CUDA as the server creates it, CUDA with use_tf32=0), which tells a numerical difference
of the server apart from one of the provider.

The CUDA libraries come from the nvidia-* pip packages when --cuda-lib-path is `auto` (their
lib folders go on LD_LIBRARY_PATH of the cuda server); the server itself does not look for
them. --devices cpu is a dry run for machines without a GPU.

Prints a table; writes device_check.json and the servers' logs to --out (default: $OUT when
set). Every loop is bounded by a deadline; traffic goes to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import importlib.util
import json
import multiprocessing
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"


# ---------------------------------------------------------------- the CUDA libraries

def nvidia_lib_dirs() -> list[str]:
    """The folders holding shared libraries of the installed nvidia-* pip packages."""
    try:
        spec = importlib.util.find_spec("nvidia")
    except (ImportError, ValueError):
        return []
    if spec is None or not spec.submodule_search_locations:
        return []
    dirs: set[str] = set()
    for base in spec.submodule_search_locations:
        for lib in glob.glob(os.path.join(base, "**", "lib*.so*"), recursive=True):
            dirs.add(os.path.dirname(lib))
    return sorted(dirs)


def device_env(device: str, lib_dirs: list[str]) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    if device == "cuda" and lib_dirs:
        old = env.get("LD_LIBRARY_PATH", "")
        env["LD_LIBRARY_PATH"] = os.pathsep.join(lib_dirs + ([old] if old else []))
    return env


# ---------------------------------------------------------------- servers

class Server:
    """`rnnserve serve` on a free loopback port; stop() always ends it."""

    def __init__(self, device: str, models: Path, env: dict[str, str], log_path: Path,
                 extra: list[str]) -> None:
        self.device = device
        self.log_path = log_path
        self.addr_file = Path(tempfile.mkdtemp(prefix="rnnserve-addr-")) / "address.json"
        argv = [sys.executable, "-m", "rnnserve", "serve", "--models", str(models),
                "--host", HOST, "--port", "0", "--grpc-port", "0", "--device", device,
                "--address-file", str(self.addr_file), *extra]
        self.log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, env=env,
                                     cwd=str(ROOT), start_new_session=True)
        self.url = ""

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.device} server exited {self.proc.returncode}: "
                                   f"{self.log_tail()}")
            if not self.url and self.addr_file.exists():
                try:
                    self.url = json.loads(self.addr_file.read_text())["http"]
                except (ValueError, KeyError):
                    pass
            if self.url:
                try:
                    with urllib.request.urlopen(self.url + "/v2/health/ready", timeout=2) as r:
                        if r.status == 200:
                            return
                except (OSError, urllib.error.URLError):
                    pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.device} server not ready in {timeout_s} s: {self.log_tail()}")

    def log_tail(self, n: int = 1500) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.log.close()
        shutil.rmtree(self.addr_file.parent, ignore_errors=True)
        return self.proc.returncode


def call(url: str, method: str = "GET", body: Any = None, timeout: float = 60) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        raw = r.read()
    return json.loads(raw) if raw else None


# ---------------------------------------------------------------- inputs

def readings(rng: Any, batch: int, steps: int) -> list[list[list[float]]]:
    """Plausible hourly readings in the committed models' features (the order and width of
    models/temperature-gru/model.json): temperature_f, hour_sin, hour_cos as below, every other
    feature at its training mean."""
    import numpy as np
    start = rng.integers(0, 24, size=(batch, 1))
    hours = (start + np.arange(steps)[None, :]) % 24
    walk = np.cumsum(rng.normal(0.0, 1.2, size=(batch, steps)), axis=1)
    temp = 55.0 + 8.0 * np.sin(2 * np.pi * (hours - 9) / 24) + walk + rng.normal(0, 3, (batch, 1))
    meta = json.loads((ROOT / "models" / "temperature-gru" / "model.json").read_text())
    known = {"temperature_f": temp, "hour_sin": np.sin(2 * np.pi * hours / 24),
             "hour_cos": np.cos(2 * np.pi * hours / 24)}
    x = np.stack([known.get(f["name"], np.full((batch, steps), mean)) for f, mean in
                  zip(meta["features"], meta["normalization"]["feature_mean"], strict=True)],
                 axis=-1)
    return [[[round(float(v), 4) for v in step] for step in seq] for seq in x.astype(np.float32)]


def max_abs_diff(a: Any, b: Any) -> float:
    import numpy as np
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"shapes differ: {x.shape} vs {y.shape}")
    return float(np.max(np.abs(x - y))) if x.size else 0.0


def answers(url: str, models: list[str], cases: dict[str, Any], session_seq: Any) -> dict:
    """Every comparison's outputs from one server."""
    out: dict[str, Any] = {}
    for m in models:
        got: dict[str, Any] = {}
        for case, inputs in cases.items():
            got[case] = call(f"{url}/v1/models/{m}/predict", "POST", {"inputs": inputs})["outputs"]
        sid = call(f"{url}/v1/models/{m}/sessions", "POST", {})["session_id"]
        steps = []
        for reading in session_seq:
            steps.append(call(f"{url}/v1/sessions/{sid}/step", "POST",
                              {"inputs": [reading]})["outputs"])
        call(f"{url}/v1/sessions/{sid}", "DELETE")
        got["session"] = steps
        got["session_as_predict"] = call(f"{url}/v1/models/{m}/predict", "POST",
                                         {"inputs": [session_seq]})["outputs"]
        out[m] = got
    return out


# ---------------------------------------------------------------- load (raw HTTP/1.1 keep-alive)

async def _request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes,
                   body: bytes) -> tuple[int, bytes]:
    writer.write(head + body)
    await writer.drain()
    raw = await reader.readuntil(b"\r\n\r\n")
    lines = raw.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    pairs = (x.partition(":") for x in lines[1:] if x)
    headers = {k.strip().lower(): v.strip() for k, _, v in pairs}
    if "content-length" in headers:
        return status, await reader.readexactly(int(headers["content-length"]))
    if headers.get("transfer-encoding", "").lower() == "chunked":
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            parts.append(await reader.readexactly(size + 2))
            if size == 0:
                return status, b"".join(parts)
    raise RuntimeError(f"no length in response: {lines[:5]}")


def _head(path: str, body: bytes) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()


async def _load(kind: str, port: int, model: str, body: bytes, conns: int,
                duration: float) -> dict[str, float]:
    counts = {"ok": 0, "errors": 0, "lat_sum": 0.0}
    start_at = asyncio.Event()
    deadline = [0.0]
    ready = [0]

    async def one() -> None:
        reader, writer = await asyncio.open_connection(HOST, port, limit=1 << 24)
        try:
            if kind == "session":
                status, raw = await _request(reader, writer, _head(
                    f"/v1/models/{model}/sessions", b"{}"), b"{}")
                if status not in (200, 201):
                    raise RuntimeError(f"session create: {status} {raw[:200]!r}")
                path = f"/v1/sessions/{json.loads(raw)['session_id']}/step"
            else:
                path = f"/v1/models/{model}/predict"
            head = _head(path, body)
            ready[0] += 1
            await start_at.wait()
            while time.monotonic() < deadline[0]:
                t0 = time.perf_counter()
                status, _ = await _request(reader, writer, head, body)
                counts["lat_sum"] += time.perf_counter() - t0
                counts["ok" if status == 200 else "errors"] += 1
        finally:
            writer.close()

    tasks = [asyncio.ensure_future(one()) for _ in range(conns)]
    wait_until = time.monotonic() + 20  # connections (and sessions) made before the clock
    while ready[0] + sum(t.done() for t in tasks) < conns and time.monotonic() < wait_until:
        await asyncio.sleep(0.02)
    t0 = time.monotonic()
    deadline[0] = t0 + duration
    start_at.set()
    done = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), duration + 60)
    elapsed = time.monotonic() - t0
    failures = [repr(d) for d in done if isinstance(d, BaseException)]
    return {"ok": counts["ok"], "errors": counts["errors"] + len(failures),
            "lat_sum": counts["lat_sum"], "elapsed": elapsed, "failures": failures[:3]}


def _load_proc(args: tuple[str, int, str, bytes, int, float]) -> dict[str, float]:
    return asyncio.run(_load(*args))


def measure(kind: str, url: str, model: str, body: bytes, conns: int, procs: int,
            duration: float) -> dict[str, Any]:
    port = int(url.rsplit(":", 1)[1])
    per = [conns // procs + (1 if i < conns % procs else 0) for i in range(procs)]
    jobs = [(kind, port, model, body, n, duration) for n in per if n]
    with multiprocessing.get_context("fork").Pool(len(jobs)) as pool:
        parts = pool.map(_load_proc, jobs)
    ok = sum(p["ok"] for p in parts)
    elapsed = max(p["elapsed"] for p in parts)
    return {"requests": ok, "errors": sum(p["errors"] for p in parts),
            "failures": [f for p in parts for f in p["failures"]][:3],
            "elapsed_s": round(elapsed, 3), "per_s": ok / elapsed if elapsed else 0.0,
            "mean_latency_ms": 1000 * sum(p["lat_sum"] for p in parts) / ok if ok else None}


# ---------------------------------------------------------------- ONNX Runtime directly

def ort_direct(models_dir: Path, model_names: list[str], devices: list[str], batch: int,
               steps: int, repeats: int) -> dict[str, Any]:
    """Each model in onnxruntime directly: CPU, CUDA (default options, as the server makes it)
    and CUDA with use_tf32=0; outputs against CPU and time per run."""
    import numpy as np
    import onnxruntime as ort
    rng = np.random.default_rng(1)
    x = np.asarray(readings(rng, batch, steps), dtype=np.float32)
    variants: list[tuple[str, list[Any]]] = [("cpu", ["CPUExecutionProvider"])]
    if "cuda" in devices:
        variants += [("cuda", ["CUDAExecutionProvider", "CPUExecutionProvider"]),
                     ("cuda_tf32_off", [("CUDAExecutionProvider", {"use_tf32": "0"}),
                                        "CPUExecutionProvider"])]
    result: dict[str, Any] = {"onnxruntime": ort.__version__, "file": ort.__file__,
                              "available": ort.get_available_providers(), "models": {}}
    for m in model_names:
        meta = json.loads((models_dir / m / "model.json").read_text())
        per: dict[str, Any] = {}
        ref = None
        for name, providers in variants:
            try:
                so = ort.SessionOptions()
                so.log_severity_level = 3
                sess = ort.InferenceSession(str(models_dir / m / "model.onnx"), so,
                                            providers=providers)
                feeds = {}
                for i in sess.get_inputs():
                    if i.name == meta["sequence_input"]:
                        feeds[i.name] = x
                    else:
                        shape = [d if isinstance(d, int) and d > 0 else batch for d in i.shape]
                        feeds[i.name] = np.zeros(shape, np.float32)
                y = sess.run([meta["sequence_output"]], feeds)[0]
                t0 = time.perf_counter()
                for _ in range(repeats):
                    sess.run([meta["sequence_output"]], feeds)
                ms = 1000 * (time.perf_counter() - t0) / repeats
                entry: dict[str, Any] = {"providers": sess.get_providers(),
                                         "ms_per_run": round(ms, 3)}
                opts = sess.get_provider_options().get("CUDAExecutionProvider")
                if opts:
                    entry["use_tf32"] = opts.get("use_tf32")
                if ref is None:
                    ref = y
                else:
                    entry["max_abs_diff_vs_cpu"] = max_abs_diff(y, ref)
                per[name] = entry
            except Exception as exc:  # report and go on: this is a probe
                per[name] = {"error": f"{type(exc).__name__}: {str(exc)[:400]}"}
        result["models"][m] = per
    return result


def ort_direct_child(args: argparse.Namespace, env: dict[str, str]) -> dict[str, Any]:
    """ort_direct in a child process, where LD_LIBRARY_PATH takes effect."""
    argv = [sys.executable, __file__, "--ort-direct-child", "--models", str(args.models),
            "--devices", ",".join(args.devices), "--batch", str(args.batch),
            "--steps", str(args.steps)]
    try:
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=240)
    except subprocess.TimeoutExpired:
        return {"error": "timed out after 240 s"}
    if done.returncode != 0:
        return {"error": f"exit {done.returncode}: {done.stderr[-1500:]}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- main

def gpu_name() -> str | None:
    if not shutil.which("nvidia-smi"):
        return None
    done = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                           "--format=csv,noheader"], capture_output=True, text=True, timeout=30)
    return done.stdout.strip() or done.stderr.strip()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--devices", default="cpu,cuda", type=lambda s: s.split(","))
    p.add_argument("--models", default=str(ROOT / "models"), type=Path)
    p.add_argument("--out", default=os.environ.get("OUT"), help="folder for JSON and logs")
    p.add_argument("--tol", type=float, default=1e-4)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=256)
    p.add_argument("--session-steps", type=int, default=50)
    p.add_argument("--duration", type=float, default=5.0, help="seconds per throughput point")
    p.add_argument("--predict-clients", type=int, default=4)
    p.add_argument("--sessions", type=int, default=64)
    p.add_argument("--load-procs", type=int, default=4, help="client processes per point")
    p.add_argument("--throughput-models", default="all",
                   help="comma-separated models for throughput, or all, or none")
    p.add_argument("--cuda-lib-path", default="auto", choices=["auto", "none"])
    p.add_argument("--probe-no-lib-path", action=argparse.BooleanOptionalAction, default=True,
                   help="also start the cuda server without the nvidia lib folders")
    p.add_argument("--server-arg", action="append", default=[],
                   help="extra argument for both servers (repeatable)")
    p.add_argument("--ort-direct-child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    models = sorted(d.name for d in args.models.iterdir() if (d / "model.json").exists())

    if args.ort_direct_child:
        print(json.dumps(ort_direct(args.models, models, args.devices, args.batch, args.steps,
                                    repeats=20)))
        return 0

    out = Path(args.out) if args.out else None
    if out:
        out.mkdir(parents=True, exist_ok=True)
    logdir = out or Path(tempfile.mkdtemp(prefix="device-check-"))
    lib_dirs = nvidia_lib_dirs() if args.cuda_lib_path == "auto" else []
    report: dict[str, Any] = {
        "python": sys.version.split()[0], "platform": platform.platform(), "gpu": gpu_name(),
        "models": models, "tol": args.tol, "batch": args.batch, "steps": args.steps,
        "server_args": args.server_arg, "nvidia_lib_dirs": lib_dirs, "devices": {},
    }
    try:
        import onnxruntime as ort
        report["onnxruntime"] = {"version": ort.__version__, "file": ort.__file__,
                                 "available": ort.get_available_providers()}
    except ImportError as exc:
        report["onnxruntime"] = {"error": str(exc)}
    print(json.dumps({k: report[k] for k in ("python", "gpu", "onnxruntime")}), flush=True)

    if "cuda" in args.devices and args.probe_no_lib_path:
        env = device_env("cpu", [])  # no nvidia folders added
        probe = Server("cuda", args.models, env, logdir / "cuda-no-lib-path.log", args.server_arg)
        try:
            probe.wait_ready(90)
            report["cuda_without_lib_path"] = {"started": True}
        except RuntimeError as exc:
            report["cuda_without_lib_path"] = {"started": False, "why": str(exc)[-600:]}
        finally:
            probe.stop()
        print("cuda without lib path:", report["cuda_without_lib_path"], flush=True)

    report["ort_direct"] = ort_direct_child(args, device_env("cuda", lib_dirs))
    print("ort direct:", json.dumps(report["ort_direct"]), flush=True)

    import numpy as np
    rng = np.random.default_rng(0)
    cases = {"batch1": readings(rng, 1, args.steps),
             f"batch{args.batch}": readings(rng, args.batch, args.steps)}
    session_seq = readings(rng, 1, args.session_steps)[0]
    tp_models = (models if args.throughput_models == "all" else []
                 if args.throughput_models == "none" else args.throughput_models.split(","))
    predict_body = json.dumps({"inputs": cases[f"batch{args.batch}"]}).encode()
    step_body = json.dumps({"inputs": [session_seq[0]]}).encode()

    got: dict[str, Any] = {}
    failed: list[str] = []
    for device in args.devices:
        entry: dict[str, Any] = {}
        report["devices"][device] = entry
        server = Server(device, args.models, device_env(device, lib_dirs),
                        logdir / f"server-{device}.log", args.server_arg)
        try:
            t0 = time.monotonic()
            server.wait_ready(180)
            entry["ready_s"] = round(time.monotonic() - t0, 2)
            listed = call(server.url + "/v1/models")
            entry["providers"] = {m["name"]: m.get("provider") for m in listed["models"]}
            entry["unavailable"] = listed.get("unavailable")
            entry["load_log"] = [line for line in server.log_tail(20000).splitlines()
                                 if "provider=" in line]
            want = "CUDAExecutionProvider" if device == "cuda" else "CPUExecutionProvider"
            if any(v != want for v in entry["providers"].values()) or len(
                    entry["providers"]) != len(models):
                failed.append(f"{device}: providers {entry['providers']}")
            t0 = time.monotonic()
            got[device] = answers(server.url, models, cases, session_seq)
            entry["answers_s"] = round(time.monotonic() - t0, 2)
            entry["session_vs_predict"] = {
                m: max_abs_diff(np.asarray(got[device][m]["session"]).reshape(-1),
                                np.asarray(got[device][m]["session_as_predict"]).reshape(-1))
                for m in models}
            entry["throughput"] = {}
            for m in tp_models:
                pr = measure("predict", server.url, m, predict_body, args.predict_clients,
                             min(args.load_procs, args.predict_clients), args.duration)
                pr["sequence_steps_per_s"] = pr["per_s"] * args.batch * args.steps
                ss = measure("session", server.url, m, step_body, args.sessions,
                             args.load_procs, args.duration)
                entry["throughput"][m] = {"predict": pr, "session_steps": ss}
                print(f"{device} {m}: {pr['per_s']:.1f} predicts/s "
                      f"({pr['sequence_steps_per_s']:.0f} seq-steps/s, {pr['errors']} err), "
                      f"{ss['per_s']:.0f} session steps/s ({ss['errors']} err)", flush=True)
                if pr["errors"] or ss["errors"]:
                    failed.append(f"{device} {m}: load errors {pr['failures']} "
                                  f"{ss['failures']}")
        except Exception as exc:
            entry["error"] = f"{type(exc).__name__}: {exc}"
            failed.append(f"{device}: {entry['error'][:600]}")
        finally:
            entry["exit_code"] = server.stop()

    if "cpu" in got:
        for device in [d for d in got if d != "cpu"]:
            diffs = {m: {case: max_abs_diff(got[device][m][case], got["cpu"][m][case])
                         for case in got["cpu"][m]} for m in models}
            report["devices"][device]["max_abs_diff_vs_cpu"] = diffs
            for m, per in diffs.items():
                for case, d in per.items():
                    if d > args.tol:
                        failed.append(f"{device} {m} {case}: max abs diff {d:.3g} > {args.tol}")
    report["failed"] = failed
    report["ok"] = not failed and all(d in got for d in args.devices)

    print()
    print(f"{'model':18} {'device':6} {'predict/s':>10} {'seq-steps/s':>12} "
          f"{'sess steps/s':>12}  max|diff| vs cpu (b1, b{args.batch}, session)")
    for m in models:
        for device in args.devices:
            e = report["devices"].get(device, {})
            t = e.get("throughput", {}).get(m)
            diffs = e.get("max_abs_diff_vs_cpu", {}).get(m)
            dtxt = ", ".join(f"{diffs[c]:.2e}" for c in ("batch1", f"batch{args.batch}",
                                                        "session")) if diffs else "-"
            if t:
                print(f"{m:18} {device:6} {t['predict']['per_s']:10.1f} "
                      f"{t['predict']['sequence_steps_per_s']:12.0f} "
                      f"{t['session_steps']['per_s']:12.0f}  {dtxt}")
            else:
                print(f"{m:18} {device:6} {'-':>10} {'-':>12} {'-':>12}  {dtxt}")
    print("OK" if report["ok"] else f"FAILED: {failed}")
    if out:
        (out / "device_check.json").write_text(json.dumps(report, indent=1))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
