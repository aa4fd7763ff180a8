"""The CUDA image's Python side, checked where its base cannot be pulled and no GPU exists:
the CUDA builder stage's own install steps (deploy/docker/install-venv.sh with the `cuda`
extra and the `gpu` variant, exactly what the Dockerfile runs) against the onnxruntime-gpu
wheel, then `rnnserve serve` from that environment: `--device cuda` must fail with the
documented message naming the CUDA the wheel was built for, which must be the CUDA of the
Dockerfile's base image; `--device auto` must serve on the CPU."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT, LoggedProcess, free_port, weather_rows

INSTALL = ROOT / "deploy" / "docker" / "install-venv.sh"
# The installed environment must import its own copy of rnnserve, not a source tree named by
# the test run's PYTHONPATH (a worktree's, say).
CLEAN_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


@pytest.fixture(scope="module")
def gpu_venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A venv built by the CUDA builder's steps from a copy of what the Dockerfile copies."""
    work = tmp_path_factory.mktemp("cuda-build")
    src, venv = work / "src", work / "venv"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")

    def install(*step: str) -> None:
        done = subprocess.run(["sh", str(INSTALL), *step], cwd=src, capture_output=True,
                              text=True, timeout=900, check=False, env=CLEAN_ENV)
        assert done.returncode == 0, (f"install-venv.sh {step[0]}:\n{done.stdout[-3000:]}\n"
                                      f"{done.stderr[-3000:]}")

    # in the Dockerfile's order: pyproject.toml, the dependencies, then the code
    shutil.copy(ROOT / "pyproject.toml", src)
    install("deps", str(venv), "redis,cuda", "gpu")
    shutil.copytree(ROOT / "service", src / "service", ignore=ignore)
    shutil.copytree(ROOT / "export", src / "export", ignore=ignore)
    shutil.copytree(ROOT / "client", src / "client", ignore=ignore)
    install("project", str(venv))
    yield venv


def dockerfile_cuda_major() -> str:
    found = re.search(r"^ARG CUDA_IMAGE=nvidia/cuda:(\d+)\.", (ROOT / "Dockerfile").read_text(),
                      re.MULTILINE)
    assert found, "the Dockerfile names no nvidia/cuda base"
    return found.group(1)


def test_the_gpu_wheel_replaces_the_cpu_one_and_matches_the_base_images_cuda(
    gpu_venv: Path,
) -> None:
    probe = subprocess.run([str(gpu_venv / "bin" / "python"), "-c", """
import importlib.metadata as md, onnxruntime as ort
from onnxruntime.capi import build_and_package_info as info
names = {d.metadata["Name"].lower() for d in md.distributions()}
print("onnxruntime" in names, "onnxruntime-gpu" in names, "torch" in names)
print("CUDAExecutionProvider" in ort.get_available_providers())
print(info.cuda_version)
"""], capture_output=True, text=True, timeout=60, check=True, cwd="/", env=CLEAN_ENV)
    cpu_wheel, gpu_wheel, torch, cuda_provider, cuda_version = probe.stdout.split()
    assert (cpu_wheel, gpu_wheel, torch) == ("False", "True", "False"), probe.stdout
    assert cuda_provider == "True"
    assert cuda_version.split(".")[0] == dockerfile_cuda_major(), (
        f"onnxruntime-gpu is built for CUDA {cuda_version}; the Dockerfile's CUDA_IMAGE is "
        f"CUDA {dockerfile_cuda_major()}")


def test_device_cuda_without_a_gpu_fails_with_the_documented_message(gpu_venv: Path) -> None:
    done = subprocess.run(
        [str(gpu_venv / "bin" / "rnnserve"), "serve", "--device", "cuda", "--models",
         str(ROOT / "models"), "--host", "127.0.0.1", "--port", str(free_port()),
         "--grpc-port", "0"],
        capture_output=True, text=True, timeout=120, check=False, cwd="/", env=CLEAN_ENV)
    assert done.returncode == 2, done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("rnnserve serve: --device cuda: "), last
    assert f"CUDA {dockerfile_cuda_major()} and cuDNN 9" in last, last


def test_device_auto_without_a_gpu_serves_on_the_cpu(gpu_venv: Path, tmp_path: Path) -> None:
    port = free_port()
    server = LoggedProcess(
        [str(gpu_venv / "bin" / "rnnserve"), "serve", "--device", "auto", "--models",
         str(ROOT / "models"), "--host", "127.0.0.1", "--port", str(port), "--grpc-port", "0"],
        tmp_path / "auto.log", cwd=Path("/"))
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                if httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.proc.poll() is None, server.log()
            time.sleep(0.2)
        predict = httpx.post(f"{url}/v1/models/temperature-gru/predict",
                             json={"inputs": [weather_rows(1, temperature_f=48.2)]}, timeout=10)
        assert predict.status_code == 200, predict.text
    finally:
        server.stop()
    assert "falling back to CPU" in server.log()
    assert "provider=CPUExecutionProvider" in server.log()


def test_the_cuda_provider_runs_full_float32_unless_tf32_is_asked_for(gpu_venv: Path) -> None:
    """ONNX Runtime's CUDA provider uses TF32 by default, and then a GPU's outputs differ from
    the CPU's by about 1e-3 (seen on an H200); the server must ask for full float32 unless
    --cuda-tf32 says otherwise. Checked on what the engine hands ONNX Runtime, from the
    installed package with the GPU wheel (which offers the CUDA provider even with no GPU)."""
    probe = subprocess.run([str(gpu_venv / "bin" / "python"), "-c", """
import json
from rnnserve.engine.providers import choose_providers
from rnnserve.settings import Settings
default, asked = Settings(), Settings(cuda_tf32=True)
print(json.dumps([choose_providers("cuda", tf32=default.cuda_tf32),
                  choose_providers("auto", tf32=asked.cuda_tf32)]))
"""], capture_output=True, text=True, timeout=60, check=True, cwd="/", env=CLEAN_ENV)
    default, asked = json.loads(probe.stdout)
    assert default == [["CUDAExecutionProvider", {"use_tf32": "0"}], "CPUExecutionProvider"]
    assert asked == [["CUDAExecutionProvider", {"use_tf32": "1"}], "CPUExecutionProvider"]
