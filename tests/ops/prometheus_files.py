"""What the Prometheus tests share: where the committed files are, the Debian `prometheus`
package's binaries (skipped where missing, failed where CI=true: scripts/test.sh installs
them there), and the Kubernetes scrape configuration made runnable here (Debian builds
Prometheus without Kubernetes service discovery, so a file of targets stands in for it with
the same `__meta_kubernetes_*` labels the pod discovery would give)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT

PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
RULES = sorted((PROMETHEUS_DIR / "rules").glob("*.yml"))
RULE_TESTS = sorted((PROMETHEUS_DIR / "tests").glob("*_test.yml"))
COMPOSE_CONFIG = PROMETHEUS_DIR / "prometheus.yml"
K8S_CONFIG = PROMETHEUS_DIR / "prometheus-k8s.yml"
ADAPTER_CONFIG = PROMETHEUS_DIR / "adapter-config.yaml"


def binary(name: str) -> str:
    """The path of `promtool` or `prometheus`. Missing: skip, except under CI=true, where the
    suite's own installer was supposed to bring it (a silent skip there would hide the test)."""
    found = shutil.which(name)
    if found:
        return found
    if os.environ.get("CI") == "true":
        pytest.fail(f"{name} is not installed under CI=true: scripts/test.sh installs the "
                    "Debian prometheus package")
    pytest.skip(f"{name} is not installed (apt-get install prometheus; scripts/test.sh does)")


def pod_target(address: str, http_port: int, *, pod: str, namespace: str = "test",
               component: str = "server") -> dict[str, Any]:
    """One file_sd target group as Kubernetes pod discovery would describe a pod of
    deploy/k8s/deployment.yaml: its labels, its prometheus.io annotations, and `address`
    (discovery gives one target per container port; the annotation picks the HTTP one)."""
    return {"targets": [address], "labels": {
        "__meta_kubernetes_namespace": namespace,
        "__meta_kubernetes_pod_name": pod,
        "__meta_kubernetes_pod_label_app_kubernetes_io_name": "rnnserve",
        "__meta_kubernetes_pod_label_app_kubernetes_io_component": component,
        "__meta_kubernetes_pod_annotation_prometheus_io_scrape": "true",
        "__meta_kubernetes_pod_annotation_prometheus_io_port": str(http_port),
        "__meta_kubernetes_pod_annotation_prometheus_io_path": "/metrics",
    }}


def runnable_k8s_config(folder: Path, targets: list[dict[str, Any]],
                        interval: str = "15s") -> Path:
    """prometheus-k8s.yml with its pod discovery replaced by a file of `targets`, the rules
    named by absolute path, and `interval` for scrapes and rule evaluation; written into
    `folder`, which is returned with the config's path."""
    config: dict[str, Any] = yaml.safe_load(K8S_CONFIG.read_text())
    config["global"] = {"scrape_interval": interval, "evaluation_interval": interval}
    config["rule_files"] = [str(path) for path in RULES]
    (job,) = config["scrape_configs"]
    assert job.pop("kubernetes_sd_configs") == [{"role": "pod"}]
    targets_file = folder / "pods.json"
    targets_file.write_text(json.dumps(targets))
    job["file_sd_configs"] = [{"files": [str(targets_file)], "refresh_interval": "1s"}]
    path = folder / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def adapter_queries(namespace: str, pods: list[str]) -> dict[str, str]:
    """Each prometheus-adapter rule's metricsQuery, filled in as the adapter fills it for a
    Pods metric of `pods`: {the metric's name as the HPA asks for it: PromQL}."""
    rules = yaml.safe_load(ADAPTER_CONFIG.read_text())["rules"]
    queries = {}
    for rule in rules:
        series = rule["name"]["matches"].strip("^$")
        matchers = f'namespace="{namespace}",pod=~"{"|".join(pods)}"'
        queries[rule["name"]["as"]] = (rule["metricsQuery"]
                                       .replace("<<.Series>>", series)
                                       .replace("<<.LabelMatchers>>", matchers)
                                       .replace("<<.GroupBy>>", "pod"))
    return queries
