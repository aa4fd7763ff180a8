"""The run: servers up, correctness, streaming points, gateway, profiles, memory per idle
session, then the tables, the plot and the JSON."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.medium_model import (
    MediumConfig,
    load_state,
    reference_outputs,
    sample_sequences,
    write_model_files,
)
from bench.procs import REPO_ROOT
from bench.report import Results, environment, figures
from bench.sessions.checks import check_all
from bench.sessions.gateway import gateway_measure
from bench.sessions.plan import GATEWAY_SESSIONS, RESULTS_DIR, parse_plan, raise_fd_limit
from bench.sessions.points import make_points, measure_stream, step_messages
from bench.sessions.profile import format_profile, profiles
from bench.sessions.servers import start_servers
from bench.sessions.tables import gateway_table, plot, stream_table
from bench.sessions.targets import targets, targets_table


def main(argv: list[str] | None = None) -> int:
    plan, args = parse_plan(argv)
    config = MediumConfig()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    report: dict[str, Any] = {
        "benchmark": "sessions",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "plan": asdict(plan),
        "model": asdict(config),
        "environment_before": environment(),
        "fd_limit": raise_fd_limit(2 * max(plan.concurrencies) + 256),
        "correctness": {},
        "unavailable": {},
    }
    env = report["environment_before"]
    dirty = " + uncommitted changes in service/" if env["service_uncommitted_changes"] else ""
    print(
        f"code: commit {env['git_commit']}{dirty}; load average {env['load_average']}; "
        f"open files limit {report['fd_limit']}"
    )
    print(f"rnnserve flags: {' '.join(plan.rnnserve_flags)}", flush=True)
    gateway: dict[str, Any] | None = None
    profile: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="rnnserve-bench-") as tmp, ExitStack() as stack:
        workdir = Path(tmp)
        files = write_model_files(workdir, config)
        messages = step_messages(config)
        sequence = sample_sequences(1, config)[0][:6]
        expected = reference_outputs(load_state(files.state), sequence[None])[0]
        if args.profile is not None and not args.profile:
            args.profile = ["ws", "rest", "gateway"]
        need_rnnserve = ("gateway" not in args.skip) or bool(args.profile)
        servers = start_servers(plan, files, workdir, stack, need_rnnserve, report["unavailable"])
        report["correctness"] = check_all(servers, plan, sequence, expected)
        points = make_points(servers, plan, config, messages)
        results: Results = {}
        gateway_body: bytes | None = None
        if "stream" not in args.skip and points:
            print("\nstreaming (closed loop, one timestep per message):", flush=True)
            results = measure_stream(points, plan, report.setdefault("failed_points", {}))
        if "gateway" not in args.skip and "rnnserve" in servers:
            print(
                f"\ngateway ({GATEWAY_SESSIONS} sessions per request) vs in-process ceiling:",
                flush=True,
            )
            gateway = gateway_measure(servers["rnnserve"], files, config, plan)
            gateway_body = gateway.pop("sample_body")
        if args.profile and "rnnserve" in servers:
            print(f"\nprofiles (N={args.profile_n} clients for ws and rest):", flush=True)
            profile = profiles(
                args.profile,
                servers["rnnserve"],
                messages,
                args.profile_n,
                args.profile_seconds,
                RESULTS_DIR,
                gateway_body,
            )
        for name, server in servers.items():
            report.setdefault("server_logs_tail", {})[name] = server.log_tail(1500)
    memory = None if "memory" in args.skip else session_memory(plan.memory_sessions)

    report["environment_after"] = environment()
    chosen = figures(results)
    report["rounds"] = {s: {str(c): r for c, r in pts.items()} for s, pts in results.items()}
    report["gateway"] = gateway and {
        "request_bytes": gateway["request_bytes"],
        "rounds": {s: {str(c): r for c, r in pts.items()} for s, pts in gateway["rounds"].items()},
    }
    report["targets"] = targets(results, gateway)
    report["profile"] = profile
    report["memory"] = memory
    if chosen:
        print("\n" + stream_table(chosen))
        for system, reason in report.get("failed_points", {}).items():
            print(f"{system}: no figures from {reason}")
    if gateway:
        print("\n" + gateway_table(gateway))
    print("\n" + targets_table(report["targets"]))
    for one in profile.values():
        print("\n" + format_profile(one))
    if memory:
        print("\n" + memory["output"])
    print(
        f"\nload average before {env['load_average']}, after "
        f"{report['environment_after']['load_average']}"
    )
    if chosen:
        png = args.plot or RESULTS_DIR / f"sessions-{stamp}.png"
        plot(
            chosen,
            png,
            f"medium LSTM sessions, 1 step/message, closed loop; commit "
            f"{env['git_commit']}, 2 shared cores",
        )
        report["plot"] = str(png)
        print(f"plot: {png}")
    out = args.out or RESULTS_DIR / f"sessions-{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"results: {out}")
    return 0


def markdown(path: Path) -> str:
    """The tables of a saved run as Markdown: `python -m bench.sessions --markdown FILE`."""
    report = json.loads(path.read_text())
    results: Results = {
        s: {int(c): r for c, r in pts.items()} for s, pts in report["rounds"].items()
    }
    parts = [stream_table(figures(results), markdown=True)]
    gw = None
    if report.get("gateway"):
        gw = {
            "rounds": {
                s: {int(c): r for c, r in pts.items()}
                for s, pts in report["gateway"]["rounds"].items()
            }
        }
        parts.append(gateway_table(gw, markdown=True))
    parts.append(targets_table(targets(results, gw), markdown=True))
    for one in (report.get("profile") or {}).values():
        parts.append("```\n" + format_profile(one) + "\n```")
    if report.get("memory"):
        parts.append("```\n" + report["memory"]["output"] + "\n```")
    return "\n\n".join(parts)


def session_memory(sessions: int) -> dict[str, Any]:
    """`python -m bench.session_memory` in a process of its own: it reads RSS growth, which this
    process's load generators and buffers would blur."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.session_memory", "--sessions", str(sessions)],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
    )
    return {
        "sessions": sessions,
        "returncode": done.returncode,
        "output": done.stdout.strip() or done.stderr.strip()[-2000:],
    }
