"""`python -m bench.http_path` in its smallest form: both paths answer every request of both
routes (the bench asserts each response is a 200) and a figure is printed for each, and for
the same work without the HTTP layer. No figure is judged: speed is the benchmark's job."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.conftest import ROOT


def test_both_paths_answer_and_print_a_figure() -> None:
    done = subprocess.run([sys.executable, "-m", "bench.http_path", "--requests", "200",
                           "--clients", "8", "--rounds", "1"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    for route in ("v2", "rest"):
        line = re.search(rf"^{route} +ASGI path +([\d.]+) µs +direct path +([\d.]+) µs",
                         done.stdout, re.M)
        assert line, done.stdout
        assert float(line.group(1)) > 0 and float(line.group(2)) > 0
        collected = re.search(rf"^{route} .*garbage collection: ([\d.]+) and ([\d.]+) µs",
                              done.stdout, re.M)
        assert collected, done.stdout  # the collector's share, printed beside each figure
    # the work under the HTTP layer, once per route (its calls raise on a refused step)
    below = re.findall(r"^ +below HTTP \(decode, step, encode: no HTTP layer\) +([\d.]+) µs",
                       done.stdout, re.M)
    assert len(below) == 2 and all(float(figure) > 0 for figure in below), done.stdout
