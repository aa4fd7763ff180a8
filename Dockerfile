# syntax=docker/dockerfile:1
#
# rnnserve images (docs/deploy.md).
#
#   docker build -t rnnserve .                                 CPU image (the default target)
#   docker build --target cuda -t rnnserve:cuda .              NVIDIA GPU image (onnxruntime-gpu)
#
# Both images: a virtual environment built in a builder stage and copied into a runtime stage
# without compilers or pip caches, no torch (the server never imports it), the committed models
# baked in at /models (mount your own repository over it), a non-root user, a HEALTHCHECK on
# /v2/health/ready, and settings from RNNSERVE_* environment variables.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
# onnxruntime-gpu from PyPI is built for CUDA 13 and cuDNN 9 (its `cuda`/`cudnn` extras name
# nvidia-cuda-runtime~=13.0 and nvidia-cudnn-cu13~=9.0); the base must provide both.
ARG CUDA_IMAGE=nvidia/cuda:13.0.1-cudnn-runtime-ubuntu24.04


# ---------------------------------------------------------------------------------------------
# CPU builder: the server and its runtime dependencies (onnxruntime CPU, redis client) in a venv.
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
# binutils for `strip`: the compiled extensions of some wheels keep their symbol tables (uvloop's
# alone is 13 MB); stripped they load and run the same. Only this stage has it.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends binutils \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# The install steps live in one script (deploy/docker/install-venv.sh) that the CUDA builder and
# a test run too. Dependencies first (from pyproject.toml only), so that editing the code does
# not reinstall them; then the package, checked by importing it from outside /src and trimmed
# of pip, setuptools and test data.
COPY deploy/docker/install-venv.sh /usr/local/bin/rnnserve-install-venv
COPY pyproject.toml ./
RUN rnnserve-install-venv deps /opt/rnnserve redis
COPY service ./service
COPY export ./export
COPY client ./client
RUN rnnserve-install-venv project /opt/rnnserve


# ---------------------------------------------------------------------------------------------
# CUDA builder: the same venv against the CUDA image's Python, with onnxruntime-gpu *instead of*
# the CPU onnxruntime wheel (both install the `onnxruntime` module; only one may be present).
FROM ${CUDA_IMAGE} AS cuda-builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DEBIAN_FRONTEND=noninteractive
# Ubuntu's own python3 (3.12 on 24.04); patch versions are not pinned because the archive
# drops superseded ones, which would break every rebuild.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv binutils \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY deploy/docker/install-venv.sh /usr/local/bin/rnnserve-install-venv
COPY pyproject.toml ./
RUN rnnserve-install-venv deps /opt/rnnserve redis,cuda gpu
COPY service ./service
COPY export ./export
COPY client ./client
RUN rnnserve-install-venv project /opt/rnnserve


# ---------------------------------------------------------------------------------------------
# CUDA runtime: `docker run --gpus all rnnserve:cuda` (RNNSERVE_DEVICE=cuda fails loudly when no
# GPU is visible; set RNNSERVE_DEVICE=auto to fall back to the CPU).
FROM ${CUDA_IMAGE} AS cuda
ENV DEBIAN_FRONTEND=noninteractive
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 rnnserve \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin rnnserve
COPY --from=cuda-builder /opt/rnnserve /opt/rnnserve
COPY deploy/docker/healthcheck.py /usr/local/bin/rnnserve-healthcheck
COPY models /models
ENV PATH=/opt/rnnserve/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    RNNSERVE_MODELS=/models \
    RNNSERVE_HOST=0.0.0.0 \
    RNNSERVE_PORT=8000 \
    RNNSERVE_GRPC_PORT=8001 \
    RNNSERVE_ADDRESS_FILE=/tmp/rnnserve/address.json \
    RNNSERVE_DEVICE=cuda \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
VOLUME ["/models"]
USER 10001:10001
EXPOSE 8000 8001
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["/opt/rnnserve/bin/python", "/usr/local/bin/rnnserve-healthcheck"]
ENTRYPOINT ["rnnserve", "serve"]


# ---------------------------------------------------------------------------------------------
# CPU runtime (the default target: keep it last).
FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --system --gid 10001 rnnserve \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin rnnserve
COPY --from=builder /opt/rnnserve /opt/rnnserve
COPY deploy/docker/healthcheck.py /usr/local/bin/rnnserve-healthcheck
COPY models /models
ENV PATH=/opt/rnnserve/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    RNNSERVE_MODELS=/models \
    RNNSERVE_HOST=0.0.0.0 \
    RNNSERVE_PORT=8000 \
    RNNSERVE_GRPC_PORT=8001 \
    RNNSERVE_ADDRESS_FILE=/tmp/rnnserve/address.json
# The committed models are the volume's initial content; mount a model repository here to
# serve your own (models/<name>/model.onnx or models/<name>/<N>/model.onnx).
VOLUME ["/models"]
USER 10001:10001
EXPOSE 8000 8001
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["/opt/rnnserve/bin/python", "/usr/local/bin/rnnserve-healthcheck"]
# Every setting is an RNNSERVE_<FIELD> variable (service/rnnserve/settings.py); arguments given to
# `docker run IMAGE ...` are appended to `rnnserve serve` and win over the environment.
ENTRYPOINT ["rnnserve", "serve"]
