"""`python -m bench.peers [options]`; for a run saved with `--json`:
`python -m bench.peers --markdown FILE` (its tables as Markdown) and
`python -m bench.peers --plot-from FILE PNG` (its ratios against their goals)."""

import json
import sys
from pathlib import Path

from bench.peers.run import main, markdown, plot

if len(sys.argv) == 3 and sys.argv[1] == "--markdown":
    print(markdown(Path(sys.argv[2])))
    raise SystemExit(0)
if len(sys.argv) == 4 and sys.argv[1] == "--plot-from":  # a saved run's plot: JSON, PNG
    report = json.loads(Path(sys.argv[2]).read_text())
    plot(report["targets"], Path(sys.argv[3]), f"rnnserve beside its peers; {sys.argv[2]}")
    raise SystemExit(0)
raise SystemExit(main())
