"""`python -m bench.peers`, the side-by-side benchmark of issue 17, in its smallest form: every
row against rnnserve and the echo servers it starts itself, the Triton peer left out
(`--no-peer`: no install, no network), a fraction of a second per phase and a few sessions.
What a reader of the benchmark relies on: each row prints figures and every target a verdict,
Triton's rows say "peer unavailable" instead of crashing the run, and the correctness check
of rnnserve's sequence paths passes. No figure is judged (speed is the benchmark's job)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT

ROWS = ("v2-http", "grpc", "rest", "bulk", "ws")


@pytest.mark.slow
def test_every_row_prints_figures_and_a_verdict_without_the_peer(tmp_path: Path) -> None:
    out = tmp_path / "peers.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.peers",
            "--no-peer",
            "--quick",
            "--duration",
            "0.4",
            "--warmup",
            "0.2",
            "--sessions",
            "8",
            "--small-sessions",
            "4",
            "--bulk-sessions",
            "32",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(out.read_text())

    assert report["unavailable"]["triton"] == "left out (--no-peer)"
    for check, verdict in report["correctness"].items():
        assert verdict["ok"], (check, verdict)
    assert {"rnnserve http steps vs predict", "rnnserve grpc steps vs predict"} <= set(
        report["correctness"]
    )

    assert {t["row"] for t in report["targets"]} == set(ROWS)
    for target in report["targets"]:
        if "Triton" in target["target"]:
            assert target["verdict"] == "peer unavailable", target
        elif target["row"] == "bulk" and "binary" in target["target"] and target["value"] is None:
            assert target["verdict"].startswith("not on this server"), target  # before binary
        else:
            assert isinstance(target["value"], float | int), target
            assert target["verdict"] in ("PASS", "MISS", "reported"), target
    measured = {key for key, rounds in report["rounds"].items() if rounds}
    assert not any(key.startswith(("v2-http/triton", "grpc/triton")) for key in measured)
    for key in measured:
        (summary,) = report["rounds"][key]
        assert summary["requests"] > 0 and summary["errors"] == 0, (key, summary)

    lines = [line.strip() for line in done.stdout.splitlines()]
    verdicts = ("PASS", "MISS", "reported", "peer unavailable")
    for row in ROWS:
        mine = [line for line in lines if line.startswith(row + " ")]
        assert any(line.endswith(verdicts) for line in mine), f"no verdict for {row}:\n{lines}"
        steps_p50_p99 = re.compile(r"rnnserve.*\s\d+\s+\d+\.?\d*\s+\d+\.?\d*\s")
        assert any(steps_p50_p99.search(line) for line in mine), f"no figures for {row}: {mine}"


def test_a_crashed_peer_is_started_again_and_measured_in_later_rounds(tmp_path: Path) -> None:
    """Triton 2.51 has died under load here (SIGSEGV, SIGABRT). A run then starts it again,
    keeps the crash (exit code and log tail), counts nothing for the phase it died in, and
    measures it in the next round; a system on a server that is not the peer still sits out
    the rounds after its failure. The peer here is a real process (Python's HTTP server under
    the peer's name) killed with SIGSEGV in its phase, as a crash would end it: in round 1 the
    phase then raises, in round 2 it returns the figures of its failed requests (as the
    closed loop does when every stream breaks); neither counts."""
    import signal

    from bench.peers.plan import parse_plan
    from bench.peers.rows import System
    from bench.peers.run import measure
    from bench.procs import ServerProcess, free_port

    port = free_port()
    (tmp_path / "ok").write_text("ready")
    peer = ServerProcess(
        "triton",
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        f"http://127.0.0.1:{port}/ok",
        tmp_path / "peer.log",
        cwd=tmp_path,
    )
    peer.start(ready_timeout_s=30)
    phases_run: list[int] = []

    def peer_phase(_: ServerProcess) -> Any:
        def phase() -> dict[str, Any]:
            phases_run.append(peer.pid)
            figures = {"requests": 10, "errors": 0, "sequences_per_s": 5.0, "p50_ms": 1.0,
                       "p99_ms": 2.0, "cpu_ms_per_request": {}}
            if len(phases_run) <= 2:  # dies mid-phase: the phase raises, or it ends
                peer._popen.send_signal(signal.SIGSEGV)  # type: ignore[union-attr]
                peer._popen.wait(timeout=10)  # type: ignore[union-attr]
                if len(phases_run) == 1:
                    raise ConnectionResetError("the peer went away mid-phase")
                figures.update(errors=256, sequences_per_s=2357.0)  # with the failed streams
            return figures
        return phase

    def broken(_: ServerProcess) -> Any:
        def phase() -> dict[str, Any]:
            raise RuntimeError("a system that fails")
        return phase

    plan = parse_plan(["--no-peer", "--rounds", "4"])
    layout = {"v2-http": [System("v2-http/triton", "peer", "triton", peer_phase),
                          System("v2-http/other", "other", "other", broken)]}
    unavailable: dict[str, str] = {}
    crashes: list[dict[str, Any]] = []
    try:
        rounds = measure(plan, layout, {"triton": peer, "other": peer}, unavailable, crashes)
    finally:
        peer.stop()

    assert [r["round"] for r in rounds["v2-http/triton"]] == [3, 4]
    assert {r["sequences_per_s"] for r in rounds["v2-http/triton"]} == {5.0}
    assert len(set(phases_run)) == 3, "the peer was not started again after each crash"
    assert [c["exit_code"] for c in crashes] == [-signal.SIGSEGV] * 2
    assert "v2-http/triton" not in unavailable
    assert "v2-http/other" not in rounds and "a system that fails" in unavailable["v2-http/other"]


def test_a_full_run_judges_each_ratio_by_its_median_round() -> None:
    """Three rounds by default, and a ratio is the median of the rounds' own ratios: one round
    whose phase a neighbour slowed (here the first, 0.30) does not decide the verdict, nor
    does one that ran unusually well."""
    from bench.peers.plan import parse_plan
    from bench.peers.rows import targets_of

    plan = parse_plan([])
    assert plan.rounds == 3 and parse_plan(["--quick"]).rounds == 1

    def rounds_of(rates: list[float]) -> list[dict[str, Any]]:
        return [{"round": i + 1, "errors": 0, "sequences_per_s": rate}
                for i, rate in enumerate(rates)]

    rounds = {"bulk/rnnserve-binary": rounds_of([30.0, 50.0, 90.0]),
              "bulk/in-process": rounds_of([100.0, 100.0, 100.0])}
    (bulk,) = [t for t in targets_of(plan)["bulk"] if t.label == "bulk binary ÷ in-process ORT"]
    assert bulk.value(rounds) == 0.5
    assert bulk.ok is not None and bulk.ok(0.5)


def test_within_a_row_the_systems_swap_places_every_other_round() -> None:
    """A row's first phase runs right after the previous row's last (the WebSocket stream's
    after the bulk row's in-process ONNX Runtime); with a fixed order rnnserve would always
    take that place and its ratio carry it. Rows keep their order; within each, round 1 runs
    the listed order, round 2 the reverse, round 3 the listed again, and every phase's figures
    are kept under its own system and round."""
    from bench.peers.plan import parse_plan
    from bench.peers.rows import System
    from bench.peers.run import measure

    class Running:
        """A server that stays up: all that `measure` asks of one."""
        name = "rnnserve"

        def exit_code(self) -> int | None:
            return None

    ran: list[tuple[str, int]] = []

    def system(key: str) -> System:
        def make(_: Any) -> Any:
            def phase() -> dict[str, Any]:
                ran.append((key, len(ran)))
                return {"requests": 1, "errors": 0, "sequences_per_s": float(len(ran)),
                        "p50_ms": 1.0, "p99_ms": 1.0, "cpu_ms_per_request": {}}
            return phase
        return System(key, key, "rnnserve", make)

    layout = {"bulk": [system("bulk/a"), system("bulk/b"), system("bulk/c")],
              "ws": [system("ws/rnnserve"), system("ws/echo")]}
    rounds = measure(parse_plan(["--no-peer", "--rounds", "3"]), layout,
                     {"rnnserve": Running()}, {})  # type: ignore[dict-item]
    order = [key for key, _ in ran]
    assert order == ["bulk/a", "bulk/b", "bulk/c", "ws/rnnserve", "ws/echo",
                     "bulk/c", "bulk/b", "bulk/a", "ws/echo", "ws/rnnserve",
                     "bulk/a", "bulk/b", "bulk/c", "ws/rnnserve", "ws/echo"]
    assert [r["round"] for r in rounds["ws/rnnserve"]] == [1, 2, 3]
    assert [r["sequences_per_s"] for r in rounds["ws/rnnserve"]] == [4.0, 10.0, 14.0]
