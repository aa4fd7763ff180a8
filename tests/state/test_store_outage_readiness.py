"""Readiness rides out a short state store outage and reports a long one; liveness never asks
the store. A real server (HTTP and gRPC) on a real redis-server that the test stops and starts
again on the same port (append-only file, so sessions survive):

- an outage shorter than --store-unready-after-s: /v2/health/ready stays 200 (the load
  balancer keeps the replica), while a session step is answered 503 with Retry-After, not
  applied, and the same step_id goes through once Redis is back;
- an outage longer than it: ready 503 naming the store and how long it has been unreachable,
  gRPC ServerReady false and grpc.health.v1 NOT_SERVING, /v2/health/live and ServerLive still
  true (no restart); then Redis back: ready again everywhere, and the session continues."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from rnnserve.grpc.generated import health_pb2, health_pb2_grpc, inference_pb2_grpc
from rnnserve.grpc.generated import inference_pb2 as pb

from tests.conftest import ServerProcess
from tests.state.redis_server import REDIS_SERVER, RedisServer

pytestmark = pytest.mark.skipif(REDIS_SERVER is None, reason="needs redis-server (apt-get)")
pytest.importorskip("redis", reason="needs redis-py (pip install .[redis])")

GRACE_S = 2.0
"""--store-unready-after-s in these tests: short, so that they stay fast."""

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
STEP = [[0.1, 0.2, 0.3]]


@pytest.fixture
def server(redis: RedisServer, tiny_repo: Path, tmp_path: Path) -> Iterator[ServerProcess]:
    proc = ServerProcess(["--models", str(tiny_repo), "--state-store", redis.url,
                          "--store-unready-after-s", str(GRACE_S)],
                         tmp_path / "server.log", grpc=True)
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()


class Probes:
    """What a load balancer, Kubernetes and a gRPC client ask of the server."""

    def __init__(self, server: ServerProcess) -> None:
        self.http = httpx.Client(base_url=server.url, timeout=10)
        self.channel = grpc.insecure_channel(server.grpc_url)
        self.health = health_pb2_grpc.HealthStub(self.channel)
        self.v2 = inference_pb2_grpc.GRPCInferenceServiceStub(self.channel)

    def close(self) -> None:
        self.http.close()
        self.channel.close()

    def ready(self) -> httpx.Response:
        return self.http.get("/v2/health/ready")

    def live(self) -> int:
        return self.http.get("/v2/health/live").status_code

    def grpc_ready(self) -> bool:
        return bool(self.v2.ServerReady(pb.ServerReadyRequest(), timeout=5).ready)

    def grpc_live(self) -> bool:
        return bool(self.v2.ServerLive(pb.ServerLiveRequest(), timeout=5).live)

    def grpc_health(self) -> Any:
        return self.health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status

    def step(self, sid: str, step_id: str) -> httpx.Response:
        return self.http.post(f"/v1/sessions/{sid}/step",
                              json={"inputs": STEP, "step_id": step_id})

    def step_until_applied(self, sid: str, step_id: str) -> dict[str, Any]:
        """The client's retry of a 503 with the same step_id (bounded)."""
        for _ in range(100):
            r = self.step(sid, step_id)
            if r.status_code != 503:
                assert r.status_code == 200, r.text
                return dict(r.json())
            time.sleep(0.1)
        raise AssertionError(f"step {step_id} still 503 after 100 tries: {r.text}")

    def until(self, what: Callable[[], bool], timeout_s: float = 30) -> float:
        """Poll `what` until it holds; the seconds it took."""
        start = time.monotonic()
        while time.monotonic() - start < timeout_s:
            if what():
                return time.monotonic() - start
            time.sleep(0.1)
        raise AssertionError(f"still not so after {timeout_s} s")


@pytest.fixture
def probes(server: ServerProcess) -> Iterator[Probes]:
    p = Probes(server)
    yield p
    p.close()


