"""The Triton peer, set up by the benchmark itself: NVIDIA Triton 2.51's `tritonserver` from
PyPI's nvidia-pytriton wheel, in a venv of its own (the wheel pins numpy < 2), serving the
medium LSTM through its Python backend with ONNX Runtime inside.

Triton's sequence batcher keeps implicit state only in its ONNX Runtime and TensorRT backends,
which come only in NGC containers; with the Python backend the client carries the state: each
request sends `input` [B, T, F] with `h0`/`c0` [B, layers, hidden] and gets `output`, `hn`, `cn`
back. Dynamic batching (500 µs) gathers concurrent requests and `execute()` runs each batch as
ONE ONNX Runtime call (states transposed to ONNX's [layers, batch, hidden]): the best stateful
RNN setup Triton offers here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

from bench.medium_model import MODEL_NAME, MediumConfig
from bench.procs import HOST, READY_PATH, ServerProcess, free_port, with_fresh_ports

DEFAULT_VENV = Path.home() / ".cache" / "rnnserve-bench" / "triton-venv"
PACKAGES = ("nvidia-pytriton", "onnxruntime", "numpy")
STUB_PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"  # the venv's Python
_COMPLETE = ".rnnserve-bench-complete"  # written once pip succeeded: a half install is redone

MODEL_PY = '''"""The medium LSTM for rnnserve's bench: one ONNX Runtime run per dynamic batch."""
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        path = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])

    def execute(self, requests):
        xs, hs, cs = [], [], []
        for request in requests:
            xs.append(pb_utils.get_input_tensor_by_name(request, "input").as_numpy())
            hs.append(pb_utils.get_input_tensor_by_name(request, "h0").as_numpy())
            cs.append(pb_utils.get_input_tensor_by_name(request, "c0").as_numpy())
        if len({x.shape[1] for x in xs}) == 1:
            groups = [list(range(len(requests)))]
        else:  # different lengths cannot share one run
            groups = [[i] for i in range(len(requests))]
        responses = [None] * len(requests)
        for group in groups:
            x = np.concatenate([xs[i] for i in group], 0)
            h = np.ascontiguousarray(np.concatenate([hs[i] for i in group], 0).transpose(1, 0, 2))
            c = np.ascontiguousarray(np.concatenate([cs[i] for i in group], 0).transpose(1, 0, 2))
            y, hn, cn = self.session.run(["output", "hn", "cn"], {"input": x, "h0": h, "c0": c})
            hn = hn.transpose(1, 0, 2)
            cn = cn.transpose(1, 0, 2)
            row = 0
            for i in group:
                size = xs[i].shape[0]
                part = slice(row, row + size)
                row += size
                responses[i] = pb_utils.InferenceResponse(output_tensors=[
                    pb_utils.Tensor("output", np.ascontiguousarray(y[part])),
                    pb_utils.Tensor("hn", np.ascontiguousarray(hn[part])),
                    pb_utils.Tensor("cn", np.ascontiguousarray(cn[part])),
                ])
        return responses
