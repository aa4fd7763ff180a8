"""Container health check: exit 0 when GET /v2/health/ready answers 200, else 1.

Standard library only (slim images have no curl). Where the server listens:

1. a URL argument, if given: `python healthcheck.py [URL]`;
2. else the address file the server writes once it listens (`--address-file`), when
   RNNSERVE_ADDRESS_FILE names one that exists and, if it names a process, that process is
   alive: it holds the real port, also when `docker run IMAGE --port 9000` moved the server
   with a flag the environment does not show;
3. else the server's own settings, RNNSERVE_HOST and RNNSERVE_PORT, with a wildcard host
   checked on loopback (a stale or unreadable address file is said so on stderr)."""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request

WILDCARDS = {"", "0.0.0.0", "::", "[::]"}
READY_PATH = "/v2/health/ready"


def process_alive(pid: int) -> bool:
    """Whether a process of that id exists (signal 0 checks without sending anything)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, run by another user
        return True
    except (OSError, OverflowError):
        return False
    return True


def from_address_file(path: str) -> tuple[str | None, str | None]:
    """(the server's HTTP base URL, None), or (None, why the file was not used) when it is
    stale or unreadable, or (None, None) when there is no file to read."""
    if not path:
        return None, None
    try:
        with open(path, encoding="utf-8") as file:
            content = json.load(file)
    except FileNotFoundError:
        return None, None
    except (OSError, ValueError) as exc:
        return None, f"address file {path} unreadable ({exc})"
    http = content.get("http") if isinstance(content, dict) else None
    if not isinstance(http, str) or not http.startswith(("http://", "https://")):
        return None, f"address file {path} names no http URL"
    pid = content.get("pid")
    if isinstance(pid, int) and not isinstance(pid, bool) and not process_alive(pid):
        return None, f"address file {path} is stale (process {pid} is not running)"
    return http.rstrip("/"), None


def from_settings() -> str:
    host = os.environ.get("RNNSERVE_HOST", "127.0.0.1")
    host = "127.0.0.1" if host in WILDCARDS else host
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    port = os.environ.get("RNNSERVE_PORT", "8000")
    return f"http://{host}:{port}"


def ready_url() -> tuple[str, str | None]:
    """The readiness URL to ask, and a note on an address file that was passed over."""
    if len(sys.argv) > 1:
        return sys.argv[1], None
    base, note = from_address_file(os.environ.get("RNNSERVE_ADDRESS_FILE", "").strip())
    if base is not None:
        return base + READY_PATH, None
    return from_settings() + READY_PATH, note


def main() -> int:
    url, note = ready_url()
    if note:
        print(f"{note}: using RNNSERVE_HOST and RNNSERVE_PORT", file=sys.stderr)
    timeout = float(os.environ.get("RNNSERVE_HEALTHCHECK_TIMEOUT_S", "2"))
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy
    try:
        with direct.open(url, timeout=timeout) as response:
            status = response.status
    except urllib.error.HTTPError as exc:  # 503 while models load or the store is down
        detail = exc.read(500).decode("utf-8", "replace").strip()
        print(f"not ready: {url} answered {exc.code} {detail}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:
        print(f"not ready: {url}: {exc}", file=sys.stderr)
        return 1
    return 0 if status == 200 else 1


if __name__ == "__main__":
    sys.exit(main())
