"""`python -m bench.batch_cost` in its smallest form: it steps sessions in lockstep, so each
batch holds one step of every session, and prints the event loop's CPU per step and per
batch. No figure is judged: speed is the benchmark's job."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.conftest import ROOT


def test_each_batch_holds_one_step_of_every_session_and_its_cost_is_printed() -> None:
    done = subprocess.run([sys.executable, "-m", "bench.batch_cost", "--sessions", "1", "3",
                           "--steps", "60", "--rounds", "1"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    for sessions in (1, 3):
        line = re.search(rf"^sessions +{sessions} +rows per batch +([\d.]+) +per step +([\d.]+) µs"
                         r" +per batch +([\d.]+) µs$", done.stdout, re.M)
        assert line, done.stdout
        rows, per_step, per_batch = map(float, line.groups())
        assert rows == sessions, line.group(0)  # lockstep: a batch is one step of each
        assert 0 < per_step <= per_batch, line.group(0)
