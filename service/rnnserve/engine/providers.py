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


ProviderSpec = str | tuple[str, dict[str, str]]
"""A provider as InferenceSession takes it: a name, or a name and its options."""


def cuda_provider(tf32: bool) -> tuple[str, dict[str, str]]:
    """The CUDA provider with TF32 as asked. ONNX Runtime turns TF32 on by default, and then a
    GPU's outputs differ from the CPU's by about 1e-3 and a session's from predict's by up to
    1e-3 (measured on an H200); off, both agree within 1e-5 at no measurable cost for these
    models."""
    return CUDA, {"use_tf32": "1" if tf32 else "0"}


def choose_providers(device: str, *, tf32: bool = False) -> list[ProviderSpec]:
    """Providers to pass to every InferenceSession, best first."""
    if device == "cpu":
        return [CPU]
    available = ort.get_available_providers()
    if CUDA in available:
        return [cuda_provider(tf32), CPU]
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
