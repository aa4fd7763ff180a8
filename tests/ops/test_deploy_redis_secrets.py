"""The deployment files run Redis with a password and a memory bound: compose takes the
password from the environment (and refuses to start without one), Kubernetes from a Secret;
Redis runs `--maxmemory` with `noeviction`, so a full Redis refuses writes (rnnserve answers
503, tests/state/test_redis_full.py) instead of evicting sessions; no password is committed.
Checked on the files as the Docker Compose CLI resolves them and as Kubernetes reads them."""

from __future__ import annotations

import json
import re
from typing import Any

from tests.ops.test_deploy_configs import COMPOSE, K8S, k8s_documents
from tests.ops.test_deploy_tls_and_watcher import compose_config

PASSWORD = "5f1e0c9a-compose-test-pw"


def redis_flags(args: list[str]) -> dict[str, str]:
    """redis-server's `--name value` pairs."""
    return {a[2:]: b for a, b in zip(args, args[1:], strict=False) if a.startswith("--")}


def test_compose_requires_a_password_and_wires_it_everywhere() -> None:
    missing = compose_config(COMPOSE, RNNSERVE_REDIS_PASSWORD="")
    assert missing.returncode != 0 and "RNNSERVE_REDIS_PASSWORD" in missing.stderr
    result = compose_config(COMPOSE, RNNSERVE_REDIS_PASSWORD=PASSWORD)
    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]
    redis = services["redis"]
    flags = redis_flags(redis["command"])
    assert flags["requirepass"] == PASSWORD
    assert flags["maxmemory-policy"] == "noeviction"
    assert flags["maxmemory"] == "1gb"
    assert redis["environment"]["REDISCLI_AUTH"] == PASSWORD  # the health check authenticates
    assert redis["healthcheck"]["test"][1:] == ["redis-cli", "ping"]
    replicas = [s for n, s in services.items() if n.startswith("rnnserve-")]
    assert len(replicas) >= 2
    for service in replicas:
        assert service["environment"]["RNNSERVE_STATE_STORE"] == (
            f"redis://:{PASSWORD}@redis:6379/0")
    sized = compose_config(COMPOSE, RNNSERVE_REDIS_PASSWORD=PASSWORD,
                           RNNSERVE_REDIS_MAXMEMORY="4gb")
    assert redis_flags(json.loads(sized.stdout)["services"]["redis"]["command"])[
        "maxmemory"] == "4gb"


def secret_env(container: dict[str, Any]) -> dict[str, dict[str, str]]:
    """Each env var of `container` that comes from a Secret: its secretKeyRef."""
    return {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container.get("env", [])
            if "secretKeyRef" in e.get("valueFrom", {})}


def test_k8s_redis_and_pods_take_the_password_from_a_secret() -> None:
    docs = {(d["kind"], d["metadata"]["name"]): d for _, d in k8s_documents()}
    (redis,) = docs[("StatefulSet", "rnnserve-redis")]["spec"]["template"]["spec"][
        "containers"]
    secrets = secret_env(redis)
    assert secrets["REDIS_PASSWORD"] == {"name": "rnnserve-redis", "key": "password"}
    assert secrets["REDISCLI_AUTH"] == {"name": "rnnserve-redis", "key": "password"}
    flags = redis_flags(redis["args"])
    assert flags["requirepass"] == "$(REDIS_PASSWORD)"  # expanded by Kubernetes
    assert flags["maxmemory-policy"] == "noeviction"
    assert flags["appendfsync"] == "always"
    maxmemory = int(flags["maxmemory"].removesuffix("gb")) * 2**30
    limit = redis["resources"]["limits"]["memory"]
    assert limit.endswith("Gi") and 2 * maxmemory <= int(limit[:-2]) * 2**30  # fork room
    assert redis["resources"]["requests"]["memory"] == limit
    (claim,) = docs[("StatefulSet", "rnnserve-redis")]["spec"]["volumeClaimTemplates"]
    storage = claim["spec"]["resources"]["requests"]["storage"]
    assert storage.endswith("Gi") and int(storage[:-2]) * 2**30 >= 3 * maxmemory  # the AOF
    assert redis["readinessProbe"]["exec"]["command"] == ["redis-cli", "ping"]

    (pod,) = docs[("Deployment", "rnnserve")]["spec"]["template"]["spec"]["containers"]
    env = [e["name"] for e in pod["env"]]
    assert secret_env(pod)["REDIS_PASSWORD"] == {"name": "rnnserve-redis", "key": "password"}
    url = next(e["value"] for e in pod["env"] if e["name"] == "RNNSERVE_STATE_STORE")
    assert url == "redis://:$(REDIS_PASSWORD)@rnnserve-redis:6379/0"
    # Kubernetes expands $(VAR) only for variables defined earlier in the same list
    assert env.index("REDIS_PASSWORD") < env.index("RNNSERVE_STATE_STORE")
    config = docs[("ConfigMap", "rnnserve-config")]["data"]
    assert "RNNSERVE_STATE_STORE" not in config  # env would win anyway: one place only


def test_k8s_pod_memory_is_sized_for_100k_sessions() -> None:
    """The figures in deployment.yaml's comment come from bench/server_memory.py."""
    text = (K8S / "deployment.yaml").read_text()
    assert "bench.server_memory" in text and "100,000 live sessions" in text
    assert "bench.server_memory" in (K8S / "redis.yaml").read_text()
    docs = {(d["kind"], d["metadata"]["name"]): d for _, d in k8s_documents()}
    (pod,) = docs[("Deployment", "rnnserve")]["spec"]["template"]["spec"]["containers"]
    requests, limits = pod["resources"]["requests"], pod["resources"]["limits"]
    assert requests["memory"].endswith("Mi") and limits["memory"].endswith(("Mi", "Gi"))


def test_no_password_is_committed_in_the_deploy_files() -> None:
    texts = {p.name: p.read_text() for p in [COMPOSE, *K8S.glob("*.yaml")]}
    for name, text in texts.items():
        for match in re.finditer(r"redis://:([^@\s\"]*)@", text):
            assert match.group(1) in {"$(REDIS_PASSWORD)", "PASSWORD"} or match.group(
                1).startswith("${RNNSERVE_REDIS_PASSWORD:?"), (name, match.group(0))
        for match in re.finditer(r"requirepass\"?,\s*\"([^\"]*)\"", text):
            assert match.group(1).startswith(("$(", "${RNNSERVE_REDIS_PASSWORD:?")), name
    assert not any(d["kind"] == "Secret" for _, d in k8s_documents()), "created by the user"
