"""The naive STATEFUL baseline: what a user writes in an afternoon to keep each client's hidden
state on the server.

FastAPI + ONNX Runtime on the same model file rnnserve serves, the same REST contract for the
calls the session benchmark makes, and nothing clever:

* `POST /v1/models/{m}/sessions` -> 201 {"session_id"}: zeros in a dict `{id: {name: array}}`;
* `POST /v1/sessions/{id}/step` {"inputs": [[f, ...], ...]} -> {"outputs", "steps"}: ONE
  `InferenceSession.run` per step with batch 1 (state read from the dict, written back), no
  batching across clients;
* plain `def` routes, so FastAPI runs each request in its thread pool (up to 40 at once) and
  ONNX Runtime runs in parallel with the GIL released; a lock per session keeps one session's
  steps one at a time (two requests of one client must not race on its state);
* a pydantic body model and FastAPI's default JSON encoding of the reply;
* ONNX Runtime's default session options (`--intra-op-threads` overrides them; the benchmark
  leaves them alone, which is what the afternoon version does);
* uvicorn with one worker (uvloop and httptools). Only the access log is off.

`python -m bench.naive_stateful_server --model models/medium-lstm/model.onnx --port 8100`
"""

from __future__ import annotations

import argparse
import secrets
import threading
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import uvicorn
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel


class StepRequest(BaseModel):
    inputs: list[list[float]]  # timesteps of features


def create_app(model: Path, model_name: str, intra_op_threads: int | None = None) -> FastAPI:
    options = ort.SessionOptions()
    if intra_op_threads is not None:
        options.intra_op_num_threads = intra_op_threads
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    state_inputs = [arg for arg in session.get_inputs() if arg.name != "input"]
    state_outputs = {"h0": "hn", "c0": "cn"}
    sessions: dict[str, dict[str, Any]] = {}
    app = FastAPI(title="naive stateful LSTM server")

    @app.get("/v2/health/ready")
    def ready() -> dict[str, bool]:
        return {"ready": True}

    @app.post("/v1/models/{name}/sessions", status_code=201)
    def create(name: str) -> dict[str, str]:
        if name != model_name:
            raise HTTPException(status_code=404, detail=f"no model {name!r}")
        session_id = secrets.token_urlsafe(16)
        state = {
            arg.name: np.zeros((arg.shape[0], 1, arg.shape[2]), np.float32) for arg in state_inputs
        }
        sessions[session_id] = {"state": state, "steps": 0, "lock": threading.Lock()}
        return {"session_id": session_id}

    @app.post("/v1/sessions/{session_id}/step")
    def step(session_id: str, request: StepRequest) -> dict[str, Any]:
        entry = sessions.get(session_id)
        if entry is None:
            raise HTTPException(status_code=404, detail=f"unknown session {session_id!r}")
        x = np.asarray(request.inputs, dtype=np.float32)[np.newaxis]  # [1, time, features]
        with entry["lock"]:
            feeds = {"input": x, **entry["state"]}
            names = ["output", *(state_outputs[name] for name in entry["state"])]
            output, *states = session.run(names, feeds)
            entry["state"] = dict(zip(entry["state"], states, strict=True))
            entry["steps"] += x.shape[1]
            steps = entry["steps"]
        return {"outputs": output[0].tolist(), "steps": steps}

    @app.delete("/v1/sessions/{session_id}", status_code=204)
    def delete(session_id: str) -> None:
        sessions.pop(session_id, None)

    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="the model.onnx file")
    parser.add_argument("--name", default="medium-lstm")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument("--intra-op-threads", type=int, default=None, help="default: ORT's own")
    args = parser.parse_args(argv)
    app = create_app(args.model, args.name, args.intra_op_threads)
    uvicorn.run(app, host=args.host, port=args.port, access_log=False, log_level="warning")


if __name__ == "__main__":
    main()
