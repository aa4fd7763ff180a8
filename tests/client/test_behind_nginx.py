"""Exactly once behind a load balancer: a stream of 2,000 readings through a real nginx (the
repository's template) to two rnnserve replicas on one Redis. One replica is SIGKILLed
mid-stream, comes back, and later the other is restarted; every output arrives once, in
order, equal to a stateless prediction of the whole sequence."""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from rnnserve.client import Client

from tests.client.conftest import ServerOnPort
from tests.client.test_restarts import READINGS, Feeder
from tests.conftest import LoggedProcess, free_port
from tests.ops.test_deploy_configs import nginx_cmd, tool, wait_http, write_nginx_conf
from tests.state.redis_server import RedisServer


class Balanced:
    """Two replicas on `redis` behind nginx; each replica can be killed and started again
    on its port."""

    def __init__(self, tmp: Path, redis: RedisServer, models: Path) -> None:
        self.tmp, self.args = tmp, ["--models", str(models), "--state-store", redis.url]
        self.ports = [free_port(), free_port()]
        self.replicas: list[ServerOnPort | None] = [None, None]
        self.starts = 0
        for i in range(2):
            self.start(i)
        (tmp / "nginx").mkdir()
        self.port = free_port()
        conf = write_nginx_conf(tmp / "nginx", f"127.0.0.1:{self.port}",
                                f"127.0.0.1:{free_port()}",
                                [f"127.0.0.1:{p}" for p in self.ports],
                                [f"127.0.0.1:{free_port()}" for _ in self.ports])
        self.nginx = LoggedProcess(nginx_cmd(tool("nginx"), tmp / "nginx", conf),
                                   tmp / "nginx" / "nginx.log")
        self.url = f"http://127.0.0.1:{self.port}"
        wait_http(self.url + "/lb/health", [self.nginx], timeout=20)

    def start(self, i: int) -> None:
        self.starts += 1
        server = ServerOnPort(self.args, self.tmp / f"replica-{i}-{self.starts}.log",
                              self.ports[i])
        server.wait_ready()
        self.replicas[i] = server

    def stop(self, i: int, sig: int = signal.SIGTERM) -> None:
        server = self.replicas[i]
        if server is not None:
            server.stop(sig)
        self.replicas[i] = None

    def close(self) -> None:
        self.nginx.stop()
        for i in range(2):
            self.stop(i)


@pytest.fixture
def balanced(tmp_path: Path, redis: RedisServer, tiny_repo: Path) -> Iterator[Balanced]:
    tool("nginx")  # skips without nginx
    cluster = Balanced(tmp_path, redis, tiny_repo)
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.mark.skipif(sys.platform != "linux", reason="nginx on loopback: Linux CI")
def test_a_stream_through_nginx_survives_a_killed_replica_and_a_restarted_one(
        balanced: Balanced) -> None:
    with Client(balanced.url) as client:
        width = client.model("tiny-lstm").input_size
        readings = np.random.default_rng(9).normal(size=(READINGS, width)).astype(np.float32)
        expected = client.predict("tiny-lstm", readings)
    feeder = Feeder(balanced.url, "tiny-lstm", readings)
    feeder.start()
    feeder.wait_for(500)
    balanced.stop(0, signal.SIGKILL)  # one replica dies with steps in flight
    feeder.wait_for(900)
    balanced.start(0)
    time.sleep(0.5)
    feeder.wait_for(1300)
    balanced.stop(1)  # later the other is restarted
    balanced.start(1)
    feeder.join(timeout=180)
    assert not feeder.is_alive() and feeder.error is None, feeder.error
    assert feeder.reconnects >= 1 and len(feeder.outputs) == READINGS
    np.testing.assert_allclose(np.concatenate(feeder.outputs), expected, atol=1e-4)
    with Client(balanced.url) as client:
        assert client.session(str(feeder.session_id)).steps == READINGS
