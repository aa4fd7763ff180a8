"""The client alone: `pip install ./client` into a fresh venv (python -m venv) installs
rnnserve-client with numpy, httpx and websockets and nothing of the server (no onnxruntime,
FastAPI, uvicorn or grpc), and that install streams into a real server, from Python and from
its rnnserve-client command."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, ServerProcess

CHECK = """
import importlib.util, sys
absent = ["onnxruntime", "fastapi", "uvicorn", "grpc", "rnnserve", "starlette", "pydantic"]
present = [name for name in absent if importlib.util.find_spec(name) is not None]
assert not present, present
import numpy as np
from rnnserve_client import Client
with Client(sys.argv[1]) as client:
    width = client.model("tiny-gru").input_size
    readings = np.linspace(-1, 1, 20 * width, dtype=np.float32).reshape(20, width)
    with client.stream("tiny-gru") as stream:
        got = np.concatenate(list(stream.feed(readings)))
    whole = client.predict("tiny-gru", readings)
    assert np.allclose(got, whole, atol=1e-5), (got, whole)
print("ok", width)
"""


ALONE = {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}
"""The environment of the venv's processes: nothing of this checkout on their path."""


@pytest.mark.slow
def test_the_client_installs_and_runs_alone(server: ServerProcess, tmp_path: Path) -> None:
    source = tmp_path / "client"
    shutil.copytree(ROOT / "client", source,
                    ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    installed = subprocess.run([str(python), "-m", "pip", "install", "-q", str(source)],
                               capture_output=True, text=True, timeout=600, env=ALONE)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    listed = subprocess.run([str(python), "-m", "pip", "list", "--format=freeze"],
                            capture_output=True, text=True, check=True, env=ALONE
                            ).stdout.lower()
    for absent in ("onnxruntime", "fastapi", "uvicorn", "grpcio", "rnnserve=="):
        assert absent not in listed, listed
    ran = subprocess.run([str(python), "-c", CHECK, server.url], capture_output=True,
                         text=True, timeout=120, cwd=tmp_path, env=ALONE)
    assert ran.returncode == 0 and ran.stdout.startswith("ok"), ran.stdout + ran.stderr
    width = int(ran.stdout.split()[1])
    csv_lines = (",".join(["0.5"] * width) + "\n") * 3
    command = subprocess.run([str(venv / "bin" / "rnnserve-client"), "--url", server.url,
                              "stream", "tiny-gru"], input=csv_lines, capture_output=True,
                             text=True, timeout=120, cwd=tmp_path, env=ALONE)
    assert command.returncode == 0, command.stderr
    assert len(command.stdout.splitlines()) == 3 and "session: " in command.stderr
