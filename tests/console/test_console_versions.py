"""The console's Models tab shows each model's versions, their state (a version that failed
to load says why) and live sessions, in a real headless Chromium against a real server on a
copy of the tiny models (issue 19, item 4). Skips like the other console tests without
chromium."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.chromium import require_chromium, start_chromium
from tests.conftest import serving

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]

require_chromium()

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.wait import WebDriverWait  # noqa: E402


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    driver = start_chromium(tmp_path_factory.mktemp("chromium-profile"))
    try:
        yield driver
    finally:
        driver.quit()


def test_models_tab_shows_versions_states_and_live_sessions(
        tiny_repo: Path, tmp_path: Path, browser: Any) -> None:
    shutil.copytree(tiny_repo / "tiny-lstm", tmp_path / "repo" / "tiny-lstm")
    (tmp_path / "repo" / "tiny-lstm" / "model.json").write_text(json.dumps({"max_batch": 8}))
    (tmp_path / "repo" / "tiny-lstm" / "2" / "model.json").write_text(
        json.dumps({"session_ttl_s": 0}))  # refused: version 2 is not served
    with serving(["--models", str(tmp_path / "repo")], tmp_path / "server.log") as server:
        for _ in range(3):
            made = httpx.post(server.url + "/v1/models/tiny-lstm/sessions", timeout=10)
            assert made.status_code == 201, made.text
        browser.get(server.url + "/#models")
        WebDriverWait(browser, 15, poll_frequency=0.05).until(lambda d: d.find_elements(
            By.CSS_SELECTOR, "article[data-model='tiny-lstm'] table.versions tbody tr"))
        card = browser.find_element(By.CSS_SELECTOR, "article[data-model='tiny-lstm']")
        rows = {r.get_attribute("data-version"): r
                for r in card.find_elements(By.CSS_SELECTOR, "table.versions tbody tr")}
        assert set(rows) == {"1", "2"}
        one, two = rows["1"], rows["2"]
        assert "READY" in one.find_element(By.CSS_SELECTOR, ".version-state").text
        assert one.find_element(By.CSS_SELECTOR, ".live-sessions").text == "3"
        assert "max_batch=8" in one.text
        refused = two.find_element(By.CSS_SELECTOR, ".version-state").text
        assert "UNAVAILABLE" in refused and "'session_ttl_s'" in refused
