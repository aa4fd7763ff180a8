"""`python -m bench.peers [options]`, or `python -m bench.peers --markdown FILE` for the tables
of a run saved with `--json` as Markdown."""

import sys
from pathlib import Path

from bench.peers.run import main, markdown

if len(sys.argv) == 3 and sys.argv[1] == "--markdown":
    print(markdown(Path(sys.argv[2])))
    raise SystemExit(0)
raise SystemExit(main())
