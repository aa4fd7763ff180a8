"""`python -m service` is `rnnserve`."""

from rnnserve.cli import main

raise SystemExit(main())
