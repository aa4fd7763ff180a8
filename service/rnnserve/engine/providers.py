"""Choose ONNX Runtime execution providers for `--device cpu|cuda|auto`.

`cuda` fails loudly when CUDA cannot be used; `auto` falls back to CPU and says so once."""

from __future__ import annotations

import logging

import onnxruntime as ort

log = logging.getLogger("rnnserve.providers")

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"


class DeviceUnavailable(RuntimeError):
    """`--device cuda` was asked for and cannot be had."""


def choose_providers(device: str) -> list[str]:
    """Providers to pass to every InferenceSession, best first."""
    if device == "cpu":
        return [CPU]
    available = ort.get_available_providers()
    if CUDA in available:
        return [CUDA, CPU]
    reason = (
        f"onnxruntime {ort.__version__} offers {available}, not {CUDA}: install "
        "onnxruntime-gpu (pip install '.[cuda]', in place of onnxruntime) on a machine with "
        "an NVIDIA GPU and CUDA 12"
    )
    if device == "cuda":
        raise DeviceUnavailable(f"--device cuda: {reason}")
    log.warning("device auto: falling back to CPU (%s)", reason)
    return [CPU]


def check_session_providers(device: str, session: ort.InferenceSession) -> str:
    """The provider a created session really runs on; `cuda` must not have fallen back."""
    used = session.get_providers()
    if device == "cuda" and (not used or used[0] != CUDA):
        raise DeviceUnavailable(
            f"--device cuda: ONNX Runtime created the session on {used}; is a GPU visible "
            "(nvidia-smi) and are the CUDA 12 / cuDNN 9 libraries on the library path?"
        )
    return used[0] if used else CPU
