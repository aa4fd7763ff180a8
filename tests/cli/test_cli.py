"""The `rnnserve serve` command: start-up log, devices, settings from flags and environment,
and a server that runs without torch."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from rnnserve.serve import load_settings

from tests.conftest import ROOT, ServerProcess


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rnnserve", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)


def test_serve_logs_one_line_per_model_and_reports_broken(
    start_server: Callable[..., ServerProcess], tiny_repo: Path
) -> None:
    server = start_server("--models", str(tiny_repo), "--device", "auto")
    log = server.log()
    assert "loaded tiny-lstm version 2: cell=lstm input=3 output=1" in log
    assert "provider=CPUExecutionProvider" in log
    assert "falling back to CPU" in log
    assert "model broken version 1 failed to load" in log
    assert ("model bi-gru version 1 serves predict only, no sessions or sequences: the model "
            "is bidirectional") in log
    r = httpx.get(server.url + "/v1/models/tiny-gru")
    assert r.json()["provider"] == "CPUExecutionProvider"


def test_device_cuda_fails_loudly_without_a_gpu(tiny_repo: Path) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this machine has CUDA")
    result = run_cli("serve", "--models", str(tiny_repo), "--device", "cuda", "--port", "0")
    assert result.returncode == 2
    assert "onnxruntime-gpu" in result.stderr


def test_bad_flags_exit_2_with_a_message(tiny_repo: Path) -> None:
    result = run_cli("serve", "--models", str(tiny_repo), "--port", "99999")
    assert result.returncode == 2 and "--port" in result.stderr
    result = run_cli("serve", "--models", "/no/such/dir")
    assert result.returncode == 2 and "not a directory" in result.stderr
    result = run_cli("serve", "--state-store", "mongodb://x", "--models", str(tiny_repo))
    assert result.returncode == 2 and "state-store" in result.stderr
    result = run_cli("serve", "--state-store", "redis://127.0.0.1:1/0", "--models",
                     str(tiny_repo), "--port", "0")
    assert result.returncode != 0 and "127.0.0.1:1" in result.stderr


def test_flags_override_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RNNSERVE_PORT", "9100")
    monkeypatch.setenv("RNNSERVE_MAX_SEQUENCES", "7")
    settings = load_settings(["--max-sequences", "9"])
    assert settings.port == 9100 and settings.max_sequences == 9
    assert load_settings(["--api-key", "k1"]).key_set() == {"k1"}
    monkeypatch.setenv("RNNSERVE_API_KEYS", "k2,k3")
    assert load_settings([]).key_set() == {"k2", "k3"}


def test_server_modules_do_not_import_torch() -> None:
    code = ("import sys, rnnserve.serve, rnnserve.http.app, rnnserve.engine; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=ROOT)
    assert result.returncode == 0, result.stderr


def test_help_lists_the_contract_flags() -> None:
    result = run_cli("serve", "--help")
    for flag in ("--models", "--host", "--port", "--grpc-port", "--device", "--state-store"):
        assert flag in result.stdout


def test_model_control_flags(tiny_repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--load-model repeats (and takes names separated by commas, as RNNSERVE_LOAD_MODEL does);
    it means something in explicit mode only, so elsewhere it is refused with the fix."""
    from rnnserve.serve import load_settings

    settings = load_settings(["--model-control", "explicit", "--load-model", "a",
                              "--load-model", "b,c"])
    assert settings.model_control == "explicit" and settings.load_model == ["a", "b", "c"]
    monkeypatch.setenv("RNNSERVE_LOAD_MODEL", "x, y")
    assert load_settings(["--model-control", "explicit"]).load_model == ["x", "y"]
    monkeypatch.delenv("RNNSERVE_LOAD_MODEL")
    result = run_cli("serve", "--models", str(tiny_repo), "--load-model", "tiny-gru")
    assert result.returncode == 2 and "--model-control explicit" in result.stderr
    result = run_cli("serve", "--models", str(tiny_repo), "--model-control", "sometimes")
    assert result.returncode == 2 and "none" in result.stderr and "poll" in result.stderr
