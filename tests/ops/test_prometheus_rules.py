"""The Prometheus files of deploy/prometheus, checked by Prometheus's own tool: `promtool check
config` on both scrape configurations, `promtool check rules` on the rules, `promtool test
rules` on their unit tests (deploy/prometheus/tests), and how they fit the Compose stack, the
Kubernetes manifests and the HPA. tests/ops/test_prometheus_live.py runs them for real."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT
from tests.ops.prometheus_files import (
    ADAPTER_CONFIG,
    COMPOSE_CONFIG,
    K8S_CONFIG,
    PROMETHEUS_DIR,
    RULE_TESTS,
    RULES,
    binary,
    pod_target,
    runnable_k8s_config,
)

K8S = ROOT / "deploy" / "k8s"


def promtool(*args: str, cwd: Path = PROMETHEUS_DIR) -> subprocess.CompletedProcess[str]:
    return subprocess.run([binary("promtool"), *args], capture_output=True, text=True,
                          timeout=60, cwd=cwd)


def k8s_doc(file: str, kind: str) -> dict[str, Any]:
    doc: dict[str, Any] = next(d for d in yaml.safe_load_all((K8S / file).read_text())
                               if d and d["kind"] == kind)
    return doc


def test_promtool_checks_the_compose_config_and_its_rules() -> None:
    result = promtool("check", "config", COMPOSE_CONFIG.name)
    assert result.returncode == 0, result.stdout + result.stderr
    # The config's rule_files glob (relative to the config) finds every committed rule file.
    for path in RULES:
        assert f"Checking {path.relative_to(PROMETHEUS_DIR)}" in result.stdout


def test_promtool_checks_the_kubernetes_config(tmp_path: Path) -> None:
    """Debian's Prometheus has no Kubernetes discovery, so the check runs on the same file with
    a file of targets in its place (the relabelling, checked here, is the same); the live test
    runs that relabelling against a real server."""
    config = runnable_k8s_config(tmp_path, [pod_target("10.0.0.5:8001", 8000, pod="p")])
    result = promtool("check", "config", str(config))
    assert result.returncode == 0, result.stdout + result.stderr
    original = yaml.safe_load(K8S_CONFIG.read_text())
    assert original["rule_files"] == yaml.safe_load(COMPOSE_CONFIG.read_text())["rule_files"]


def test_promtool_checks_the_rules_and_refuses_a_broken_one(tmp_path: Path) -> None:
    result = promtool("check", "rules", *map(str, RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(RULES) == 2
    broken = tmp_path / "broken.yml"
    recording = PROMETHEUS_DIR / "rules" / "rnnserve-recording.yml"
    broken.write_text(recording.read_text().replace("rate(rnnserve_batch_rows_sum[1m])",
                                                   "rate(rnnserve_batch_rows_sum[1m)", 1))
    assert promtool("check", "rules", str(broken)).returncode != 0


def test_promtool_unit_tests_of_the_rules_pass() -> None:
    assert {p.name for p in RULE_TESTS} == {"recording_test.yml", "alerts_test.yml"}
    result = promtool("test", "rules", *(str(p.relative_to(PROMETHEUS_DIR))
                                         for p in RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_rule_has_a_unit_test() -> None:
    names = []
    for path in RULES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            names += [rule.get("record") or rule["alert"] for rule in group["rules"]]
    tested = "\n".join(p.read_text() for p in RULE_TESTS)
    untested = [n for n in names if not re.search(rf"(expr|alertname): {re.escape(n)}\n",
                                                  tested)]
    assert not untested, f"rules without a promtool test: {untested}"


def test_promtool_unit_tests_fail_on_a_wrong_expectation(tmp_path: Path) -> None:
    """The unit tests have teeth: one expected value off by a thousandth fails the run."""
    (tmp_path / "tests").mkdir()
    shutil.copytree(PROMETHEUS_DIR / "rules", tmp_path / "rules")
    text = (PROMETHEUS_DIR / "tests" / "recording_test.yml").read_text()
    assert "value: 0.375" in text
    (tmp_path / "tests" / "wrong_test.yml").write_text(text.replace("value: 0.375",
                                                                    "value: 0.376"))
    result = promtool("test", "rules", "tests/wrong_test.yml", cwd=tmp_path)
    assert result.returncode != 0
    assert "model:rnnserve_batch_fill:ratio_5m" in result.stdout + result.stderr


def test_compose_prometheus_is_off_by_default_and_scrapes_every_replica() -> None:
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    prometheus = services["prometheus"]
    assert prometheus["profiles"] == ["monitoring"], "off unless --profile monitoring"
    assert "./deploy/prometheus:/etc/prometheus:ro" in prometheus["volumes"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    replicas = sorted(n for n in services if n.startswith("rnnserve-"))
    (job,) = yaml.safe_load(COMPOSE_CONFIG.read_text())["scrape_configs"]
    assert job["job_name"] == "rnnserve"  # the alerts' up{job="rnnserve"}
    (static,) = job["static_configs"]
    assert sorted(static["targets"]) == [f"{n}:8000" for n in replicas], (
        "every replica scraped directly (not through nginx)")


def test_kubernetes_config_keeps_the_pods_the_deployment_makes() -> None:
    """The relabelling keys on what deploy/k8s/deployment.yaml puts on its pods."""
    template = k8s_doc("deployment.yaml", "Deployment")["spec"]["template"]
    labels, annotations = template["metadata"]["labels"], template["metadata"]["annotations"]
    (container,) = template["spec"]["containers"]
    http = next(p for p in container["ports"] if p["name"] == "http")
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(http["containerPort"])
    (job,) = yaml.safe_load(K8S_CONFIG.read_text())["scrape_configs"]
    assert job["job_name"] == "rnnserve"
    keep = next(r for r in job["relabel_configs"] if r.get("regex") == "rnnserve;server")
    assert [labels["app.kubernetes.io/name"], labels["app.kubernetes.io/component"]] == [
        "rnnserve", "server"]
    assert keep["source_labels"] == ["__meta_kubernetes_pod_label_app_kubernetes_io_name",
                                     "__meta_kubernetes_pod_label_app_kubernetes_io_component"]


def test_hpa_scales_on_sessions_and_queue_depth_through_the_adapter() -> None:
    """Beside CPU, the HPA asks for the two Pods metrics prometheus-adapter serves, by the
    names the adapter gives them (a misspelt one would leave the HPA without it)."""
    hpa = k8s_doc("hpa.yaml", "HorizontalPodAutoscaler")
    metrics = hpa["spec"]["metrics"]
    assert metrics[0] == {"type": "Resource", "resource": {"name": "cpu", "target": {
        "type": "Utilization", "averageUtilization": 70}}}
    pods = {m["pods"]["metric"]["name"]: m["pods"]["target"] for m in metrics[1:]}
    assert all(m["type"] == "Pods" for m in metrics[1:])
    assert pods == {"rnnserve_sessions_live": {"type": "AverageValue", "averageValue": "10k"},
                    "rnnserve_batch_queue_rows_avg1m": {"type": "AverageValue",
                                                        "averageValue": "128"}}
    rules = yaml.safe_load(ADAPTER_CONFIG.read_text())["rules"]
    assert {r["name"]["as"] for r in rules} == set(pods)
    for rule in rules:
        assert rule["resources"]["overrides"] == {"namespace": {"resource": "namespace"},
                                                  "pod": {"resource": "pod"}}
        assert set(re.findall(r"<<\.(\w+)>>", rule["metricsQuery"])) == {
            "Series", "LabelMatchers", "GroupBy"}
        assert rule["seriesQuery"].startswith(rule["name"]["matches"].strip("^$") + "{")


def test_prometheus_kustomization_builds_valid_configmaps() -> None:
    """deploy/prometheus/kustomization.yaml: every file it names exists, and (where kubectl is
    installed) what it builds are ConfigMaps valid for the Kubernetes versions we support."""
    kustomization = yaml.safe_load((PROMETHEUS_DIR / "kustomization.yaml").read_text())
    named = [f.split("=")[-1] for g in kustomization["configMapGenerator"] for f in g["files"]]
    assert sorted(named) == sorted(["prometheus-k8s.yml", "adapter-config.yaml",
                                    *(str(p.relative_to(PROMETHEUS_DIR)) for p in RULES)])
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: the files were checked, the build was not")
    built = subprocess.run([kubectl, "kustomize", str(PROMETHEUS_DIR)], capture_output=True,
                           text=True, timeout=60)
    assert built.returncode == 0, built.stderr
    docs = [d for d in yaml.safe_load_all(built.stdout) if d]
    assert {d["metadata"]["name"] for d in docs} == {
        "rnnserve-prometheus", "rnnserve-prometheus-rules", "rnnserve-prometheus-adapter"}
    kv = pytest.importorskip("kubernetes_validate")
    for doc in docs:
        kv.validate(doc, "1.30.0", strict=True)
