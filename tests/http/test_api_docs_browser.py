"""The API docs pages work on a machine without internet: a real headless Chromium whose every
request but loopback fails loads /docs from a real server on the committed models, sees every
operation listed, runs "Try it out" on GET /v1/models and reads the model list in the response;
/redoc lists the operations too; neither page asks any other host for anything.

Needs Debian's chromium and chromium-driver and PyPI selenium (tests/chromium.py); skips with
the reason when they are missing. Screenshots go to test-artifacts/api-docs/."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.chromium import requested_urls, require_chromium, start_chromium
from tests.conftest import COMMITTED_MODELS, ROOT, ServerProcess, serving

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]

require_chromium()

from selenium.common.exceptions import TimeoutException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.wait import WebDriverWait  # noqa: E402

ARTIFACTS = ROOT / "test-artifacts" / "api-docs"
METHODS = ("get", "put", "post", "delete", "patch")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The real `rnnserve serve` on the committed models (keys off: "Try it out" sends none)."""
    with serving(["--models", str(COMMITTED_MODELS)],
                 tmp_path_factory.mktemp("api-docs") / "server.log") as proc:
        yield proc


@pytest.fixture(scope="module")
def offline_browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    driver = start_chromium(tmp_path_factory.mktemp("chromium-profile"), offline=True)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(driver: Any, what: str, condition: Any, timeout: float = 20) -> Any:
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.05).until(condition)
    except TimeoutException:
        shot(driver, "timeout.png")
        errors = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        pytest.fail(f"timed out waiting for {what}; browser errors: {errors}")


def shot(driver: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / name))


def documented_operations(url: str) -> set[tuple[str, str]]:
    """(method, path) of every operation /openapi.json lists."""
    paths = httpx.get(url + "/openapi.json", timeout=10).json()["paths"]
    return {(method, path) for path, item in paths.items() for method in item
            if method in METHODS}


def only_this_server(driver: Any, url: str) -> None:
    """Every request the page made since the last check went to the server under test."""
    elsewhere = [u for u in requested_urls(driver) if not u.startswith(url + "/")]
    assert elsewhere == [], f"the page asked other hosts: {elsewhere}"


def test_swagger_ui_lists_the_operations_and_tries_one_out_offline(
        server: ServerProcess, offline_browser: Any) -> None:
    driver, url = offline_browser, server.url
    operations = documented_operations(url)
    assert ("post", "/v1/models/{model}/predict") in operations
    requested_urls(driver)  # forget the browser's own start-up requests

    driver.get(url + "/docs")
    wait_for(driver, "every operation of /openapi.json listed", lambda d: len(
        d.find_elements(By.CSS_SELECTOR, ".opblock")) == len(operations))
    listed = {(block.get_attribute("class").split("opblock-")[1].split()[0],
               block.find_element(By.CSS_SELECTOR, ".opblock-summary-path")
               .get_attribute("data-path"))
              for block in driver.find_elements(By.CSS_SELECTOR, ".opblock")}
    assert listed == operations
    predict = driver.find_element(
        By.CSS_SELECTOR, ".opblock-post [data-path='/v1/models/{model}/predict']")
    assert predict.is_displayed()
    shot(driver, "swagger-ui.png")

    # -- Try it out: GET /v1/models, executed from the page, shows the served models
    models = [m["name"] for m in httpx.get(url + "/v1/models", timeout=10).json()["models"]]
    assert models
    block = driver.find_element(
        By.XPATH, "//div[contains(@class,'opblock-get')]"
                  "[.//*[@data-path='/v1/models']]")
    block.find_element(By.CSS_SELECTOR, ".opblock-summary-control").click()
    wait_for(driver, "the Try it out button", lambda _: block.find_elements(
        By.CSS_SELECTOR, ".try-out__btn"))[0].click()
    wait_for(driver, "the Execute button", lambda _: block.find_elements(
        By.CSS_SELECTOR, ".execute"))[0].click()
    status = wait_for(driver, "the live response", lambda _: block.find_elements(
        By.CSS_SELECTOR, ".live-responses-table tr.response .response-col_status"))[0]
    assert status.text.strip().startswith("200"), status.text
    body = block.find_element(
        By.CSS_SELECTOR, ".live-responses-table tr.response .highlight-code pre").text
    for name in models:
        assert f'"name": "{name}"' in body, body
    shot(driver, "swagger-ui-try-it-out.png")
    only_this_server(driver, url)
    assert not [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def test_redoc_lists_the_operations_offline(server: ServerProcess,
                                            offline_browser: Any) -> None:
    driver, url = offline_browser, server.url
    operations = documented_operations(url)
    requested_urls(driver)

    driver.get(url + "/redoc")
    wait_for(driver, "every operation of /openapi.json listed", lambda d: len(d.find_elements(
        By.CSS_SELECTOR, "[data-section-id*='/operation/']")) == len(operations))
    text = driver.find_element(By.TAG_NAME, "body").text
    assert "List the loaded models" in text and "/v1/models/{model}/predict" in text
    shot(driver, "redoc.png")
    only_this_server(driver, url)
