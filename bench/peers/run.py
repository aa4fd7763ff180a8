"""The run: servers up (Triton set up on the way), correctness, then rounds in which every
row's systems take turns with short phases, then one table of every target with its ratio and
verdict, and the JSON."""

from __future__ import annotations

import json
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
from bench.peers.checks import check_peers
from bench.peers.plan import Plan, parse_plan
from bench.peers.rows import (
    BULK_BINARY,
    Rounds,
    System,
    median_round,
    systems_of,
    targets_of,
)
from bench.peers.servers import start_grpc_echo, start_named, start_rnnserve_and_echo
from bench.peers.systems import bulk_binary_supported
from bench.peers.triton import start_triton
from bench.procs import ServerProcess
from bench.report import environment
from bench.sessions.plan import raise_fd_limit
from bench.sessions.tables import text_table

PEER_UNAVAILABLE = "peer unavailable"


def main(argv: list[str] | None = None) -> int:
    plan = parse_plan(argv)
    report: dict[str, Any] = {
        "benchmark": "peers",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "plan": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(plan).items()},
        "environment_before": environment(),
        "fd_limit": raise_fd_limit(4 * plan.sessions + 512),
        "unavailable": {},
        "peer_crashes": [],
    }
    env = report["environment_before"]
    print(
        f"code: commit {env['git_commit']}; load average {env['load_average']}; "
        f"{plan.sessions} sessions, {plan.rounds} round(s) of {plan.duration_s:g} s phases",
        flush=True,
    )
    rounds: Rounds = {}
    layout: dict[str, list[System]] = {}
    with tempfile.TemporaryDirectory(prefix="rnnserve-peers-") as tmp, ExitStack() as stack:
        workdir = Path(tmp)
        config = MediumConfig()
        files = write_model_files(workdir, config)
        unavailable: dict[str, str] = report["unavailable"]
        servers = start_rnnserve_and_echo(files.repository, workdir, stack, unavailable)
        if plan.peer:
            start_named(
                "triton",
                lambda: start_triton(files.onnx, workdir, plan.triton_venv),
                stack,
                servers,
                unavailable,
            )
        else:
            unavailable["triton"] = "left out (--no-peer)"
        sequences = sample_sequences(3, config)[:, :12]
        expected = reference_outputs(load_state(files.state), sequences)
        report["correctness"], sample = check_peers(servers, sequences, expected)
        if "grpc" in plan.rows:
            start_named(
                "grpc-echo", lambda: start_grpc_echo(workdir, sample), stack, servers, unavailable
            )
        drop_bulk_binary(plan, servers, unavailable)
        layout = {
            row: systems for row, systems in systems_of(plan, files).items() if row in plan.rows
        }
        rounds = measure(plan, layout, servers, unavailable, report["peer_crashes"])
        report["server_logs_tail"] = {n: p.log_tail(1500) for n, p in servers.items()}
    report["environment_after"] = environment()
    report["rounds"] = rounds
    report["targets"] = verdicts(plan, rounds, report["unavailable"])
    report["layout"] = [
        {"row": row, "key": x.key, "label": x.label, "server": x.server}
        for row, systems in layout.items()
        for x in systems
    ]
    print("\n" + figures_table(report["layout"], rounds, report["unavailable"]))
    print("\n" + targets_table(report["targets"]))
    for crash in report["peer_crashes"]:
        print(f"\n{crash['server']} crashed (exit code {crash['exit_code']}) and was started "
              f"again; its log ended: {crash['log_tail'][-300:]}")
    print(
        f"\nload average before {env['load_average']}, after "
        f"{report['environment_after']['load_average']}"
    )
    if plan.plot:
        plot(
            report["targets"],
            plan.plot,
            f"rnnserve beside its peers, {plan.sessions} sessions; "
            f"commit {env['git_commit']}, 2 shared cores",
        )
        print(f"plot: {plan.plot}")
    if plan.json_out:
        plan.json_out.parent.mkdir(parents=True, exist_ok=True)
        plan.json_out.write_text(json.dumps(report, indent=2, default=str) + "\n")
        print(f"results: {plan.json_out}")
    return 0


def drop_bulk_binary(
    plan: Plan, servers: dict[str, ServerProcess], unavailable: dict[str, str]
) -> None:
    """Leave the binary bulk system out where the server takes no binary bulk body (or
    --bulk-binary no); --bulk-binary yes measures it regardless."""
    if "bulk" not in plan.rows or plan.bulk_binary == "yes" or "rnnserve" not in servers:
        return
    if plan.bulk_binary == "no":
        unavailable[BULK_BINARY] = "left out (--bulk-binary no)"
    elif not bulk_binary_supported(servers["rnnserve"]):
        unavailable[BULK_BINARY] = "not on this server (no binary bulk body)"
    if BULK_BINARY in unavailable:
        print(f"{BULK_BINARY}: {unavailable[BULK_BINARY]}", flush=True)


