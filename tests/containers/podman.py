"""Podman for the container tests: the engine configured the way this kind of machine needs
(runc with the cgroupfs manager, no default ulimits), stand-in base images made from Debian's
archive (no registry serves images here), and the project's image built from the committed
Dockerfile with nothing changed but the base-image build argument.

Stand-ins are cached by the content of their folder under standins/, so a second run reuses
them and an edited Containerfile rebuilds; the project's image is always rebuilt (podman's
layer cache makes an unchanged rebuild take seconds), because a test must test what the
committed Dockerfile makes now."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STANDINS = Path(__file__).resolve().parent / "standins"
CONTAINERS_CONF = Path("/etc/containers/containers.conf")
ENGINE_CONF = """\
# Written by rnnserve's container tests (tests/containers/podman.py): crun and the systemd
# cgroup manager fail on this kind of machine (cgroup v1/v2 hybrid, setrlimit denied).
[containers]
default_ulimits = []
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
"""
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
DEBIAN_BASE = "localhost/rnnserve-standin/debian:bookworm"
IMAGE_PREFIX = "localhost/rnnserve-test"


def podman(*args: str, timeout: float = 120, check: bool = True
           ) -> subprocess.CompletedProcess[str]:
    """Run one podman command; on failure the error carries its output."""
    result = subprocess.run(["podman", *args], capture_output=True, text=True,
                            timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"podman {' '.join(args)} exited {result.returncode}:\n"
                           f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result


def ensure_engine() -> None:
    """podman usable here: the runtime settings in containers.conf (written when missing or
    different, which needs root, as CI and sessions here are), then a first `podman info`."""
    if shutil.which("podman") is None:
        raise RuntimeError("podman is not installed: scripts/test.sh installs it "
                           "(apt-get install podman runc debootstrap)")
    if not CONTAINERS_CONF.exists() or "runc" not in CONTAINERS_CONF.read_text():
        CONTAINERS_CONF.parent.mkdir(parents=True, exist_ok=True)
        CONTAINERS_CONF.write_text(ENGINE_CONF)
    podman("info", "--format", "{{.Host.OCIRuntime.Name}}", timeout=60)


def image_exists(tag: str) -> bool:
    return podman("image", "exists", tag, check=False).returncode == 0


def debian_base() -> str:
    """A minimal Debian 12 image made with debootstrap (about 25 s, once per machine), trimmed
    like the official slim images: no apt caches, documentation or manual pages."""
    if image_exists(DEBIAN_BASE):
        return DEBIAN_BASE
    if shutil.which("debootstrap") is None:
        raise RuntimeError("debootstrap is not installed: scripts/test.sh installs it")
    with tempfile.TemporaryDirectory(prefix="rnnserve-rootfs-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        subprocess.run(["debootstrap", "--variant=minbase", "bookworm", str(rootfs)],
                       check=True, capture_output=True, timeout=600)
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc",
                     "usr/share/man", "usr/share/info"):
            target = rootfs / junk
            if target.is_dir():
                for child in target.iterdir():
                    if child.is_dir() and not child.is_symlink():
                        shutil.rmtree(child)
                    elif child.name != "lock":
                        child.unlink()
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        imported = subprocess.run(["podman", "import", "-", DEBIAN_BASE], stdin=tar.stdout,
                                  capture_output=True, timeout=300, check=False)
        tar.wait()
        if imported.returncode != 0:
            raise RuntimeError(f"podman import failed: {imported.stderr.decode()[-2000:]}")
    return DEBIAN_BASE


def _folder_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def standin(name: str) -> str:
    """The stand-in image standins/<name>/ describes, built FROM the Debian base with the
    host's CA bundle in its context as host-ca.crt; tagged by the folder's content."""
    folder = STANDINS / name
    tag = f"localhost/rnnserve-standin/{name}:{_folder_digest(folder)}"
    if image_exists(tag):
        return tag
    base = debian_base()
    with tempfile.TemporaryDirectory(prefix=f"rnnserve-standin-{name}-") as tmp:
        context = Path(tmp) / "context"
        shutil.copytree(folder, context)
        shutil.copy(HOST_CA, context / "host-ca.crt")
        podman("build", "--network", "host", "--build-arg", f"BASE={base}", "-t", tag,
               "-f", str(context / "Containerfile"), str(context), timeout=900)
    return tag


@dataclass(frozen=True)
class BuiltImage:
    """The project's image as the committed Dockerfile built it."""

    tag: str
    build_s: float
    size_bytes: int
    base_size_bytes: int

    @property
    def own_bytes(self) -> int:
        """What the Dockerfile adds over its base image (the venv, the models, a user)."""
        return self.size_bytes - self.base_size_bytes


def image_size(tag: str) -> int:
    out = podman("image", "inspect", tag, "--format", "{{.Size}}").stdout.strip()
    return int(out)


def build_image(target: str = "runtime", *, base_arg: str = "PYTHON_IMAGE",
                base: str | None = None) -> BuiltImage:
    """`podman build` of the committed Dockerfile at `target`, with only the base image's
    build argument set (to the Python stand-in unless `base` names another image)."""
    base = base or standin("python")
    tag = f"{IMAGE_PREFIX}/rnnserve:{target}"
    started = time.monotonic()
    # --format docker: the OCI image format has no HEALTHCHECK, and podman's default drops it
    podman("build", "--format", "docker", "--network", "host",
           "--build-arg", f"{base_arg}={base}", "--target", target, "-t", tag,
           "-f", str(ROOT / "Dockerfile"), str(ROOT), timeout=1200)
    return BuiltImage(tag, time.monotonic() - started, image_size(tag), image_size(base))


def inspect(name: str) -> dict[str, object]:
    data = json.loads(podman("inspect", name).stdout)
    assert isinstance(data, list) and data, data
    first = data[0]
    assert isinstance(first, dict)
    return first


def healthcheck(name: str) -> bool:
    """One run of the container's own HEALTHCHECK (podman runs them from systemd timers, and
    there is no systemd here, so the tests drive them)."""
    return podman("healthcheck", "run", name, check=False, timeout=30).returncode == 0


def wait_healthy(name: str, timeout_s: float = 90) -> float:
    """Seconds until the container's HEALTHCHECK passes; raises with its logs if it never does."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if healthcheck(name):
            return time.monotonic() - started
        state = podman("inspect", name, "--format", "{{.State.Status}}", check=False)
        if state.stdout.strip() in {"exited", "stopped"}:
            break
        time.sleep(0.5)
    logs = podman("logs", "--tail", "60", name, check=False)
    raise AssertionError(f"{name} never became healthy:\n{logs.stdout}\n{logs.stderr}")


def remove(*names: str) -> None:
    """Remove containers whatever state they are in, with their anonymous volumes (the
    image declares /models one): tests clean up after themselves."""
    if names:
        podman("rm", "-f", "-v", "-t", "0", *names, check=False, timeout=60)


def env_without_proxies() -> dict[str, str]:
    """The test process's environment for clients of containers on loopback: no proxy may
    catch a request meant for 127.0.0.1."""
    env = dict(os.environ)
    for key in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy",
                "ALL_PROXY"):
        env.pop(key, None)
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost,::1"
    return env
