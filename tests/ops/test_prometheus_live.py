"""A real Prometheus (the Debian package) scrapes a running rnnserve with the committed
Kubernetes scrape configuration and rules, and the test reads the recorded series, an alert and
prometheus-adapter's HPA queries back through Prometheus's HTTP API.

The server stands for one pod: Debian's Prometheus has no Kubernetes discovery, so a file of
targets gives the labels and annotations pod discovery would (tests/ops/prometheus_files.py),
and the committed relabelling turns them into the scrape address and the namespace and pod
labels the adapter needs. A second target, another component, must be dropped."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ROOT, LoggedProcess, ServerProcess, free_port, serving
from tests.ops.prometheus_files import adapter_queries, binary, pod_target, runnable_k8s_config

MODEL = "temperature-lstm"
MAX_BATCH = 64
MAX_SESSIONS = 20
SESSIONS = 19  # 95 % of the cap: RnnserveSessionsNearCap goes pending


class Prometheus:
    """`prometheus` on a loopback port with a temporary data folder, queried over HTTP."""

    def __init__(self, config: Path, data: Path, log: Path) -> None:
        self.url = f"http://127.0.0.1:{free_port()}"
        self.process = LoggedProcess(
            [binary("prometheus"), f"--config.file={config}", f"--storage.tsdb.path={data}",
             f"--web.listen-address={self.url.removeprefix('http://')}"], log)

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.proc.poll() is None, self.process.log()
            try:
                if httpx.get(self.url + "/-/ready", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"prometheus not ready: {self.process.log()}")

    def api(self, path: str, **params: str) -> Any:
        reply = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=5)
        body = reply.json()
        assert reply.status_code == 200 and body["status"] == "success", body
        return body["data"]

    def query(self, promql: str) -> dict[str, float]:
        """{the series' labels, as text: its value} now."""
        data = self.api("query", query=promql)
        return {",".join(f"{k}={v}" for k, v in sorted(s["metric"].items())):
                float(s["value"][1]) for s in data["result"]}

    def wait_for(self, promql: str, accept: Callable[[dict[str, float]], bool],
                 timeout: float = 45) -> dict[str, float]:
        """Query until `accept` takes the answer (rules run every second), at most `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            answer = self.query(promql)
            if accept(answer):
                return answer
            if time.monotonic() > deadline:
                raise AssertionError(f"{promql} still answers {answer} after {timeout}s\n"
                                     f"{self.process.log()[-3000:]}")
            time.sleep(0.5)


def only(answer: dict[str, float]) -> float:
    (value,) = answer.values()
    return value


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    log = tmp_path_factory.mktemp("rnnserve") / "server.log"
    with serving(["--models", str(ROOT / "models"), "--max-batch", str(MAX_BATCH),
                  "--max-sessions", str(MAX_SESSIONS)], log, grpc=True) as process:
        yield process


@pytest.fixture(scope="module")
def prometheus(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[Prometheus]:
    folder = tmp_path_factory.mktemp("prometheus")
    # Discovery's address is a container port (here the gRPC one); the annotation names HTTP's.
    targets = [pod_target(server.grpc_url, server.port, pod="rnnserve-0"),
               pod_target(f"127.0.0.1:{free_port()}", free_port(), pod="redis-0",
                          component="redis")]
    config = runnable_k8s_config(folder, targets, interval="1s")
    prom = Prometheus(config, folder / "data", folder / "prometheus.log")
    try:
        prom.wait_ready()
        yield prom
    finally:
        prom.process.stop()


@pytest.fixture(scope="module")
def traffic(server: ServerProcess, prometheus: Prometheus) -> None:
    """Sessions and steps, sent after Prometheus's first scrape (a rate needs the counter
    before and after) and spread over a few scrapes; one unknown session (404, not an error
    of the server's)."""
    prometheus.wait_for('up{job="rnnserve"}', lambda a: a != {} and only(a) == 1)
    with httpx.Client(base_url=server.url, timeout=10) as client:
        models = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
        step = {"inputs": [[0.5] * models[MODEL]["input_size"]]}  # one timestep
        ids = []
        for _ in range(SESSIONS):
            created = client.post(f"/v1/models/{MODEL}/sessions", json={})
            assert created.status_code == 201, created.text
            ids.append(created.json()["session_id"])
        for _ in range(3):
            for sid in ids[:5]:
                for _ in range(10):
                    assert client.post(f"/v1/sessions/{sid}/step", json=step).status_code == 200
            time.sleep(1.2)
        assert client.post("/v1/sessions/no-such-session/step", json=step).status_code == 404


def test_prometheus_scrapes_the_pod_by_its_annotations(
        traffic: None, prometheus: Prometheus) -> None:
    targets = prometheus.api("targets")
    (active,) = targets["activeTargets"]
    assert active["health"] == "up", active
    assert active["labels"]["namespace"] == "test" and active["labels"]["pod"] == "rnnserve-0"
    assert [t["discoveredLabels"]["__meta_kubernetes_pod_name"]
            for t in targets["droppedTargets"]] == ["redis-0"]


def test_recorded_series_come_back_through_the_http_api(
        traffic: None, prometheus: Prometheus) -> None:
    labels = f'{{job="rnnserve",model="{MODEL}"}}'
    rate = prometheus.wait_for(f"model:rnnserve_batch_rows:rate1m{labels}",
                               lambda a: a != {} and only(a) > 0)
    assert only(rate) < 1000  # 150 steps over a few seconds, spread over a minute's window
    # Each REST step ran alone: one row per batch, so the fill is 1 / --max-batch exactly.
    fill = prometheus.wait_for(f"model:rnnserve_batch_fill:ratio_5m{labels}", lambda a: a != {})
    assert only(fill) == pytest.approx(1 / MAX_BATCH)
    for p99 in ("model:rnnserve_batch_queue_seconds:p99_5m",
                "model:rnnserve_batch_run_seconds:p99_5m"):
        value = only(prometheus.wait_for(p99 + labels, lambda a: a != {}))
        assert 0 < value <= 10, (p99, value)
    step = prometheus.wait_for("route:rnnserve_http_step_duration_seconds:p99_5m",
                               lambda a: a != {})
    assert [k.split("route=")[1] for k in step] == ["/v1/sessions/{session_id}/step"]
    assert 0 < only(step) <= 10
    models = only(prometheus.query("count(rnnserve_model_loaded == 1)"))
    saturation = prometheus.wait_for("instance_model:rnnserve_batch_queue_saturation:ratio",
                                     lambda a: len(a) == models)  # one per served model
    assert set(saturation.values()) == {0.0}
    assert only(prometheus.wait_for("job:rnnserve_sessions_live:sum",
                                    lambda a: a != {} and only(a) == SESSIONS)) == SESSIONS
    cap = prometheus.wait_for("job:rnnserve_sessions_cap:ratio", lambda a: a != {})
    assert only(cap) == pytest.approx(SESSIONS / MAX_SESSIONS)
    # The 404 is the client's mistake: the server's error ratio stays 0, and present.
    errors = prometheus.wait_for("job:rnnserve_errors:ratio_rate5m", lambda a: a != {})
    assert only(errors) == 0


def test_rules_evaluate_cleanly_and_the_sessions_alert_goes_pending(
        traffic: None, prometheus: Prometheus) -> None:
    deadline = time.monotonic() + 45
    while True:
        alerts = prometheus.api("alerts")["alerts"]
        if any(a["labels"]["alertname"] == "RnnserveSessionsNearCap" for a in alerts):
            break
        assert time.monotonic() < deadline, alerts
        time.sleep(0.5)
    (near_cap,) = alerts
    assert near_cap["state"] == "pending"  # `for: 5m`; firing is promtool's to test
    groups = prometheus.api("rules")["groups"]
    assert {g["name"] for g in groups} == {"rnnserve.recording", "rnnserve.alerts"}
    for group in groups:
        for rule in group["rules"]:
            assert rule["health"] == "ok", (rule["name"], rule.get("lastError"))


def test_the_hpa_metrics_the_adapter_would_serve(traffic: None, prometheus: Prometheus) -> None:
    """prometheus-adapter's two queries, filled in as it fills them for the HPA's pods, answer
    one value per pod: its live sessions and its mean queue."""
    queries = adapter_queries("test", ["rnnserve-0"])
    sessions = prometheus.wait_for(queries["rnnserve_sessions_live"],
                                   lambda a: a != {} and only(a) == SESSIONS)
    assert list(sessions) == ["pod=rnnserve-0"]
    queue = prometheus.wait_for(queries["rnnserve_batch_queue_rows_avg1m"], lambda a: a != {})
    assert queue == {"pod=rnnserve-0": 0.0}
    assert prometheus.query(adapter_queries("other", ["rnnserve-0"])[
        "rnnserve_sessions_live"]) == {}, "the namespace matcher selects"
