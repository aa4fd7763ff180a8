"""`python -m bench.bulk_after_burst` in its smallest form: one server answers the bulk steps
before and after each kind of burst without an error and prints its figures. No figure is judged:
speed is the benchmark's job."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.conftest import ROOT


def test_it_measures_before_and_after_each_burst_without_errors() -> None:
    done = subprocess.run([sys.executable, "-m", "bench.bulk_after_burst", "--servers", "1",
                           "--duration", "1", "--warmup", "0.5", "--sessions", "16",
                           "--bulk-sessions", "64",
                           "--burst", "v2-http", "grpc-stream", "grpc-unary", "rest"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for burst in ("v2-http", "grpc-stream", "grpc-unary", "rest"):
        line = re.search(rf"^server 1: bulk binary ([\d,]+) steps/s before, ([\d,]+) after "
                         rf"{burst} at ([\d,]+) steps/s \(16 sessions\): after ÷ before "
                         r"[\d.]+; .* errors 0 / 0 / 0$", done.stdout, re.M)
        assert line, done.stdout
        assert all(int(g.replace(",", "")) > 0 for g in line.groups()), line.group(0)
        assert re.search(rf"^after {burst}: after ÷ before, median of 1: [\d.]+$",
                         done.stdout, re.M)
