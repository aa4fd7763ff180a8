#!/usr/bin/env bash
# Install everything the tests need into .venv and run the whole suite (lint, types, tests).
# Works on a fresh machine: only python3 (3.11), pip and the package registries are assumed.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the suite starts for real: redis-server (state store, replicas) and
# redis-sentinel (the failover test's three sentinels), nginx (the
# load balancer config, checked and run), chromium and its driver (the console's browser test).
need=()
command -v redis-server >/dev/null || need+=(redis-server)
command -v redis-sentinel >/dev/null || need+=(redis-sentinel)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx)
command -v chromium >/dev/null || need+=(chromium)
command -v chromedriver >/dev/null || need+=(chromium-driver)
# Containers (tests/containers: the image built and started, the Compose stack up): podman with
# runc (crun fails on this kind of machine), netavark and aardvark-dns for networks where
# containers reach each other by name, iptables for netavark's firewall rules (Debian's podman
# only recommends it; without it every container start fails with "netavark: No such file or
# directory"), debootstrap for the Debian base images the tests make (no registry serves images
# here), openssl for the TLS test's certificate, shellcheck for the deploy scripts.
for tool in podman runc debootstrap netavark aardvark-dns iptables openssl shellcheck; do
    command -v "$tool" >/dev/null || [ -x "/usr/lib/podman/$tool" ] || need+=("$tool")
done
# Prometheus and promtool (tests/ops/test_prometheus_*.py: the scrape configs and rules checked,
# their unit tests run, a real Prometheus scraping a real server).
command -v prometheus >/dev/null && command -v promtool >/dev/null || need+=(prometheus)
if [ ${#need[@]} -gt 0 ]; then
    echo "== apt-get install ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

python3 -m venv .venv
# shellcheck disable=SC1091
. .venv/bin/activate
# Exactly this torch: a CPU wheel on this machine's disk (any other spec pulls a CUDA build).
python -m pip install -q "torch==2.13.0"
python -m pip install -q -e ".[train,redis,otel,dev]"

echo "== ruff";  ruff check .
echo "== mypy";  mypy
# Two processes (pytest-xdist), each test file whole on one (tests/parallel.py): most tests wait
# on the servers, Redis, browsers and containers they start, so two workers on two cores take
# about 60 % of one's time. Later arguments win: `bash scripts/test.sh -n 0` runs serially.
echo "== pytest"; python -m pytest -n 2 --dist loadfile "$@"
