"""The TLS example and the replica watcher, checked without containers (the compose test,
tests/containers/test_compose_stack.py, runs both for real): the TLS servers render with the
templates and pass `nginx -t` with a throwaway certificate; deploy/compose/tls.yml loads with
the Docker Compose CLI and says what is missing without a certificate folder; the published
ports can be set; the watcher script is valid POSIX sh (shellcheck when installed) and, run
against a real nginx master, reloads it only when an address changed and every name resolves,
and counts a reload as done only once new workers serve; and nginx, with two of three replicas
dead, still sends every request to the live one."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import LoggedProcess, free_port
from tests.ops.test_deploy_configs import (
    COMPOSE,
    ROOT,
    nginx_cmd,
    tool,
    wait_http,
    write_nginx_conf,
)

TLS_OVERRIDE = ROOT / "deploy" / "compose" / "tls.yml"
TLS_SERVERS = ROOT / "deploy" / "nginx" / "tls.d" / "rnnserve-tls.conf"
WATCHER = ROOT / "deploy" / "nginx" / "entrypoint.d" / "40-rnnserve-watch-upstreams.sh"


def compose_config(*files: Path, **env: str) -> subprocess.CompletedProcess[str]:
    compose = tool("docker-compose")
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("COMPOSE_", "DOCKER_",
                                                                       "RNNSERVE_"))}
    command = [compose]
    for file in files:
        command += ["-f", str(file)]
    return subprocess.run([*command, "config", "--format", "json"], capture_output=True,
                          text=True, timeout=60, cwd=ROOT,
                          env={**clean, "RNNSERVE_REDIS_PASSWORD": "test-only-pw", **env})


def tls_nginx_conf(tmp: Path, with_certificate: bool = True) -> Path:
    """The templates rendered as in the container, tls.d/ and tls/ next to nginx.conf."""
    conf = write_nginx_conf(tmp, "127.0.0.1:1", "127.0.0.1:2", ["127.0.0.1:3"],
                            ["127.0.0.1:4"])
    (tmp / "tls.d").mkdir()
    shutil.copy(TLS_SERVERS, tmp / "tls.d" / TLS_SERVERS.name)
    (tmp / "tls").mkdir()
    if with_certificate:
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days",
                        "1", "-subj", "/CN=localhost", "-keyout", str(tmp / "tls" / "tls.key"),
                        "-out", str(tmp / "tls" / "tls.crt")], check=True, capture_output=True,
                       timeout=60)
    return conf


def test_deploy_tls_servers_pass_nginx_t(tmp_path: Path) -> None:
    nginx = tool("nginx")
    conf = tls_nginx_conf(tmp_path / "ok")
    result = subprocess.run(nginx_cmd(nginx, tmp_path / "ok", conf, "-T"), capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    dumped = result.stdout  # -T: the whole configuration, includes resolved
    for port in ("8443", "8444"):  # `http2 on;` would need nginx 1.25.1
        assert re.search(rf"listen {port} ssl http2;", dumped), port
    assert "tls.d/rnnserve-tls.conf" in dumped and "rnnserve/grpc-routes.conf" in dumped
    # Without the certificate the configuration is refused (the servers are really loaded).
    conf = tls_nginx_conf(tmp_path / "missing", with_certificate=False)
    refused = subprocess.run(nginx_cmd(nginx, tmp_path / "missing", conf, "-t"),
                             capture_output=True, text=True, timeout=30)
    assert refused.returncode != 0 and "tls.crt" in refused.stderr


def test_deploy_tls_compose_override_mounts_the_certificate_folder(tmp_path: Path) -> None:
    missing = compose_config(COMPOSE, TLS_OVERRIDE)
    assert missing.returncode != 0 and "RNNSERVE_TLS_DIR" in missing.stderr
    result = compose_config(COMPOSE, TLS_OVERRIDE, RNNSERVE_TLS_DIR=str(tmp_path),
                            RNNSERVE_HTTPS_PUBLISH="127.0.0.1:18443")
    assert result.returncode == 0, result.stderr
    nginx = json.loads(result.stdout)["services"]["nginx"]
    mounts = {v["target"]: v for v in nginx["volumes"]}
    assert mounts["/etc/nginx/tls"]["source"] == str(tmp_path)
    assert mounts["/etc/nginx/tls"]["read_only"] is True
    assert mounts["/etc/nginx/tls.d/rnnserve-tls.conf"]["source"] == str(TLS_SERVERS)
    assert "/etc/nginx/templates" in mounts  # the base file's mounts stay
    ports = {p["target"]: p for p in nginx["ports"]}
    assert ports[8443]["published"] == "18443" and ports[8443]["host_ip"] == "127.0.0.1"
    assert ports[8444]["published"] == "8444" and {8000, 8001} <= set(ports)


def test_deploy_compose_published_ports_can_be_set() -> None:
    result = compose_config(COMPOSE, RNNSERVE_HTTP_PUBLISH="127.0.0.1:18000",
                            RNNSERVE_GRPC_PUBLISH="18001")
    assert result.returncode == 0, result.stderr
    nginx = json.loads(result.stdout)["services"]["nginx"]
    ports = {p["target"]: (p.get("host_ip"), p["published"]) for p in nginx["ports"]}
    assert ports == {8000: ("127.0.0.1", "18000"), 8001: (None, "18001")}
    default = json.loads(compose_config(COMPOSE).stdout)["services"]["nginx"]
    assert {p["published"] for p in default["ports"]} == {"8000", "8001"}
    mounts = {v["target"]: v["source"] for v in default["volumes"]}
    assert mounts["/docker-entrypoint.d/40-rnnserve-watch-upstreams.sh"] == str(WATCHER)


def test_deploy_watcher_script_is_posix_sh() -> None:
    assert os.access(WATCHER, os.X_OK), "the nginx entrypoint runs only executable scripts"
    tracked = subprocess.run(["git", "ls-files", "-s", str(WATCHER.relative_to(ROOT))],
                             cwd=ROOT, capture_output=True, text=True, timeout=30).stdout
    assert not tracked or tracked.startswith("100755"), "git must keep it executable"
    checked = subprocess.run(["sh", "-n", str(WATCHER)], capture_output=True, text=True,
                             timeout=30)
    assert checked.returncode == 0, checked.stderr
    shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck is not installed (scripts/test.sh installs it)"
    for script in (WATCHER, ROOT / "deploy" / "docker" / "install-venv.sh"):
        linted = subprocess.run([shellcheck, "--shell=sh", str(script)], capture_output=True,
                                text=True, timeout=60)
        assert linted.returncode == 0, linted.stdout


def served_generation(port: int) -> str:
    """What the watcher test's nginx answers on a new connection: its configuration's name."""
    return httpx.get(f"http://127.0.0.1:{port}/", timeout=5, trust_env=False).text


def generation_conf(conf: Path, state: Path, port: int, generation: str, valid: bool) -> None:
    """A tiny nginx configuration whose answer names it; `valid=False` breaks its syntax."""
    conf.write_text(
        f"worker_processes 2;\npid {state}/nginx.pid;\nevents {{}}\n"
        f"http {{ access_log off; server {{ listen 127.0.0.1:{port}; "
        f"return 200 \"{generation}\"{';' if valid else ''} }} }}\n")


def test_deploy_watcher_reloads_when_an_address_changes_and_all_resolve(tmp_path: Path) -> None:
    """The script against a real nginx master, with a stand-in for `getent hosts` (a file of
    names): no reload without a change or while a name does not resolve; a reload the master
    refuses (it kept its old workers) is not logged as done and is sent again; one that takes
    is logged only once new workers take the connections, so a request sent right after the
    log line is answered by the new configuration. `nginx -s reload` is stood in for by the
    SIGHUP it sends, so that the master alone reads the broken configuration, as when a name
    resolves for the watcher but not for the master a moment later."""
    nginx = tool("nginx")
    bin_dir, hosts, calls = tmp_path / "bin", tmp_path / "hosts", tmp_path / "calls"
    prefix, state = tmp_path / "nginx", tmp_path / "nginx" / "state"
    for folder in (bin_dir, prefix / "logs", state):
        folder.mkdir(parents=True)
    conf, port = prefix / "nginx.conf", free_port()
    generation_conf(conf, state, port, "generation-1", valid=True)
    (bin_dir / "getent").write_text(
        f'#!/bin/sh\nawk -v n="$2" \'$1 == n {{ print $2 "  " $1; found = 1 }} '
        f'END {{ exit found ? 0 : 2 }}\' {hosts}\n')
    (bin_dir / "nginx").write_text(
        f'#!/bin/sh\necho "$@" >> {calls}\n[ "$*" = "-s reload" ] || exit 2\n'
        f'exec kill -HUP "$(cat {state}/nginx.pid)"\n')
    for fake in bin_dir.iterdir():
        fake.chmod(0o755)
    hosts.write_text("rnnserve-1 10.0.0.1\nrnnserve-2 10.0.0.2\n")
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}",
           "RNNSERVE_WATCH_INTERVAL_S": "0.1", "RNNSERVE_WATCH_RELOAD_WAIT_S": "1",
           "NGINX_STATE_DIR": str(state),
           "RNNSERVE_HTTP_SERVERS": "server rnnserve-1:8000 max_fails=3 fail_timeout=10s; "
                                    "server rnnserve-2:8000 max_fails=3 fail_timeout=10s;",
           "RNNSERVE_GRPC_SERVERS": "server rnnserve-1:8001; server 10.0.0.9:8001;"}
    log = tmp_path / "watcher.log"
    master = LoggedProcess(nginx_cmd(nginx, prefix, conf), tmp_path / "nginx.log")
    script = None
    try:
        wait_http(f"http://127.0.0.1:{port}/", [master], timeout=30)
        assert (state / "nginx.pid").exists() and served_generation(port) == "generation-1"
        with log.open("w") as stderr:  # the loop keeps stderr: a pipe would never reach EOF
            script = subprocess.Popen(["sh", str(WATCHER)], env=env, stdout=subprocess.PIPE,
                                      stderr=stderr, text=True, start_new_session=True)
        out, _ = script.communicate(timeout=30)
        assert script.returncode == 0, log.read_text()
        assert "watching rnnserve-1 rnnserve-2 every 0.1s" in out  # no IP literals

        def reloads_after(seconds: float) -> int:
            time.sleep(seconds)
            return calls.read_text().count("-s reload") if calls.exists() else 0

        def wait_for(text: str) -> None:
            deadline = time.monotonic() + 10
            while text not in log.read_text():
                assert time.monotonic() < deadline, f"{text!r} not in {log.read_text()!r}"
                time.sleep(0.02)

        assert reloads_after(0.6) == 0, "nothing changed"
        hosts.write_text("rnnserve-1 10.0.0.5\n")  # rnnserve-2 stopped: does not resolve
        assert reloads_after(0.6) == 0, "no reload while a name does not resolve"

        generation_conf(conf, state, port, "generation-2", valid=False)
        hosts.write_text("rnnserve-1 10.0.0.5\nrnnserve-2 10.0.0.2\n")
        wait_for("still serves from its old workers")
        assert "nginx reloaded" not in log.read_text()
        assert served_generation(port) == "generation-1"

        generation_conf(conf, state, port, "generation-2", valid=True)
        wait_for("nginx reloaded: rnnserve-1 10.0.0.5 ;rnnserve-2 10.0.0.2 ;")
        assert served_generation(port) == "generation-2"
        sent = reloads_after(0)
        assert sent >= 2, "the refused reload was sent again"
        assert reloads_after(0.6) == sent, "no reload once one took"
    finally:
        if script is not None:
            os.killpg(script.pid, signal.SIGTERM)  # the loop, in the script's session
        master.stop()


LIVE_REPLICA = """
import http.server, sys
class Live(http.server.BaseHTTPRequestHandler):
    def answer(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Length", "4")
        self.end_headers()
        self.wfile.write(b"live")
    do_GET = do_POST = answer
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Live).serve_forever()
"""
"""A stand-in replica: answers every GET and POST with 200 "live"."""


def test_deploy_nginx_tries_every_replica_before_giving_up(tmp_path: Path) -> None:
    """Two of three replicas dead (their ports refuse): every request, keyed or not, reaches
    the live one; with at most two tries, a request whose first two picks were dead got an
    error although a replica was alive."""
    nginx = tool("nginx")
    live, dead = free_port(), [free_port(), free_port()]
    servers = [f"127.0.0.1:{port}" for port in (*dead, live)]
    http_port = free_port()
    conf = write_nginx_conf(tmp_path / "nginx", f"127.0.0.1:{http_port}",
                            f"127.0.0.1:{free_port()}", servers, servers)
    replica = LoggedProcess([sys.executable, "-c", LIVE_REPLICA, str(live)],
                            tmp_path / "replica.log")
    balancer = LoggedProcess(nginx_cmd(nginx, tmp_path / "nginx", conf), tmp_path / "nginx.log")
    try:
        wait_http(f"http://127.0.0.1:{live}/", [replica], timeout=20)
        wait_http(f"http://127.0.0.1:{http_port}/lb/health", [balancer], timeout=20)
        with httpx.Client(base_url=f"http://127.0.0.1:{http_port}", timeout=30,
                          trust_env=False) as client:
            answers = [client.get("/v1/models") for _ in range(6)]
            answers += [client.post(f"/v1/sessions/s{n}/step", json={"inputs": [[0.0]]})
                        for n in range(12)]
        assert [(r.status_code, r.text) for r in answers] == [(200, "live")] * len(answers)
    finally:
        balancer.stop()
        replica.stop()
