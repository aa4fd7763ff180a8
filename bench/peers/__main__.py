"""`python -m bench.peers [options]`."""

from bench.peers.run import main

raise SystemExit(main())
