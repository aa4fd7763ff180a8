"""`python -m service` is `rnnserve`."""

from service.cli import main

raise SystemExit(main())
