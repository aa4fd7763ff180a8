"""`python -m rnnserve_client`: the rnnserve-client command."""

from rnnserve_client.cli import main

raise SystemExit(main())