PEER_RESTARTS = 3
"""How often a run starts the peer again after it crashed (Triton 2.51's server has exited
with SIGSEGV or SIGABRT under the gRPC stream load here, about once in two full runs)."""


def measure(
    plan: Plan,
    layout: dict[str, list[System]],
    servers: dict[str, ServerProcess],
    unavailable: dict[str, str],
    crashes: list[dict[str, Any]] | None = None,
) -> Rounds:
    """Round after round, row after row, each system one phase; a phase that fails is printed
    and that system sits out the later rounds (the others go on). The peer is the exception:
    when it has crashed, it is started again (up to PEER_RESTARTS times, each crash with its
    log's tail kept in `crashes` and printed), the phase it crashed in counts for nothing
    (whether it raised or returned the figures of its failed requests), and its systems go
    on. A phase that answered no request at all counts for nothing either."""
    crashes = [] if crashes is None else crashes
    phases = {}
    server_of: dict[str, ServerProcess] = {}
    turns: list[list[str]] = []  # each row's systems, in their order
    for systems in layout.values():
        turns.append([])
        for system in systems:
            server = servers.get(system.server)
            if server is not None and system.key not in unavailable:
                phases[system.key] = system.make(server)
                server_of[system.key] = server
                turns[-1].append(system.key)
    rounds: Rounds = {}
    failed: dict[str, str] = {}
    for number in range(1, plan.rounds + 1):
        print(f"\nround {number} of {plan.rounds}:", flush=True)
        for key in turn_order(turns, number):
            phase = phases[key]
            if key in failed:
                continue
            server = server_of[key]
            if server.exit_code() is not None and server.name == "triton":
                restarted(server, crashes)
            code = server.exit_code()
            if code is not None:  # e.g. crashed in an earlier phase: no 60 s waits
                failed[key] = f"{server.name} exited with code {code}"
                unavailable[key] = f"{failed[key]}; its log ends: {server.log_tail(300)}"
                print(f"  {key:<24} SKIPPED: {server.name} exited, code {code}", flush=True)
                continue
            try:
                summary = phase()
            except Exception as exc:  # reported; the other systems go on
                if server.exit_code() is not None and server.name == "triton":
                    print(f"  {key:<24} peer crashed in this phase: measured again later",
                          flush=True)
                    continue
                failed[key] = f"{type(exc).__name__}: {str(exc)[:400]}"
                unavailable[key] = failed[key]
                print(f"  {key:<24} FAILED {failed[key]}", flush=True)
                continue
            if server.exit_code() is not None:  # it died during the phase: what the phase
                # measured is a crash, not a speed (a peer is started again for the next one)
                print(f"  {key:<24} {server.name} exited during this phase (code "
                      f"{server.exit_code()}): not counted", flush=True)
                if server.name != "triton":
                    failed[key] = f"{server.name} exited with code {server.exit_code()}"
                    unavailable[key] = f"{failed[key]}; its log ends: {server.log_tail(300)}"
                continue
            if not summary["requests"]:
                print(f"  {key:<24} no request answered in round {number}: not counted",
                      flush=True)
                continue
            summary["round"] = number
            rounds.setdefault(key, []).append(summary)
            cpu = summary["cpu_ms_per_request"]
            print(
                f"  {key:<24} {summary['sequences_per_s']:>9.0f} steps/s  p50 "
                f"{summary['p50_ms']} ms  p99 {summary['p99_ms']} ms  server "
                f"{cpu.get('server')} ms/request  errors {summary['errors']}",
                flush=True,
            )
            if summary["errors"]:
                print(f"    errors: {summary['error_samples']}", flush=True)
    return rounds


def turn_order(turns: list[list[str]], number: int) -> list[str]:
    """The phases of round `number`: row after row; within a row its systems in their order in
    odd rounds and in reverse in even ones. A row's first phase runs right after another row's
    heaviest (the bulk row's in-process ONNX Runtime before the WebSocket stream), and its
    last one right before the next row: with a fixed order one system would always take that
    place, and a ratio would carry it. Alternating gives each system both places."""
    return [key for row in turns for key in (row if number % 2 else row[::-1])]


def restarted(server: ServerProcess, crashes: list[dict[str, Any]]) -> None:
    """Start a crashed peer again (same command line, ports and model repository), keeping
    the crash's exit code and log tail first; past PEER_RESTARTS it stays down."""
    code = server.exit_code()
    crashes.append({"server": server.name, "exit_code": code, "log_tail": server.log_tail(1500)})
    if len(crashes) > PEER_RESTARTS:
        return
    print(f"  ({server.name} exited with code {code}: starting it again)", flush=True)
    try:
        server.start(ready_timeout_s=120)
    except RuntimeError as exc:
        print(f"  ({server.name} did not come back: {str(exc)[:300]})", flush=True)


