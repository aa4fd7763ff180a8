"""Metric labels stay bounded whatever a client puts in its URLs: model names that are not
served, unmatched paths and unusual methods each count under one fixed label value, so
/metrics does not grow with the number of distinct names clients send."""

from __future__ import annotations

import secrets

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ServerProcess


def send_random_names(client: httpx.Client, count: int) -> list[str]:
    """`count` rounds of requests naming a model that does not exist, over the routes that
    take a model name (and an unmatched path); every one is a 4xx."""
    names = []
    for _ in range(count):
        name = "nosuch-" + secrets.token_hex(6)
        names.append(name)
        answers = [
            client.post(f"/v1/models/{name}/predict", json={"inputs": [[[0.1, 0.2, 0.3]]]}),
            client.post(f"/v2/models/{name}/infer", json={"inputs": []}),
            client.get(f"/v2/models/{name}"),
            client.post(f"/v1/models/{name}/sessions"),
            client.get(f"/{name}/anything"),
            client.request("PROPFIND", f"/v1/models/{name}"),
        ]
        assert all(400 <= r.status_code < 500 for r in answers), [
            (r.request.url, r.status_code) for r in answers]
    return names


def http_series(text: str) -> list[tuple[str, dict[str, str], float]]:
    """Every sample of the HTTP request families: (sample name, labels, value)."""
    return [(sample.name, sample.labels, sample.value)
            for family in text_string_to_metric_families(text)
            if family.name.startswith("rnnserve_http_request")
            for sample in family.samples]


def test_model_names_that_are_not_served_do_not_grow_the_metrics(
        server: ServerProcess) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as client:
        assert client.post("/v1/models/tiny-gru/predict",
                           json={"inputs": [[[0.1, 0.2, 0.3]]]}).status_code == 200
        client.get("/metrics")  # the scrape itself is counted from the next one on
        first = send_random_names(client, 10)  # 60 requests
        after_50 = client.get("/metrics").text
        later = send_random_names(client, 75)  # 450 more
        after_500 = client.get("/metrics").text

    for name in first[:5] + later[-5:]:
        assert name not in after_500
    series_50, series_500 = http_series(after_50), http_series(after_500)
    assert len(series_500) == len(series_50), "new series for new names"
    assert len(after_500) < len(after_50) * 1.05, (len(after_50), len(after_500))
    requests = [(labels, value) for name, labels, value in series_500
                if name == "rnnserve_http_requests_total"]
    assert {lab["model"] for lab, _ in requests} == {"", "tiny-gru", "_other"}
    assert {lab["method"] for lab, _ in requests} == {"GET", "POST", "_other"}
    routes = {lab["route"] for lab, _ in requests}
    assert "unmatched" in routes and all(r == "unmatched" or r.startswith("/") for r in routes)
    assert not any("nosuch" in r for r in routes)
    # The served model keeps its own label, and every refused request was counted.
    by_route_model: dict[tuple[str, str], float] = {}
    for lab, value in requests:
        key = (lab["route"], lab["model"])
        by_route_model[key] = by_route_model.get(key, 0) + value
    assert by_route_model[("/v1/models/{model}/predict", "tiny-gru")] == 1
    for route in ("/v1/models/{model}/predict", "/v2/models/{model}/infer",
                  "/v2/models/{model}", "/v1/models/{model}/sessions"):
        assert by_route_model[(route, "_other")] == 85, route
    assert by_route_model[("unmatched", "")] == 85
