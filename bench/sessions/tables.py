"""The report's tables (stream, gateway; plain or Markdown) and the scaling plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bench.report import Summary, figures


def _fmt(value: float | None, digits: int = 2) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if abs(value) < 100 else f"{value:.0f}"


def stream_table(chosen: dict[str, dict[int, Summary]], markdown: bool = False) -> str:
    cols = [
        "N",
        "system",
        "steps/s",
        "p50 ms",
        "p99 ms",
        "server CPU ms/step",
        "server cores busy",
        "client CPU ms/step",
        "rows/run",
        "errors",
    ]
    rows = []
    for conc in sorted({c for pts in chosen.values() for c in pts}):
        for system, pts in chosen.items():
            if conc not in pts:
                continue
            r = pts[conc]
            cpu = r["cpu_ms_per_request"]
            rows.append(
                [
                    str(conc),
                    system,
                    f"{r['sequences_per_s']:.0f}",
                    _fmt(r["p50_ms"]),
                    _fmt(r["p99_ms"]),
                    _fmt(cpu.get("server"), 3),
                    _fmt(_cores(r, "server")),
                    _fmt(cpu.get("client"), 3),
                    _fmt(r.get("mean_batch_rows"), 1),
                    str(r["errors"]),
                ]
            )
    return text_table(cols, rows, markdown)


def _cores(summary: Summary, probe: str) -> float | None:
    """Cores a process kept busy over the window: steps/s × CPU s per step."""
    per_step = summary["cpu_ms_per_request"].get(probe)
    return None if per_step is None else summary["requests_per_s"] * per_step / 1e3


def gateway_table(gateway: dict[str, Any], markdown: bool = False) -> str:
    cols = [
        "clients",
        "system",
        "steps/s",
        "calls/s",
        "p50 ms",
        "p99 ms",
        "server CPU µs/step",
        "client CPU µs/step",
        "errors",
    ]
    chosen = figures(gateway["rounds"])
    rows = []
    for clients in sorted({c for pts in chosen.values() for c in pts}):
        for system, pts in chosen.items():
            if clients not in pts:
                continue
            r = pts[clients]
            cpu = r["cpu_us_per_step"]
            server = cpu.get("server") if system == "gateway" else cpu.get("client")
            client = cpu.get("client") if system == "gateway" else None
            rows.append(
                [
                    str(clients),
                    system,
                    f"{r['sequences_per_s']:.0f}",
                    f"{r['requests_per_s']:.1f}",
                    _fmt(r["p50_ms"]),
                    _fmt(r["p99_ms"]),
                    _fmt(server),
                    _fmt(client),
                    str(r["errors"]),
                ]
            )
    return text_table(cols, rows, markdown)


def text_table(cols: list[str], rows: list[list[str]], markdown: bool) -> str:
    if markdown:
        text = {"row", "system", "target", "goal", "verdict", "note"}
        lines = [
            "| " + " | ".join(cols) + " |",
            "|" + "|".join("---" if c in text else "---:" for c in cols) + "|",
        ]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [
        max(len(c), *(len(r[i]) for r in rows)) if rows else len(c) for i, c in enumerate(cols)
    ]
    fmt = "  ".join(f"{{:<{w}}}" if i == 1 else f"{{:>{w}}}" for i, w in enumerate(widths))
    lines = [fmt.format(*cols), "-" * (sum(widths) + 2 * (len(cols) - 1))]
    lines += [fmt.format(*row) for row in rows]
    return "\n".join(lines)


def plot(chosen: dict[str, dict[int, Summary]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    styles = {
        "ws": ("rnnserve WebSocket", "C0", "o-"),
        "rest": ("rnnserve REST", "C1", "s-"),
        "naive": ("naive stateful (FastAPI+ORT)", "C3", "^-"),
        "echo-ws": ("WebSocket echo", "C2", "o--"),
        "echo-rest": ("FastAPI JSON echo", "C7", "s--"),
        "echo-ws-asyncio": ("WebSocket echo, asyncio loop", "C4", "o:"),
        "grpc-stream": ("rnnserve gRPC ModelStreamInfer", "C5", "D-"),
    }
    for system, pts in chosen.items():
        label, color, style = styles.get(system, (system, None, "x-"))
        ns = sorted(pts)
        left.plot(ns, [pts[n]["sequences_per_s"] for n in ns], style, color=color, label=label)
        right.plot(ns, [pts[n]["p99_ms"] or np.nan for n in ns], style, color=color, label=label)
    left.set(
        xscale="log",
        xlabel="concurrent sessions (closed loop, 1 step per message)",
        ylabel="steps/s",
        title="throughput",
    )
    right.set(
        xscale="log",
        yscale="log",
        xlabel="concurrent sessions",
        ylabel="p99 ms",
        title="p99 latency",
    )
    for ax in (left, right):
        ax.grid(True, which="both", alpha=0.3)
    left.set_ylim(bottom=0)
    left.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
