"""A throwaway Sentinel-managed Redis for tests: a master, two replicas and three sentinels,
every one a real process on a free loopback port, with its own directory (and, for a
sentinel, its own config file: Sentinel rewrites it as it learns). Two replicas, not one:
after a failover the promoted master must still have a replica.

The sentinels agree that the master is down after `down_after_ms` without an answer (quorum
2 of 3) and promote the replica with the most data."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from tests.conftest import free_port
from tests.state.redis_server import RedisServer, end_process

REDIS_SENTINEL = shutil.which("redis-sentinel")
MASTER_NAME = "rnnserve-test"


class SentinelProcess:
    """One redis-sentinel with its own config file, watching `master_port`."""

    def __init__(self, directory: Path, master_port: int, password: str,
                 down_after_ms: int, failover_timeout_ms: int) -> None:
        assert REDIS_SENTINEL is not None
        self.port = free_port()
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.config = directory / "sentinel.conf"
        self.config.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndaemonize no\ndir {directory}\n"
            f"logfile {directory / 'sentinel.log'}\n"
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} 2\n"
            f"sentinel auth-pass {MASTER_NAME} {password}\n"
            f"sentinel down-after-milliseconds {MASTER_NAME} {down_after_ms}\n"
            f"sentinel failover-timeout {MASTER_NAME} {failover_timeout_ms}\n"
            f"sentinel parallel-syncs {MASTER_NAME} 1\n")
        self.process: subprocess.Popen[bytes] | None = subprocess.Popen(
            [REDIS_SENTINEL, str(self.config)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self) -> None:
        end_process(self.process)
        self.process = None


class SentinelCluster:
    """`start()` brings up the master, its replicas in sync, and sentinels that see all of
    them and each other; `stop()` ends whatever still runs."""

    def __init__(self, directory: Path, *, password: str = "sentinel-test-secret",
                 down_after_ms: int = 1000, failover_timeout_ms: int = 5000) -> None:
        if REDIS_SENTINEL is None:
            raise RuntimeError("redis-sentinel is not installed")
        self.directory = directory
        self.password = password
        self.master = RedisServer(directory / "master", password=password)
        self.replicas: list[RedisServer] = []
        self.sentinels: list[SentinelProcess] = []
        self.down_after_ms, self.failover_timeout_ms = down_after_ms, failover_timeout_ms

    @property
    def url(self) -> str:
        """The --state-store URL: every sentinel, the master's name, DB 0."""
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://:{self.password}@{hosts}/{MASTER_NAME}/0"

    def start(self, timeout_s: float = 30.0) -> None:
        self.master.start()
        for i in range(2):
            replica = RedisServer(self.directory / f"replica-{i}", password=self.password,
                                  extra_args=("--replicaof", "127.0.0.1", str(self.master.port)))
            replica.start()
            self.replicas.append(replica)
        for i in range(3):
            self.sentinels.append(SentinelProcess(
                self.directory / f"sentinel-{i}", self.master.port, self.password,
                self.down_after_ms, self.failover_timeout_ms))
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._settled():
                return
            time.sleep(0.1)
        raise RuntimeError(f"the sentinel cluster did not settle in {timeout_s} s: "
                           f"{self.describe()}")

    def _settled(self) -> bool:
        """Both replicas linked to the master, and every sentinel sees 2 replicas and the 2
        other sentinels (so a failover has its quorum and a replica to promote)."""
        for replica in self.replicas:
            if self._info(replica.port).get("master_link_status") != "up":
                return False
        for sentinel in self.sentinels:
            state = self.sentinel_view(sentinel.port)
            if (state.get("num-slaves") != 2 or state.get("num-other-sentinels") != 2
                    or state.get("port") != self.master.port):
                return False
        return True

    def _info(self, port: int) -> dict[str, Any]:
        import redis

        try:
            with redis.Redis(port=port, password=self.password, socket_timeout=1) as client:
                return dict(client.info("replication"))
        except redis.RedisError:
            return {}

    def sentinel_view(self, port: int) -> dict[str, Any]:
        """What the sentinel on `port` says of the master ({} if it cannot be asked)."""
        import redis

        try:
            with redis.Redis(port=port, socket_timeout=1, decode_responses=True) as client:
                return dict(client.sentinel_master(MASTER_NAME))
        except redis.RedisError:
            return {}

    def master_port_now(self) -> int | None:
        """The master's port as the first sentinel that answers names it."""
        for sentinel in self.sentinels:
            state = self.sentinel_view(sentinel.port)
            if state:
                return int(state["port"])
        return None

    def wait_promoted(self, timeout_s: float = 30.0) -> RedisServer:
        """Until the sentinels name one of the replicas master and it says it is one."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            port = self.master_port_now()
            for replica in self.replicas:
                if port == replica.port and self._info(replica.port).get("role") == "master":
                    return replica
            time.sleep(0.1)
        raise RuntimeError(f"no replica promoted in {timeout_s} s: {self.describe()}")

    def describe(self) -> str:
        return "; ".join(f"sentinel {s.port}: {self.sentinel_view(s.port).get('port')}"
                         for s in self.sentinels)

    def stop(self) -> None:
        for sentinel in self.sentinels:
            sentinel.stop()
        for server in [self.master, *self.replicas]:
            server.stop()
