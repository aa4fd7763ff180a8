"""A throwaway redis-server on a free loopback port, for tests: no persistence unless asked
(aof), its own directory, stopped or killed (and restartable on the same port) by the test
that owns it."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

from tests.conftest import free_port

REDIS_SERVER = shutil.which("redis-server")


def end_process(process: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM, then SIGKILL if it has not exited within 10 s."""
    if process is None:
        return
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class RedisServer:
    """`start()` launches redis-server and waits until it answers PING; `stop()` ends it."""

    def __init__(self, directory: Path, port: int | None = None, *, aof: bool = False,
                 password: str | None = None, extra_args: tuple[str, ...] = ()) -> None:
        if REDIS_SERVER is None:
            raise RuntimeError("redis-server is not installed")
        self.directory = directory
        self.port = port or free_port()
        self.port_may_change = port is None  # until first started: then restarts keep it
        # aof: every write fsync'ed to the append-only file before Redis answers, so a killed
        # and restarted Redis has every acknowledged write
        self.persistence = (["--appendonly", "yes", "--appendfsync", "always"] if aof
                            else ["--appendonly", "no"])
        self.password = password  # requirepass and masterauth (a replica's), when given
        self.extra_args = extra_args  # e.g. ("--replicaof", "127.0.0.1", "6379")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The store URL rnnserve is given, with the password when there is one."""
        auth = f":{self.password}@" if self.password is not None else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 10.0) -> None:
        assert REDIS_SERVER is not None
        self.directory.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             *self.persistence, "--dir", str(self.directory), *self._auth(), *self.extra_args],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                if self.port_may_change:  # the free port was taken meanwhile: another one
                    self.port_may_change = False
                    self.port = free_port()
                    self.start(timeout_s)
                    return
                raise RuntimeError(f"redis-server exited with {self.process.returncode} on "
                                   f"port {self.port}")
            if self.ping():
                self.port_may_change = False
                return
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server on port {self.port} did not answer in {timeout_s} s")

    def _auth(self) -> list[str]:
        if self.password is None:
            return []
        return ["--requirepass", self.password, "--masterauth", self.password]

    def ping(self) -> bool:
        auth = f"AUTH {self.password}\r\n".encode() if self.password is not None else b""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(auth + b"PING\r\n")
                answer = b""
                while answer.count(b"\r\n") < (2 if auth else 1):  # AUTH's +OK, then PING's
                    chunk = s.recv(64)
                    if not chunk:
                        return False
                    answer += chunk
                return answer.endswith(b"+PONG\r\n")
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL: no shutdown, no final flush (what a crash or OOM kill does)."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def stop(self) -> None:
        end_process(self.process)
        self.process = None
