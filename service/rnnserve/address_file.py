"""The address file (`--address-file`): where this server really listens, for whoever has to
find it without knowing its flags, such as the container's health check.

A container's health check runs beside the server and used to read only RNNSERVE_HOST and
RNNSERVE_PORT; `docker run IMAGE --port 9000` (flags appended to the entrypoint) moved the
server and left the check knocking at the old port. So the server, once its listeners are
bound, writes what it bound (the real port, also for `--port 0`) as one small JSON object:

    {"http": "http://127.0.0.1:9000", "grpc": "127.0.0.1:9001", "pid": 12}

`grpc` is null when gRPC is off. A wildcard host (0.0.0.0, ::) is written as the loopback
address of its family, where a check inside the same host or container reaches it. The file is
replaced atomically (a temporary file in the same folder, then a rename), so a reader sees the
old object or the new one, never half of one, and removed at a clean shutdown; after a crash
it stays behind, and its `pid` lets a reader tell it is stale.

Writing it must never stop the server: its folder is created if missing, and a folder that
cannot be written (a read-only root file system without a writable /tmp) is logged as a
warning and otherwise ignored; the health check then falls back to the settings."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import socket
import tempfile
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger("rnnserve.address_file")

WILDCARD_LOOPBACK = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}
"""A wildcard listen address and the loopback address of its family."""


def reachable_host(host: str) -> str:
    """`host` as a client beside the server reaches it: a wildcard becomes loopback."""
    host = host.strip("[]")
    return WILDCARD_LOOPBACK.get(host, host)


def host_port(host: str, port: int) -> str:
    """host:port, an IPv6 literal in brackets."""
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        return f"{host}:{port}"
    return f"[{host}]:{port}" if literal.version == 6 else f"{host}:{port}"


def bound_address(sockets: Sequence[socket.socket]) -> tuple[str, int] | None:
    """(host, port) of the first listening TCP socket, with the port the system gave (the
    real one when 0 was asked for); None when there is none (a Unix socket, say)."""
    for sock in sockets:
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            name = sock.getsockname()
            return reachable_host(str(name[0])), int(name[1])
    return None


def addresses(http: tuple[str, int], grpc_port: int) -> dict[str, object]:
    """The file's object: the HTTP base URL, gRPC's host:port on the same host (or None
    when gRPC is off), and this process's id."""
    host, port = http
    return {"http": f"http://{host_port(host, port)}",
            "grpc": host_port(host, grpc_port) if grpc_port else None,
            "pid": os.getpid()}


class AddressFile:
    """One address file: `write` once the listeners are bound, `remove` at shutdown."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.written = False

    def write(self, content: dict[str, object]) -> bool:
        """Replace the file with `content` atomically; False (and a warning) if it cannot."""
        folder = self.path.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, temporary = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=folder)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as out:
                    json.dump(content, out)
                    out.write("\n")
                os.chmod(temporary, 0o644)  # mkstemp's 0600 would hide it from other users
                os.replace(temporary, self.path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(temporary)
                raise
        except OSError as exc:
            log.warning("cannot write the address file %s (%s): a health check reading it "
                        "falls back to RNNSERVE_HOST and RNNSERVE_PORT; point --address-file "
                        "at a writable place (e.g. under /tmp)", self.path, exc)
            return False
        self.written = True
        log.info("listening addresses written to %s: %s", self.path, content)
        return True

    def remove(self) -> None:
        """Remove the file if this process wrote it and it still names this process (another
        server may have taken the path over since)."""
        if not self.written:
            return
        self.written = False
        try:
            if json.loads(self.path.read_text(encoding="utf-8")).get("pid") != os.getpid():
                return
            self.path.unlink()
        except FileNotFoundError:
            return
        except (OSError, ValueError, AttributeError) as exc:
            log.warning("cannot remove the address file %s: %s", self.path, exc)
