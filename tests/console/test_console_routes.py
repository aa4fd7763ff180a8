"""The console router in-process: the page, its fixed static files, the three report files of
loaded models (never a path from the request), and weeks.json matching the real data."""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from rnnserve.console import ASSETS, STATIC
from rnnserve.console import router as console_router

from tests.conftest import COMMITTED_MODELS

MODEL = "temperature-gru"


async def console_client(models: Path) -> AsyncIterator[httpx.AsyncClient]:
    from rnnserve.engine import Engine
    from rnnserve.http.app import create_app
    from rnnserve.settings import Settings

    engine = Engine(Settings(models=models, grpc_port=0))  # type: ignore[call-arg]
    engine.start()
    await engine.open()
    app = create_app(engine, manage_engine=False)
    if not any(getattr(r, "path", None) == "/" for r in app.routes):
        app.include_router(console_router)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://rnnserve.test") as client:
            yield client
    finally:
        await engine.aclose()
        engine.close()


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async for c in console_client(COMMITTED_MODELS):
        yield c


async def test_page_and_assets(client: httpx.AsyncClient) -> None:
    page = await client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for asset, media_type in ASSETS.items():
        assert f"/console/{asset}" in page.text or asset == "weeks.json"
        reply = await client.get(f"/console/{asset}")
        assert reply.status_code == 200, asset
        assert reply.headers["content-type"].split(";")[0] == media_type.split(";")[0]
        assert reply.content == (STATIC / asset).read_bytes()
    assert "http://" not in page.text and "https://" not in page.text  # nothing from a CDN


@pytest.mark.parametrize("path", [
    "/console/index.html", "/console/make_weeks.py", "/console/__init__.py",
    "/console/..%2F__init__.py", "/console/static%2Fconsole.js",
    f"/console/models/{MODEL}/model.onnx", f"/console/models/{MODEL}/model.json",
    f"/console/models/{MODEL}/..%2Fmodel.json", "/console/models/nope/forecast.png",
    "/console/models/..%2F..%2Fpyproject.toml/metrics.json",
])
async def test_only_fixed_files(client: httpx.AsyncClient, path: str) -> None:
    reply = await client.get(path)
    assert reply.status_code == 404
    assert reply.json()["error"]


async def test_report_files(client: httpx.AsyncClient) -> None:
    for name in ("temperature-gru", "temperature-lstm", "temperature-rnn"):
        folder = COMMITTED_MODELS / name
        for file, media_type in (("learning_curve.png", "image/png"),
                                 ("forecast.png", "image/png"),
                                 ("metrics.json", "application/json")):
            reply = await client.get(f"/console/models/{name}/{file}")
            assert reply.status_code == 200
            assert reply.headers["content-type"] == media_type
            assert reply.content == (folder / file).read_bytes()
    unknown = await client.get("/console/models/nope/forecast.png")
    assert "loaded models" in unknown.json()["error"]


async def test_report_of_numbered_versions_and_missing_files(tmp_path: Path) -> None:
    """models/<name>/<N>/model.onnx: the report files sit in the model's folder; a model
    without them gets a 404 that says why."""
    versioned = tmp_path / "versioned"
    (versioned / "3").mkdir(parents=True)
    shutil.copy(COMMITTED_MODELS / MODEL / "model.onnx", versioned / "3" / "model.onnx")
    shutil.copy(COMMITTED_MODELS / MODEL / "model.json", versioned / "model.json")
    shutil.copy(COMMITTED_MODELS / MODEL / "forecast.png", versioned / "forecast.png")
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(COMMITTED_MODELS / MODEL / "model.onnx", bare / "model.onnx")
    async for client in console_client(tmp_path):
        ok = await client.get("/console/models/versioned/forecast.png")
        assert ok.status_code == 200
        assert ok.content == (COMMITTED_MODELS / MODEL / "forecast.png").read_bytes()
        missing = await client.get("/console/models/bare/learning_curve.png")
        assert missing.status_code == 404
        assert "no learning_curve.png" in missing.json()["error"]


def test_weeks_file_matches_the_real_data() -> None:
    """static/weeks.json is what console_weeks writes from pvlib's observed weather today: real
    test weeks, each after its month's first day (the warm-up), with the baselines' forecasts."""
    pytest.importorskip("pvlib", reason="needs the train extra (pvlib)")
    from rnnserve.export import console_weeks as make_weeks

    shipped = json.loads((STATIC / "weeks.json").read_text())
    assert shipped == json.loads(json.dumps(make_weeks.build()))
    model = json.loads((COMMITTED_MODELS / MODEL / "model.json").read_text())
    assert shipped["features"] == [f["name"] for f in model["features"]]
    assert {w["id"] for w in shipped["cities"]} >= {
        f"greensboro-{m:02d}" for m in model["data"]["test_months"]}
    for week in shipped["cities"]:
        n = len(week["inputs"])
        assert n == 168 and len(week["warmup"]) == 24
        assert len(week["timestamps"]) == len(week["target_f"]) == n
        assert all(len(row) == len(shipped["features"]) for row in week["inputs"])
        assert [row[0] for row in week["inputs"]] == week["temperature_f"]
        assert week["target_f"][:-1] == week["temperature_f"][1:]  # next hour's temperature
        # the same hour yesterday: 24 rows before the target row (23 before this row)
        hours = [row[0] for row in week["warmup"]] + week["temperature_f"]
        assert week["baselines_f"]["same_hour_yesterday"] == hours[1 : n + 1]
        assert len(week["baselines_f"]["linear_ar"]) == n
