"""The container health check follows the server's real address: the server writes it to
`--address-file` once it listens, and deploy/docker/healthcheck.py (the image's HEALTHCHECK)
reads that file before RNNSERVE_HOST/RNNSERVE_PORT. So `docker run IMAGE --port 9000`, whose
flag the environment does not show, stays healthy. Real servers, the real script."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from rnnserve.address_file import bound_address

from tests.conftest import ROOT, LoggedProcess, ServerProcess, free_port

HEALTHCHECK = ROOT / "deploy" / "docker" / "healthcheck.py"


def healthcheck(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The image's health check script, run as the container runs it, with `env` on top of a
    clean RNNSERVE_ environment."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("RNNSERVE_")}
    return subprocess.run([sys.executable, str(HEALTHCHECK)], capture_output=True, text=True,
                          env={**base, **env}, timeout=30)


def dead_pid() -> int:
    """The id of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def wait_for_file(path: Path, proc: subprocess.Popen[bytes], log: Callable[[], str]
                  ) -> dict[str, object]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if path.exists():
            return dict(json.loads(path.read_text()))
        if proc.poll() is not None:
            raise RuntimeError(f"server exited {proc.returncode}: {log()}")
        time.sleep(0.05)
    raise TimeoutError(f"no address file after 60 s: {log()}")


@pytest.fixture
def moved_server(start_server: Callable[..., ServerProcess], tiny_repo: Path,
                 tmp_path: Path) -> Iterator[tuple[ServerProcess, Path]]:
    """A server on a port of its own (as `--port` after the image name would put it), its
    address file in a folder that does not exist yet (the server creates it)."""
    address = tmp_path / "run" / "rnnserve" / "address.json"
    yield start_server("--models", str(tiny_repo), "--address-file", str(address)), address


def test_health_check_follows_the_address_file_when_a_flag_moved_the_port(
        moved_server: tuple[ServerProcess, Path]) -> None:
    server, address = moved_server
    wrong = {"RNNSERVE_HOST": "0.0.0.0", "RNNSERVE_PORT": str(free_port())}  # the image's env
    content = json.loads(address.read_text())
    assert content == {"http": server.url, "grpc": None, "pid": server.proc.pid}

    followed = healthcheck({**wrong, "RNNSERVE_ADDRESS_FILE": str(address)})
    assert followed.returncode == 0, followed.stderr
    # the environment alone points at the wrong port: what the image did before
    assert healthcheck(wrong).returncode == 1

    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=30) == 0
    assert not address.exists()  # removed at a clean shutdown
    after = healthcheck({**wrong, "RNNSERVE_ADDRESS_FILE": str(address)})
    assert after.returncode == 1  # nothing listens any more: unhealthy, by the env's port


def test_port_zero_writes_the_real_port_and_the_grpc_address(tiny_repo: Path,
                                                             tmp_path: Path) -> None:
    address = tmp_path / "address.json"
    grpc_port = free_port()
    server = LoggedProcess([sys.executable, "-m", "rnnserve", "serve", "--models",
                            str(tiny_repo), "--host", "127.0.0.1", "--port", "0",
                            "--grpc-port", str(grpc_port), "--address-file", str(address)],
                           tmp_path / "server.log")
    try:
        content = wait_for_file(address, server.proc, server.log)
        http = str(content["http"])
        assert http.startswith("http://127.0.0.1:") and not http.endswith(":0")
        assert content["grpc"] == f"127.0.0.1:{grpc_port}"
        assert content["pid"] == server.proc.pid
        assert httpx.get(http + "/v2/health/live", timeout=10).status_code == 200
        checked = healthcheck({"RNNSERVE_PORT": "0", "RNNSERVE_ADDRESS_FILE": str(address)})
        assert checked.returncode == 0, checked.stderr
    finally:
        server.stop()
    assert server.proc.returncode == 0 and not address.exists()


def test_a_stale_address_file_is_passed_over_for_the_settings(
        start_server: Callable[..., ServerProcess], tiny_repo: Path, tmp_path: Path) -> None:
    """A file left by a crashed server names a process that is gone: the check uses
    RNNSERVE_HOST/RNNSERVE_PORT, which here point at a live server, and says why."""
    server = start_server("--models", str(tiny_repo))
    nowhere = f"http://127.0.0.1:{free_port()}"
    address = tmp_path / "address.json"
    env = {"RNNSERVE_PORT": str(server.port), "RNNSERVE_ADDRESS_FILE": str(address)}

    address.write_text(json.dumps({"http": nowhere, "grpc": None, "pid": dead_pid()}))
    stale = healthcheck(env)
    assert stale.returncode == 0, stale.stderr
    assert "stale" in stale.stderr

    # the same file naming a live process is trusted, so the check asks where it points
    address.write_text(json.dumps({"http": nowhere, "grpc": None, "pid": os.getpid()}))
    trusted = healthcheck(env)
    assert trusted.returncode == 1 and nowhere in trusted.stderr

    address.write_text("{not json")  # unreadable: the settings, and a word why
    broken = healthcheck(env)
    assert broken.returncode == 0 and "unreadable" in broken.stderr


def test_an_unwritable_address_file_is_a_warning_not_a_failure(
        start_server: Callable[..., ServerProcess], tiny_repo: Path, tmp_path: Path) -> None:
    """A read-only root file system without a writable /tmp: the server serves anyway."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    address = blocker / "address.json"  # its folder would have to be a file: cannot be made
    server = start_server("--models", str(tiny_repo), "--address-file", str(address))
    assert httpx.get(server.url + "/v2/health/ready", timeout=10).status_code == 200
    assert "cannot write the address file" in server.log()


@pytest.mark.parametrize(("family", "wildcard", "loopback"), [
    (socket.AF_INET, "0.0.0.0", "127.0.0.1"), (socket.AF_INET6, "::", "::1")])
def test_a_wildcard_address_is_written_as_loopback(family: socket.AddressFamily,
                                                   wildcard: str, loopback: str) -> None:
    """Bound, not listening: nothing can connect, but the socket has its real port."""
    try:
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError:
        pytest.skip(f"no {family.name} here")
    with sock:
        try:
            sock.bind((wildcard, 0))
        except OSError:
            pytest.skip(f"cannot bind {wildcard} here")
        assert bound_address([sock]) == (loopback, sock.getsockname()[1])