'''


def config_pbtxt(config: MediumConfig) -> str:
    """max_batch_size 256, dynamic batching with a 500 µs queue delay, one CPU instance."""
    state = f"[ {config.num_layers}, {config.hidden_size} ]"

    def tensor(name: str, dims: str) -> str:
        return f'  {{ name: "{name}" data_type: TYPE_FP32 dims: {dims} }}'

    inputs = [
        tensor("input", f"[ -1, {config.input_size} ]"),
        tensor("h0", state),
        tensor("c0", state),
    ]
    outputs = [
        tensor("output", f"[ -1, {config.output_size} ]"),
        tensor("hn", state),
        tensor("cn", state),
    ]
    return (
        f'name: "{MODEL_NAME}"\nbackend: "python"\nmax_batch_size: 256\n'
        "input [\n" + ",\n".join(inputs) + "\n]\n"
        "output [\n" + ",\n".join(outputs) + "\n]\n"
        "dynamic_batching { max_queue_delay_microseconds: 500 }\n"
        "instance_group [ { count: 1 kind: KIND_CPU } ]\n"
    )


def ensure_venv(venv: Path) -> Path:
    """The peer's venv (created and filled with pip the first time, reused after): returns its
    python. Raises RuntimeError with pip's tail when the install fails."""
    python = venv / "bin" / "python"
    if (venv / _COMPLETE).exists() and python.exists():
        return python
    if venv.exists():
        shutil.rmtree(venv)
    venv.parent.mkdir(parents=True, exist_ok=True)
    base = getattr(sys, "_base_executable", sys.executable)
    print(f"triton: creating {venv} and installing {' '.join(PACKAGES)} (once)", flush=True)
    steps = [
        [base, "-m", "venv", str(venv)],
        [str(python), "-m", "pip", "install", "-q", *PACKAGES],
    ]
    for argv in steps:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            tail = (done.stdout + done.stderr).strip()[-1500:]
            raise RuntimeError(f"{' '.join(argv[:4])} failed ({done.returncode}): {tail}")
    (venv / _COMPLETE).write_text("ok\n")
    return python


def _query(python: Path, code: str) -> str:
    return subprocess.run(
        [str(python), "-c", code], capture_output=True, text=True, check=True, timeout=120
    ).stdout.strip()


def start_triton(onnx: Path, workdir: Path, venv: Path = DEFAULT_VENV) -> ServerProcess:
    """Install (once), lay out the server tree and the model repository under `workdir`, start
    tritonserver on free loopback ports with a unique shared-memory prefix, wait until ready."""
    python = ensure_venv(venv)
    site = Path(
        _query(
            python,
            "import os, pytriton; print(os.path.dirname(os.path.dirname(pytriton.__file__)))",
        )
    )
    libdir = _query(python, "import sysconfig; print(sysconfig.get_config_var('LIBDIR'))")
    tree = workdir / "tritonserver"
    shutil.copytree(site / "pytriton" / "tritonserver", tree)
    stub = tree / "python_backend_stubs" / STUB_PYTHON / "triton_python_backend_stub"
    shutil.copy2(stub, tree / "backends" / "python" / "triton_python_backend_stub")
    repository = workdir / "triton-models"
    version_dir = repository / MODEL_NAME / "1"
    version_dir.mkdir(parents=True)
    shutil.copy2(onnx, version_dir / "model.onnx")
    (version_dir / "model.py").write_text(MODEL_PY)
    (repository / MODEL_NAME / "config.pbtxt").write_text(config_pbtxt(MediumConfig()))
    env = dict(os.environ)
    env["PATH"] = f"{python.parent}:{env.get('PATH', '')}"  # the stub's python finds ORT here
    env["LD_LIBRARY_PATH"] = ":".join(
        p for p in (libdir, str(site / "nvidia_pytriton.libs"), env.get("LD_LIBRARY_PATH")) if p
    )

    def start() -> ServerProcess:  # new ports each time: with_fresh_ports
        http_port, grpc_port = free_port(), free_port()
        argv = [
            str(tree / "bin" / "tritonserver"),
            f"--model-repository={repository}",
            f"--backend-directory={tree / 'backends'}",
            f"--http-address={HOST}",
            f"--http-port={http_port}",
            "--allow-grpc=true",
            f"--grpc-address={HOST}",
            f"--grpc-port={grpc_port}",
            "--allow-metrics=false",
            f"--backend-config=python,shm-region-prefix-name=rnnbench{uuid.uuid4().hex[:8]}_",
            "--log-verbose=0",
        ]
        server = ServerProcess(
            "triton",
            argv,
            f"http://{HOST}:{http_port}{READY_PATH}",  # strict: every model loaded
            workdir / "triton.log",
            env=env,
            cwd=workdir,
        )
        server.start(ready_timeout_s=120)
        server.grpc_target = f"{HOST}:{grpc_port}"
        return server

    return with_fresh_ports(start)
