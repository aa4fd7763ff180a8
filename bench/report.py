"""Turning load points into what people read: the side-by-side table, the ratios, the JSON.

Figures are per system and concurrency; when a point was measured in several rounds the
round with the median throughput stands for it (all rounds stay in the JSON), which keeps one
round disturbed by a neighbour on the shared machine from setting the figure. Ratios are taken
within each round and their median kept."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import Any

Summary = dict[str, Any]
"""bench.stats.LoadResult.summary() of one round of one point."""

Results = dict[str, dict[int, list[Summary]]]
"""system -> concurrency -> one summary per round."""

Chosen = dict[str, dict[int, Summary]]
"""system -> concurrency -> the summary that stands for the point."""


def median_round(rounds: list[Summary]) -> Summary:
    """The round with the median throughput (the lower middle one for an even count)."""
    ordered = sorted(rounds, key=lambda r: r["sequences_per_s"])
    return ordered[(len(ordered) - 1) // 2]


def figures(results: Results) -> Chosen:
    """system -> concurrency -> the summary that stands for the point."""
    return {
        system: {conc: median_round(rounds) for conc, rounds in points.items()}
        for system, points in results.items()
    }


def ratios(results: Results, subject: str = "rnnserve") -> list[dict[str, Any]]:
    """`subject` against each other system at each concurrency: throughput, p50 latency and
    server CPU per sequence. Each ratio is taken within a round (systems measured back to back,
    under the same neighbours) and the median over rounds is kept: steadier than dividing
    figures that may come from different rounds."""
    rows = []
    for conc in sorted(results.get(subject, {})):
        row: dict[str, Any] = {"concurrency": conc}
        for other, points in results.items():
            if other == subject or conc not in points:
                continue
            pairs = _same_round_pairs(results[subject][conc], points[conc])
            for name, key in (("throughput", "sequences_per_s"), ("p50", "p50_ms")):
                row[f"{name}_vs_{other}"] = _median([_divide(a[key], b[key]) for a, b in pairs])
            row[f"cpu_per_seq_vs_{other}"] = _median(
                [_divide(_work_cpu(subject, a), _work_cpu(other, b)) for a, b in pairs]
            )
        rows.append(row)
    return rows


def _same_round_pairs(mine: list[Summary], theirs: list[Summary]) -> list[tuple[Summary, Summary]]:
    by_round = {summary["round"]: summary for summary in theirs}
    return [
        (summary, by_round[summary["round"]]) for summary in mine if summary["round"] in by_round
    ]


def _work_cpu(system: str, summary: Summary) -> float | None:
    """CPU ms per sequence of the system doing the work: the server process, or for the
    in-process ceiling this process itself (there the runtime is the work)."""
    cpu: dict[str, float | None] = summary["cpu_ms_per_request"]
    return cpu.get("client") if system == "ceiling" else cpu.get("server")


def _median(values: list[float | None]) -> float | None:
    known = sorted(v for v in values if v is not None)
    return known[(len(known) - 1) // 2] if known else None


def format_table(chosen: Chosen) -> str:
    """One line per concurrency and system. CPU ms/seq: the server process's CPU per sequence
    (for the in-process ceiling, the whole process's: the runtime is the work), and the load
    generator's, both read over the measured window."""
    header = (
        f"{'conc':>4}  {'system':<9} {'seq/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8} "
        f"{'server CPU ms/seq':>17} {'loadgen CPU ms/seq':>18} {'errors':>6}"
    )
    lines = [header, "-" * len(header)]
    concurrencies = sorted({conc for points in chosen.values() for conc in points})
    for conc in concurrencies:
        for system, points in chosen.items():
            if conc not in points:
                continue
            row = points[conc]
            server_cpu = _work_cpu(system, row)
            loadgen_cpu = None if system == "ceiling" else row["cpu_ms_per_request"].get("client")
            lines.append(
                f"{conc:>4}  {system:<9} {row['sequences_per_s']:>8.1f} {_fmt(row['p50_ms']):>8} "
                f"{_fmt(row['p99_ms']):>8} {_fmt(row['mean_ms']):>8} {_fmt(server_cpu):>17} "
                f"{_fmt(loadgen_cpu):>18} {row['errors']:>6}"
            )
    return "\n".join(lines)


def format_ratios(rows: list[dict[str, Any]], subject: str = "rnnserve") -> str:
    """Throughput ratios (above 1: the subject serves more), p50 latency and CPU-per-sequence
    ratios (below 1: the subject answers faster, does the work with less CPU). No p50 ratio
    against the in-process ceiling: its threads are scheduled unfairly under contention (most
    calls run unpreempted, a few wait very long), so its median is not a queueing latency like
    an HTTP server's; compare its mean instead."""
    others = [key.removeprefix("throughput_vs_") for key in rows[0] if key.startswith("thr")]
    columns = [(f"seq/s vs {o}", f"throughput_vs_{o}") for o in others]
    columns += [(f"p50 vs {o}", f"p50_vs_{o}") for o in others if o != "ceiling"]
    columns += [(f"CPU/seq vs {o}", f"cpu_per_seq_vs_{o}") for o in others]
    caption = f"{subject} relative to each system (median of per-round ratios)"
    header = f"{'conc':>4}  " + "  ".join(name for name, _ in columns)
    lines = [caption, header, "-" * len(header)]
    for row in rows:
        cells = "  ".join(f"{_fmt(row.get(key), 'x'):>{len(name)}}" for name, key in columns)
        lines.append(f"{row['concurrency']:>4}  {cells}")
    return "\n".join(lines)


def environment() -> dict[str, Any]:
    """What the figures depend on besides the code, load average included: on a shared
    machine it says how much the neighbours were doing."""
    import onnxruntime
    import torch

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
        "torch": torch.__version__,
        "torch_threads_default": torch.get_num_threads(),
        "onnxruntime": onnxruntime.__version__,
        **git_state(),
    }


