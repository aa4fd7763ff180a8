"""`python -m bench.sessions [options]`, or `python -m bench.sessions --markdown FILE` for the
tables of a saved run as Markdown."""

import sys
from pathlib import Path

from bench.sessions.run import main, markdown

if len(sys.argv) == 3 and sys.argv[1] == "--markdown":
    print(markdown(Path(sys.argv[2])))
    raise SystemExit(0)
raise SystemExit(main())
