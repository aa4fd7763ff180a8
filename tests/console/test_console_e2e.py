"""The web console in a real headless Chromium against a real rnnserve server serving the
committed models: models page with plots, a live forecast streamed over a WebSocket session
whose drawn values equal a fresh REST session's outputs for the same inputs, pause, reset, stop,
a server error shown as a readable message, the DELETE on page unload, and the server page.

Needs the Debian packages chromium and chromium-driver (`apt-get install -y chromium
chromium-driver`) and PyPI selenium; skips with the reason when they are missing. Screenshots go
to test-artifacts/console/."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.chromium import require_chromium, start_chromium
from tests.conftest import COMMITTED_MODELS, ROOT, ServerProcess, serving

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]

ARTIFACTS = ROOT / "test-artifacts" / "console"
WEEKS = json.loads((ROOT / "service" / "rnnserve" / "console" / "static" / "weeks.json")
                   .read_text())
MODEL = "temperature-gru"
CITY = "greensboro-04"
KEY = "console-test-key"  # the server below requires it (a stand-in for API keys)
AUTH = {"Authorization": f"Bearer {KEY}"}

require_chromium()

from selenium.common.exceptions import TimeoutException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.select import Select  # noqa: E402
from selenium.webdriver.support.wait import WebDriverWait  # noqa: E402


@pytest.fixture(scope="module")
def server_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The real `rnnserve serve` on the committed models, with an API key, on a free port."""
    with serving(["--models", str(COMMITTED_MODELS), "--api-keys", KEY],
                 tmp_path_factory.mktemp("console") / "server.log") as proc:
        yield proc


@pytest.fixture(scope="module")
def server(server_process: ServerProcess) -> str:
    return server_process.url


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    driver = start_chromium(tmp_path_factory.mktemp("chromium-profile"))
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(driver: Any, what: str, condition: Callable[[Any], Any], timeout: float = 15) -> Any:
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.05).until(condition)
    except TimeoutException:
        status = driver.find_element(By.ID, "live-status").text
        error = driver.find_element(By.ID, "error-text").text
        pytest.fail(f"timed out waiting for {what}; status {status!r}, error banner {error!r}")


def chart(driver: Any, attribute: str) -> Any:
    value = driver.find_element(By.ID, "chart").get_attribute(f"data-{attribute}")
    return json.loads(value) if attribute in ("forecast", "actual") else value


def use_key(driver: Any, key: str) -> None:
    field = driver.find_element(By.ID, "api-key")
    field.clear()
    field.send_keys(key)
    driver.find_element(By.CSS_SELECTOR, "#key-form button[type=submit]").click()
    wait_for(driver, "the error banner to clear", lambda d: not d.find_element(
        By.ID, "error").is_displayed())


def texts(driver: Any, css: str) -> list[str]:
    """The text of every match, read in one go (the server page re-renders its tables)."""
    found: list[str] = driver.execute_script(
        "return [...document.querySelectorAll(arguments[0])].map(e => e.textContent)", css)
    return found


def points(driver: Any) -> int:
    return int(chart(driver, "points") or 0)


