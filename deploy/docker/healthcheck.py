"""Container health check: exit 0 when GET /v2/health/ready answers 200, else 1.

Standard library only (slim images have no curl). The address follows the server's own
settings, RNNSERVE_HOST and RNNSERVE_PORT, with a wildcard host checked on loopback. Usage:
`python healthcheck.py [URL]` (a URL argument overrides the settings)."""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

WILDCARDS = {"", "0.0.0.0", "::", "[::]"}


def ready_url() -> str:
    if len(sys.argv) > 1:
        return sys.argv[1]
    host = os.environ.get("RNNSERVE_HOST", "127.0.0.1")
    host = "127.0.0.1" if host in WILDCARDS else host
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    port = os.environ.get("RNNSERVE_PORT", "8000")
    return f"http://{host}:{port}/v2/health/ready"


def main() -> int:
    url = ready_url()
    timeout = float(os.environ.get("RNNSERVE_HEALTHCHECK_TIMEOUT_S", "2"))
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310
            status = response.status
    except urllib.error.HTTPError as exc:  # 503 while models load or the store is down
        print(f"not ready: {url} answered {exc.code}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:
        print(f"not ready: {url}: {exc}", file=sys.stderr)
        return 1
    return 0 if status == 200 else 1


if __name__ == "__main__":
    sys.exit(main())
