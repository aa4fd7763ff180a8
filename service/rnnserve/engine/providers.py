"""Choose ONNX Runtime execution providers for `--device cpu|cuda|auto`.

`cuda` fails loudly when CUDA cannot be used; `auto` falls back to CPU and says so once."""

from __future__ import annotations

import logging

import onnxruntime as ort

log = logging.getLogger("rnnserve.providers")

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
# What onnxruntime-gpu from PyPI is built against (its `cuda` extra names
# nvidia-cuda-runtime~=13.0, its `cudnn` extra nvidia-cudnn-cu13~=9.0); the CUDA image's base
# (Dockerfile: CUDA_IMAGE) matches it. An installed GPU build says its own version instead.
DEFAULT_CUDA = "13"
CUDNN = "9"


def cuda_requirement() -> str:
    """The CUDA and cuDNN the installed onnxruntime needs, for messages that say what to
    install: the version a GPU build records about itself, else what PyPI's wheel needs."""
    try:
        from onnxruntime.capi import build_and_package_info as info
    except ImportError:  # pragma: no cover - every onnxruntime wheel ships it
        info = None
    version = str(getattr(info, "cuda_version", "") or DEFAULT_CUDA)
    return f"CUDA {version.split('.')[0]} and cuDNN {CUDNN}"


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
        f"an NVIDIA GPU and {cuda_requirement()}"
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
            f"(nvidia-smi) and are the {cuda_requirement()} libraries on the library path?"
        )
    if device == "auto" and used and used[0] != CUDA and CUDA in ort.get_available_providers():
        log.warning("device auto: falling back to CPU (ONNX Runtime created the session on %s; "
                    "is a GPU visible (nvidia-smi) and are the %s libraries on the library "
                    "path?)", used, cuda_requirement())
    return used[0] if used else CPU
