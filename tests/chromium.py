"""A headless Chromium for the browser tests (the console, the API docs pages), driven by
selenium through Debian's chromium and chromium-driver.

`require_chromium()` at a test module's top skips the module, with the reason, when they or
PyPI selenium are missing. `start_chromium` starts one; with `offline` every request that is not
to a loopback address fails (hostnames do not resolve, and anything else goes to a proxy that
is not there), as on a machine without internet, and the performance log records every
request the pages make (`requested_urls`)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

CHROMIUM = Path(os.environ.get("RNNSERVE_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("RNNSERVE_CHROMEDRIVER", "/usr/bin/chromedriver"))

BASE_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--disable-background-networking", "--disable-component-update",
              "--no-first-run", "--window-size=1280,1000")
OFFLINE_FLAGS = (
    # no hostname resolves (IP literals other than 127.0.0.1 are caught by the proxy below)
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    # every request but loopback goes through a proxy where nothing listens (port 9, discard)
    "--proxy-server=http://127.0.0.1:9", "--proxy-bypass-list=<-loopback>;127.0.0.1",
)


def require_chromium() -> ModuleType:
    """selenium.webdriver; skips the calling test module when Chromium, its driver or
    selenium is missing."""
    if not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()):
        pytest.skip(f"needs Chromium at {CHROMIUM} and chromedriver at {CHROMEDRIVER}: "
                    "apt-get install -y chromium chromium-driver", allow_module_level=True)
    return pytest.importorskip("selenium.webdriver", reason="needs PyPI selenium")


def start_chromium(profile: Path, *, offline: bool = False) -> Any:
    """A started headless Chromium (quit it when done); skips the test when it cannot
    start."""
    webdriver = require_chromium()
    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager download anything
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*BASE_FLAGS, *(OFFLINE_FLAGS if offline else ()), f"--user-data-dir={profile}"):
        options.add_argument(flag)
    logs = {"browser": "ALL", **({"performance": "ALL"} if offline else {})}
    options.set_capability("goog:loggingPrefs", logs)
    try:
        driver = webdriver.Chrome(options=options,
                                  service=webdriver.ChromeService(str(CHROMEDRIVER)))
    except Exception as exc:  # a broken install: say so rather than fail obscurely
        pytest.skip(f"Chromium did not start ({exc}); reinstall chromium chromium-driver")
    driver.set_page_load_timeout(20)
    return driver


def requested_urls(driver: Any) -> list[str]:
    """The http(s) and ws(s) URLs the browser asked the network for since the last call (an
    offline driver's performance log; reading it empties it). A request the page's
    Content-Security-Policy refused never left the browser and is not listed."""
    urls: list[tuple[str, str]] = []  # (request id, url); a redirect keeps the id
    refused: set[str] = set()
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        method, params = message["method"], message["params"]
        if method in ("Network.requestWillBeSent", "Network.webSocketCreated"):
            url = params.get("request", {}).get("url") or params.get("url", "")
            if url.startswith(("http:", "https:", "ws:", "wss:")):
                urls.append((params["requestId"], url))
        elif method == "Network.loadingFailed" and params.get("blockedReason") == "csp":
            refused.add(params["requestId"])
    return [url for request, url in urls if request not in refused]
