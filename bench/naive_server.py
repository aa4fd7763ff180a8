"""The naive baseline: the server a user writes in an afternoon to put a PyTorch LSTM online.

FastAPI + PyTorch eager, same weights as the ONNX model (the torch state it was exported from),
the same `POST /v1/models/{m}/predict` contract as rnnserve, and nothing clever:

* a plain `def` route, so FastAPI runs each request alone in its thread pool (up to 40 at once);
  no batching across requests;
* a pydantic body model and FastAPI's default JSON encoding of the reply;
* `torch.no_grad()`, and torch's thread count left at its default (`--torch-threads` overrides
  it; the benchmark leaves it alone, which is what the afternoon version does);
* uvicorn with one worker (uvloop and httptools, as uvicorn[standard] installs them). Only the
  access log is off, so that the baseline does not pay for writing a log line per request.

`python -m bench.naive_server --checkpoint medium-lstm.pt --port 8100`
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch
import uvicorn
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

from bench.medium_model import MODEL_NAME, load_state


class PredictRequest(BaseModel):
    inputs: list[list[list[float]]]  # sequences of timesteps of features


def create_app(checkpoint: Path, model_name: str = MODEL_NAME) -> FastAPI:
    """The app serving one model loaded from a `bench.medium_model.save_state` checkpoint."""
    model = load_state(checkpoint)
    app = FastAPI(title="naive LSTM server")

    @app.get("/v2/health/ready")
    def ready() -> dict[str, bool]:
        return {"ready": True}

    @app.post("/v1/models/{name}/predict")
    def predict(name: str, request: PredictRequest) -> dict[str, Any]:
        if name != model_name:
            raise HTTPException(status_code=404, detail=f"no model {name!r}")
        outputs = []
        with torch.no_grad():
            for sequence in request.inputs:
                x = torch.tensor(sequence, dtype=torch.float32).unsqueeze(0)  # [1, time, feat]
                outputs.append(model(x)[0].tolist())  # [time, out]
        return {"outputs": outputs}

    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument("--torch-threads", type=int, default=None, help="default: torch's own")
    args = parser.parse_args(argv)
    if args.torch_threads is not None:
        torch.set_num_threads(args.torch_threads)
    print(f"naive server: torch threads = {torch.get_num_threads()}", flush=True)
    app = create_app(args.checkpoint)
    uvicorn.run(app, host=args.host, port=args.port, access_log=False, log_level="warning")


if __name__ == "__main__":
    main()