def git_state() -> dict[str, Any]:
    """The commit measured and whether service/ differed from it: the checkout is shared with
    people editing the server, so a figure must say which server it belongs to."""
    root = Path(__file__).resolve().parents[1]

    def git(*args: str) -> str:
        try:
            done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
        except OSError:
            return ""
        return done.stdout.strip()

    return {
        "git_commit": git("rev-parse", "--short", "HEAD"),
        "service_uncommitted_changes": bool(git("status", "--porcelain", "--", "service")),
    }


def _divide(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def _fmt(value: float | None, suffix: str = "") -> str:
    if value is None:
        return "-"
    return f"{value:.2f}{suffix}" if value < 100 else f"{value:.0f}{suffix}"


def format_markdown(report: dict[str, Any]) -> str:
    """The figures and ratios of a saved run as Markdown tables (for docs/bench_predict.md):
    `python -m bench.report bench/results/predict-<timestamp>.json`."""
    results: Results = {
        system: {int(conc): rounds for conc, rounds in points.items()}
        for system, points in report["rounds"].items()
    }
    chosen = figures(results)
    lines = [
        "| concurrency | system | seq/s | p50 ms | p99 ms | mean ms | server CPU ms/seq "
        "| loadgen CPU ms/seq | errors |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for conc in sorted({c for points in chosen.values() for c in points}):
        for system, points in chosen.items():
            if conc in points:
                row = points[conc]
                loadgen = None if system == "ceiling" else row["cpu_ms_per_request"].get("client")
                lines.append(
                    f"| {conc} | {system} | {row['sequences_per_s']:.1f} | {_fmt(row['p50_ms'])} "
                    f"| {_fmt(row['p99_ms'])} | {_fmt(row['mean_ms'])} "
                    f"| {_fmt(_work_cpu(system, row))} | {_fmt(loadgen)} | {row['errors']} |"
                )
    if "rnnserve" in results and len(results) > 1:
        rows = ratios(results)
        keys = [k for k in rows[0] if k != "concurrency" and k != "p50_vs_ceiling"]
        lines += ["", "| concurrency | " + " | ".join(f"rnnserve {_title(k)}" for k in keys) + " |"]
        lines.append("|---:|" + "---:|" * len(keys))
        for row in rows:
            cells = " | ".join(_fmt(row.get(k), "×") for k in keys)
            lines.append(f"| {row['concurrency']} | {cells} |")
    return "\n".join(lines)


def _title(key: str) -> str:
    measure, other = key.split("_vs_")
    names = {"throughput": "seq/s", "p50": "p50", "cpu_per_seq": "CPU/seq"}
    return f"{names.get(measure, measure)} ÷ {other}"


if __name__ == "__main__":
    import json
    import sys

    print(format_markdown(json.loads(Path(sys.argv[1]).read_text())))