def verdicts(plan: Plan, rounds: Rounds, unavailable: dict[str, str]) -> list[dict[str, Any]]:
    out = []
    for row, targets in targets_of(plan).items():
        if row not in plan.rows:
            continue
        for target in targets:
            value = target.value(rounds)
            if value is None:
                peer_row = "Triton" in target.label and "triton" in unavailable
                verdict = PEER_UNAVAILABLE if peer_row else "no figures"
                if row == "bulk" and "binary" in target.label and BULK_BINARY in unavailable:
                    verdict = unavailable[BULK_BINARY]
                failed = [k for k in unavailable if k.startswith(f"{row}/")]
                if verdict == "no figures" and failed:
                    verdict = f"no figures: {', '.join(failed)} failed (see the table's note)"
            elif target.ok is None:
                verdict = "reported"
            else:
                verdict = "PASS" if target.ok(value) else "MISS"
            out.append(
                {
                    "row": row,
                    "target": target.label,
                    "value": value,
                    "goal": target.goal,
                    "verdict": verdict,
                }
            )
    return out


def figures_table(
    layout: list[dict[str, str]],
    rounds: Rounds,
    unavailable: dict[str, str],
    markdown: bool = False,
) -> str:
    cols = [
        "row",
        "system",
        "steps/s",
        "p50 ms",
        "p99 ms",
        "server CPU ms/req",
        "client CPU ms/req",
        "errors",
        "note",
    ]
    body = []
    for system in layout:
        row, key, label, server = system["row"], system["key"], system["label"], system["server"]
        if not rounds.get(key):
            why = unavailable.get(key, "unavailable")
            if server == "triton" and "triton" in unavailable:
                why = PEER_UNAVAILABLE
            body.append([row, label, "-", "-", "-", "-", "-", "-", why])
            continue
        one = median_round(rounds[key])
        cpu = one["cpu_ms_per_request"].get("server")
        client = one["cpu_ms_per_request"].get("client")
        body.append(
            [
                row,
                label,
                f"{one['sequences_per_s']:.0f}",
                f"{one['p50_ms']}",
                f"{one['p99_ms']}",
                "-" if cpu is None else f"{cpu:.3f}",
                "-" if client is None else f"{client:.3f}",
                str(one["errors"]),
                "in-process: its CPU is the client's" if "in-process" in key else "",
            ]
        )
    return text_table(cols, body, markdown)


def targets_table(targets: list[dict[str, Any]], markdown: bool = False) -> str:
    cols = ["row", "target", "measured", "goal", "verdict"]
    body = [
        [
            t["row"],
            t["target"],
            "-" if t["value"] is None else str(t["value"]),
            t["goal"],
            t["verdict"],
        ]
        for t in targets
    ]
    return text_table(cols, body, markdown)


def markdown(path: Path) -> str:
    """The tables of a saved run (`--json`) as Markdown: `python -m bench.peers --markdown F`."""
    report = json.loads(path.read_text())
    saved = report["plan"]  # the verdicts again, by this code's rules, for the saved rows
    plan = parse_plan(
        [
            "--only",
            *saved["rows"],
            "--sessions",
            str(saved["sessions"]),
            "--small-sessions",
            str(saved["small_sessions"]),
            "--bulk-sessions",
            str(saved["bulk_sessions"]),
        ]
    )
    if "layout" not in report:  # saved before the layout was: the default rows' systems
        from bench.medium_model import ModelFiles

        report["layout"] = [
            {"row": row, "key": x.key, "label": x.label, "server": x.server}
            for row, systems in systems_of(plan, ModelFiles(*[Path()] * 3)).items()
            for x in systems
        ]
    return "\n\n".join(
        (
            figures_table(report["layout"], report["rounds"], report["unavailable"], True),
            targets_table(verdicts(plan, report["rounds"], report["unavailable"]), True),
        )
    )


def plot(targets: list[dict[str, Any]], path: Path, title: str) -> None:
    """The ratio targets as bars, each with its goal marked (latency targets left out)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [t for t in targets if "÷" in t["target"] and "p99" not in t["target"]]
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(shown) + 1.2))
    for y, target in enumerate(reversed(shown)):
        value = target["value"] or 0.0
        color = {"PASS": "C2", "MISS": "C3"}.get(target["verdict"], "C7")
        ax.barh(y, value, color=color)
        ax.text(
            value,
            y,
            f" {target['value'] if target['value'] is not None else target['verdict']}",
            va="center",
            fontsize=8,
        )
        goal = target["goal"].removeprefix(">= ")
        if goal.replace(".", "").isdigit():
            ax.plot([float(goal)] * 2, [y - 0.4, y + 0.4], "k-", linewidth=2)
    ax.set_yticks(range(len(shown)), [t["target"] for t in reversed(shown)], fontsize=8)
    ax.set_xlabel("ratio, same round (black mark: the goal; green PASS, red MISS, grey reported)")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