def test_a_short_store_outage_fails_requests_not_readiness(redis: RedisServer,
                                                           probes: Probes) -> None:
    sid = probes.http.post("/v1/models/tiny-gru/sessions").json()["session_id"]
    assert probes.step(sid, "one").status_code == 200

    redis.stop()
    stopped = time.monotonic()
    refused = probes.step(sid, "two")
    ready_during = [probes.ready().status_code, probes.grpc_ready(), probes.grpc_health()]
    live_during = [probes.live(), probes.grpc_live()]
    redis.start()
    outage_s = time.monotonic() - stopped

    assert refused.status_code == 503 and refused.headers["Retry-After"] == "1"
    assert "unreachable" in refused.json()["error"]
    assert "not applied" in refused.json()["error"]
    assert outage_s < GRACE_S, f"the outage took {outage_s:.1f} s: the test needs it shorter"
    assert ready_during == [200, True, SERVING]
    assert live_during == [200, True]

    # Redis is back: the refused step, retried with its step_id, is applied once
    assert probes.step_until_applied(sid, "two")["steps"] == 2
    assert probes.ready().status_code == 200


def test_a_long_store_outage_turns_readiness_not_liveness(redis: RedisServer, probes: Probes,
                                                          server: ServerProcess) -> None:
    sid = probes.http.post("/v1/models/tiny-gru/sessions").json()["session_id"]
    assert probes.step(sid, "one").status_code == 200
    redis.stop()
    stopped = time.monotonic()
    probes.until(lambda: probes.ready().status_code == 503)
    assert time.monotonic() - stopped >= GRACE_S  # never before the grace is over

    error = probes.ready().json()["error"]
    assert f"state store {redis.url} has been unreachable for" in error
    assert "--store-unready-after-s" in error
    assert probes.grpc_ready() is False and probes.grpc_health() == NOT_SERVING
    assert probes.live() == 200 and probes.grpc_live() is True  # no restart for this
    models = probes.http.get("/v1/models").json()["state_store"]
    assert models["url"] == redis.url and models["reachable"] is False
    assert models["unreachable_for_s"] >= GRACE_S
    metrics = probes.http.get("/metrics").text
    assert 'rnnserve_state_store_reachable{store="redis"} 0.0' in metrics
    refused = probes.step(sid, "two")
    assert refused.status_code == 503 and "Retry-After" in refused.headers

    redis.start()
    probes.until(lambda: probes.ready().status_code == 200)
    assert probes.grpc_ready() is True and probes.grpc_health() == SERVING
    assert probes.step_until_applied(sid, "two")["steps"] == 2
    assert probes.http.get("/v1/models").json()["state_store"]["reachable"] is True
    assert 'rnnserve_state_store_reachable{store="redis"} 1.0' in probes.http.get(
        "/metrics").text
    assert "is unreachable" in server.log() and "answers again" in server.log()


def test_no_grace_means_readiness_never_asks_the_store(
        redis: RedisServer, tiny_repo: Path, tmp_path: Path) -> None:
    """--store-unready-after-s 0: a store down for longer than any grace leaves readiness
    alone (for deployments whose traffic is mostly stateless predictions)."""
    proc = ServerProcess(["--models", str(tiny_repo), "--state-store", redis.url,
                          "--store-unready-after-s", "0"], tmp_path / "zero.log")
    try:
        proc.wait_ready()
        with httpx.Client(base_url=proc.url, timeout=10) as http:
            redis.stop()
            # the store is seen down (metrics), well past what a grace of 2 s would allow
            probe = 'rnnserve_state_store_reachable{store="redis"} 0.0'
            deadline = time.monotonic() + 30
            while probe not in http.get("/metrics").text and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(GRACE_S + 1.5)
            assert probe in http.get("/metrics").text
            assert http.get("/v2/health/ready").status_code == 200
            assert http.post("/v1/models/tiny-gru/predict",
                             json={"inputs": [STEP]}).status_code == 200
    finally:
        proc.stop()
