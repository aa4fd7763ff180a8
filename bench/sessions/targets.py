"""The targets as ratios of same-round figures, with PASS/MISS."""

from __future__ import annotations

from typing import Any

from bench.report import Results, figures
from bench.sessions.plan import GATEWAY_SESSIONS
from bench.sessions.tables import text_table


def _same_round(results: Results, a: str, b: str, conc: int, key: str) -> float | None:
    """Median over rounds of a[key] / b[key], both from the same round."""
    if a not in results or b not in results or conc not in results[a] or conc not in results[b]:
        return None
    theirs = {s["round"]: s for s in results[b][conc]}
    values = sorted(
        s[key] / theirs[s["round"]][key]
        for s in results[a][conc]
        if s["round"] in theirs and s[key] and theirs[s["round"]][key]
    )
    return round(values[(len(values) - 1) // 2], 3) if values else None


def targets(results: Results, gateway: dict[str, Any] | None) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []

    def add(name: str, value: float | None, goal: str, ok: bool | None, note: str = "") -> None:
        verdict = "n/a" if ok is None else ("PASS" if ok else "MISS")
        rows.append(
            {"target": name, "value": value, "goal": goal, "verdict": verdict, "note": note}
        )

    n = 256
    rate = "sequences_per_s"
    v = _same_round(results, "ws", "echo-ws", n, rate)
    add("WS steps/s @256 ÷ WS echo", v, ">= 0.75", None if v is None else v >= 0.75)
    v = _same_round(results, "ws", "naive", n, rate)
    add("WS steps/s @256 ÷ naive", v, ">= 5", None if v is None else v >= 5)
    chosen = figures(results)
    p99 = chosen.get("ws", {}).get(n, {}).get("p99_ms")
    echo_ratio = _same_round(results, "ws", "echo-ws", n, "p99_ms")
    ok = None if p99 is None else (p99 < 50 or (echo_ratio is not None and echo_ratio < 1.5))
    add(
        "WS p99 @256 (ms)", p99, "< 50 ms, or < 1.5x echo p99", ok, f"p99 ÷ echo p99 = {echo_ratio}"
    )
    for conc in sorted(results.get("grpc-stream", {})):
        v = _same_round(results, "grpc-stream", "ws", conc, rate)
        add(f"(info) gRPC stream steps/s @{conc} ÷ WS", v, "-", None, "same round")
        v = _same_round(results, "grpc-stream", "ws", conc, "p99_ms")
        add(f"(info) gRPC stream p99 @{conc} ÷ WS p99", v, "-", None, "same round")
    v = _same_round(results, "rest", "naive", n, rate)
    add("REST steps/s @256 ÷ naive", v, ">= 2", None if v is None else v >= 2)
    cpu = figures(results)

    def cpu_ratio(a: str, b: str) -> float | None:
        try:
            mine = cpu[a][n]["cpu_ms_per_request"]["server"]
            theirs = cpu[b][n]["cpu_ms_per_request"]["server"]
        except KeyError:
            return None
        return round(theirs / mine, 3) if mine and theirs else None

    for a, b in (("ws", "echo-ws"), ("ws", "naive"), ("rest", "naive")):
        add(
            f"(info) steps per server CPU-second @256, {a} ÷ {b}",
            cpu_ratio(a, b),
            "same goal as above",
            None,
            "throughput if both servers had the same CPU; contention-proof",
        )
    if gateway:
        chosen_gw = figures(gateway["rounds"])
        ceilings = chosen_gw.get("ceiling", {})
        best_gateway = max((s[rate] for s in chosen_gw.get("gateway", {}).values()), default=0)
        loops = [
            ("1 intra-op thread (the issue's 1024 in 4-5 ms)", ceilings.get(1)),
            ("2 intra-op threads (both cores)", chosen_gw.get("ceiling-2t", {}).get(1)),
        ]
        for label, ceiling_summary in loops:
            top = ceiling_summary[rate] if ceiling_summary else 0
            v = round(best_gateway / top, 3) if top and best_gateway else None
            add(
                f"gateway steps/s ÷ in-process loop, {label}",
                v,
                ">= 0.40",
                None if v is None else v >= 0.40,
                f"one loop stepping the same {GATEWAY_SESSIONS} states: {top:.0f} steps/s; "
                "gateway: best of its client counts",
            )
        for clients, summary in sorted(chosen_gw.get("gateway", {}).items()):
            if clients > 1 and clients in ceilings:
                w = round(summary[rate] / ceilings[clients][rate], 3)
                add(
                    f"(info) gateway ({clients} clients) ÷ {clients} in-process loops",
                    w,
                    "-",
                    None,
                    f"{clients} loops of {GATEWAY_SESSIONS} states, 1 thread each "
                    f"({ceilings[clients][rate]:.0f} steps/s)",
                )
    return rows


def targets_table(rows: list[dict[str, Any]], markdown: bool = False) -> str:
    cols = ["target", "measured", "goal", "verdict", "note"]
    body = [
        [
            r["target"],
            "-" if r["value"] is None else f"{r['value']}",
            r["goal"],
            r["verdict"],
            r["note"],
        ]
        for r in rows
    ]
    return text_table(cols, body, markdown)