def shot(driver: Any, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    driver.save_screenshot(str(path))
    return path


def severe_console_messages(driver: Any) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def rest_forecasts(url: str, week: dict[str, Any]) -> list[float]:
    """A fresh session fed the warm-up in one step, then the week one hour per request."""
    with httpx.Client(base_url=url, timeout=10, headers=AUTH) as client:
        created = client.post(f"/v1/models/{MODEL}/sessions")
        assert created.status_code == 201, created.text
        sid = created.json()["session_id"]
        assert client.post(f"/v1/sessions/{sid}/step",
                           json={"inputs": week["warmup"]}).status_code == 200
        out = []
        for row in week["inputs"]:
            reply = client.post(f"/v1/sessions/{sid}/step", json={"inputs": [row]})
            assert reply.status_code == 200, reply.text
            out.append(reply.json()["outputs"][0][0])
        assert client.delete(f"/v1/sessions/{sid}").status_code == 204
    return out


def session_status(url: str, sid: str) -> int:
    return httpx.get(f"{url}/v1/sessions/{sid}", headers=AUTH, timeout=5).status_code


def test_console_end_to_end(server: str, server_process: ServerProcess, browser: Any) -> None:
    driver = browser
    started = time.monotonic()
    week = next(c for c in WEEKS["cities"] if c["id"] == CITY)
    n = len(week["inputs"])

    # -- without the API key the server's 401 is shown; with it, every model with its facts,
    # metrics table and both plots
    driver.get(server + "/#models")
    error = wait_for(driver, "the 401 message", lambda d: d.find_element(
        By.ID, "error").is_displayed() and d.find_element(By.ID, "error-text"))
    assert "GET /v1/models → 401" in error.text and "missing or invalid API key" in error.text
    driver.get_log("browser")  # drop the expected 401's console message
    use_key(driver, KEY)
    models = httpx.get(server + "/v1/models", headers=AUTH).json()["models"]
    names = [m["name"] for m in models]
    wait_for(driver, "the model cards", lambda d: len(
        d.find_elements(By.CSS_SELECTOR, "article.card[data-model]")) == len(names))
    wait_for(driver, "both plots of every model", lambda d: d.execute_script(
        "return [...document.querySelectorAll('#models img')]"
        ".filter(i => i.complete && i.naturalWidth > 0).length") == 2 * len(names))
    wait_for(driver, "the metrics tables", lambda d: len(
        d.find_elements(By.CSS_SELECTOR, "#models table.metrics")) == len(names))
    for m in models:
        card = driver.find_element(By.CSS_SELECTOR, f"article.card[data-model='{m['name']}']")
        text = card.text
        assert m["cell"].upper() in text and m["provider"] in text
        assert f"{m['layers']} × {m['hidden_size']}" in text
        assert f"{m['metrics']['test_rmse_f']:g}" in text
    shot(driver, "console-models.png")

    # -- live forecast: play, at least 24 points, pause holds, resume to the end of the week
    driver.get(server + "/#live")
    wait_for(driver, "the model list", lambda d: len(
        d.find_elements(By.CSS_SELECTOR, "#live-model option")) == len(names))
    Select(driver.find_element(By.ID, "live-model")).select_by_value(MODEL)
    Select(driver.find_element(By.ID, "live-city")).select_by_value(CITY)
    Select(driver.find_element(By.ID, "live-speed")).select_by_value("96")
    driver.find_element(By.ID, "live-play").click()
    wait_for(driver, "24 points on the chart", lambda d: points(d) >= 24)
    sid = chart(driver, "session")
    assert sid and chart(driver, "model") == MODEL and chart(driver, "city") == CITY
    driver.find_element(By.ID, "live-play").click()  # pause
    wait_for(driver, "the pause", lambda d: d.find_element(By.ID, "live-status").text == "paused")
    held = points(driver)
    time.sleep(0.5)
    assert points(driver) == held, "points kept arriving while paused"
    driver.find_element(By.ID, "live-play").click()  # resume
    wait_for(driver, "the whole week", lambda d: points(d) == n, timeout=30)
    wait_for(driver, "the end of the week", lambda d: "week done" in d.find_element(
        By.ID, "live-status").text)

    # the stream carried the key as a subprotocol, not in its URL: uvicorn's line for the
    # accepted WebSocket has no query string, and the key is in no log line
    accepted = [line for line in server_process.log().splitlines()
                if f'"WebSocket /v1/models/{MODEL}/stream' in line and "[accepted]" in line]
    assert accepted and all("?" not in line for line in accepted), accepted
    assert KEY not in server_process.log()

    drawn = chart(driver, "forecast")
    expected = rest_forecasts(server, week)
    assert len(drawn) == n
    worst = max(abs(a - b) for a, b in zip(drawn, expected, strict=True))
    assert worst <= 1e-4, f"drawn forecasts differ from the session API's by up to {worst}"
    assert chart(driver, "actual") == pytest.approx(week["target_f"], abs=1e-6)
    rmse_text = driver.find_element(By.ID, "live-rmse").text
    rmse = (sum((f - a) ** 2 for f, a in zip(expected, week["target_f"], strict=True)) / n) ** 0.5
    assert rmse_text == f"{rmse:.3f} °F"
    # the baselines' RMSE over the same hours, beside the model's
    for element, forecasts in (("live-persist", week["temperature_f"]),
                               ("live-yesterday", week["baselines_f"]["same_hour_yesterday"]),
                               ("live-linear", week["baselines_f"]["linear_ar"])):
        base = (sum((f - a) ** 2 for f, a in zip(forecasts, week["target_f"], strict=True))
                / n) ** 0.5
        assert driver.find_element(By.ID, element).text == f"{base:.3f} °F", element
    driver.set_window_size(1280, 800)
    shot(driver, "console-live.png")
    driver.set_window_size(1280, 1000)

    # -- server page: the console's live session, request and batch tables
    driver.get(server + "/#server")  # same document: the session stays open
    live_cell = f"#server-sessions tr[data-model='{MODEL}'] .live-count"
    wait_for(driver, "the live session on the server page",
             lambda d: texts(d, live_cell) == ["1"])
    wait_for(driver, "request rates", lambda d: any(
        t not in ("", "–") for t in texts(d, "#server-http tbody td:nth-child(5)")), timeout=8)
    batch_models = texts(driver, "#server-batches tbody td:first-child")
    assert MODEL in batch_models, batch_models
    shot(driver, "console-server.png")
    assert severe_console_messages(driver) == []

    # -- reset keeps the session and restarts the week; stop deletes the session
    driver.get(server + "/#live")
    assert chart(driver, "session") == sid
    Select(driver.find_element(By.ID, "live-speed")).select_by_value("1")
    driver.find_element(By.ID, "live-reset").click()
    wait_for(driver, "the reset", lambda d: points(d) == 0 and d.find_element(
        By.ID, "live-status").text == "reset")
    assert chart(driver, "session") == sid and session_status(server, sid) == 200
    driver.find_element(By.ID, "live-stop").click()
    wait_for(driver, "the DELETE on stop", lambda _: session_status(server, sid) == 404)
    assert chart(driver, "session") == ""

    # -- a server error is shown readably: the session deleted behind the page's back
    driver.find_element(By.ID, "live-play").click()
    wait_for(driver, "a new session", lambda d: points(d) >= 1)
    sid2 = chart(driver, "session")
    assert sid2 and sid2 != sid
    assert httpx.delete(f"{server}/v1/sessions/{sid2}", headers=AUTH).status_code == 204
    banner = wait_for(driver, "the error banner", lambda d: d.find_element(
        By.ID, "error").is_displayed() and d.find_element(By.ID, "error-text"))
    assert "stream step → 404" in banner.text and sid2 in banner.text, banner.text
    driver.find_element(By.ID, "live-stop").click()

    # -- the WebSocket carries the key (as a subprotocol): without it the handshake is refused
    driver.find_element(By.ID, "key-clear").click()
    driver.find_element(By.ID, "live-play").click()
    wait_for(driver, "the refused stream", lambda d: "could not open a stream for "
             f"{MODEL}" in d.find_element(By.ID, "error-text").text)
    assert chart(driver, "session") == ""
    use_key(driver, KEY)

    # -- leaving the page deletes the session (fetch keepalive on pagehide)
    driver.find_element(By.ID, "live-play").click()
    wait_for(driver, "a third session", lambda d: points(d) >= 1)
    sid3 = chart(driver, "session")
    assert sid3 not in (sid, sid2)
    driver.get("about:blank")
    wait_for(driver, "the DELETE on unload", lambda _: session_status(server, sid3) == 404)

    assert time.monotonic() - started < 80

