"""`python -m bench.v2_replicas` in its smallest form: every set-up (one and two servers, the
memory store and a real redis-server) answers every step without an error and prints its
figures. No figure is judged: speed is the benchmark's job."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest

from tests.conftest import ROOT


@pytest.mark.skipif(shutil.which("redis-server") is None,
                    reason="redis-server is not installed (apt-get install redis-server)")
def test_every_setup_answers_and_prints_its_figures() -> None:
    done = subprocess.run([sys.executable, "-m", "bench.v2_replicas", "--rounds", "1",
                           "--duration", "1", "--warmup", "0.5", "--sessions", "16"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    for setup in ("1 × memory", "1 × redis", "2 × redis", "2 × memory"):
        line = re.search(rf"^round 1 +{setup} +([\d,]+) steps/s .* errors (\d+)$",
                         done.stdout, re.M)
        assert line, done.stdout
        assert int(line.group(1).replace(",", "")) > 0 and line.group(2) == "0", line.group(0)
        assert re.search(rf"^{setup} +÷ 1 × memory, per round: [\d.]+$", done.stdout, re.M)
