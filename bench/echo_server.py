"""Transport floors for the session benchmark: servers that do no model work at all.

* WebSocket echo at `/v1/models/{m}/stream`: a bare Starlette WebSocket endpoint (no FastAPI
  dependency resolution). Like rnnserve's stream it first sends a `{"session_id", ...}`
  message, then answers each text message with one JSON text message shaped and sized like
  rnnserve's reply `{"outputs": [[y]], "steps": n}`. Same client, same message sizes: the
  difference to rnnserve is what rnnserve adds on top of uvicorn's WebSocket handling.
* REST JSON echo (FastAPI): `POST /v1/models/{m}/sessions` -> 201 {"session_id"} and
  `POST /v1/sessions/{id}/step`, which parses the JSON body (orjson) and answers a reply of the
  same shape and size, with the cheapest FastAPI path (async route, raw Response).
* KServe v2 binary echo (FastAPI): `POST /v2/models/{m}/infer` splits the body at
  Inference-Header-Content-Length, parses the JSON header (orjson) and answers the v2 binary
  reply rnnserve gives a one-timestep sequence step (the same header bytes' shape, one FP32
  output), by the same cheapest path: the floor of a Python ASGI server under the v2 rows.

uvicorn with one worker, uvloop and httptools, websockets protocol (what uvicorn[standard]
picks, as for rnnserve); the access log is off.

`python -m bench.echo_server --port 8200`
"""

from __future__ import annotations

import argparse
import itertools
import struct

import orjson
import uvicorn
from fastapi import FastAPI, Request, Response
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

# A typical rnnserve reply for one timestep of the medium LSTM is
# {"outputs":[[-0.031251997]],"steps":N}: the echo sends the same bytes with its own counter.
OUTPUT_TEXT = "-0.031251997"
_ids = itertools.count()
V2_OUTPUT = struct.pack("<f", float(OUTPUT_TEXT))  # the v2 echo's one FP32 output


def v2_reply_header(model: str) -> bytes:
    """The JSON header of the v2 binary reply to a one-timestep sequence step (one FP32
    output, its 4 bytes follow the header): rnnserve's reply's shape and size."""
    return orjson.dumps(
        {
            "model_name": model,
            "model_version": "1",
            "outputs": [
                {
                    "name": "output",
                    "datatype": "FP32",
                    "shape": [1, 1, 1],
                    "parameters": {"binary_data_size": 4},
                }
            ],
        }
    )


def reply_text(steps: int) -> str:
    return f'{{"outputs":[[{OUTPUT_TEXT}]],"steps":{steps}}}'


async def ws_echo(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_text(
        orjson.dumps({"session_id": f"echo-{next(_ids)}", "model": "echo"}).decode()
    )
    steps = 0
    try:
        while True:
            await websocket.receive_text()
            steps += 1
            await websocket.send_text(reply_text(steps))
    except WebSocketDisconnect:
        return


def create_app() -> FastAPI:
    app = FastAPI(title="echo")
    app.router.routes.append(WebSocketRoute("/v1/models/{model}/stream", ws_echo))
    counts: dict[str, int] = {}

    @app.get("/v2/health/ready")
    async def ready() -> dict[str, bool]:
        return {"ready": True}

    @app.post("/v1/models/{model}/sessions", status_code=201)
    async def create(model: str) -> Response:
        session_id = f"echo-{next(_ids)}"
        counts[session_id] = 0
        return Response(
            orjson.dumps({"session_id": session_id}), status_code=201, media_type="application/json"
        )

    @app.post("/v1/sessions/{session_id}/step")
    async def step(session_id: str, request: Request) -> Response:
        body = orjson.loads(await request.body())
        if not isinstance(body, dict) or "inputs" not in body:
            return Response(b'{"error":"inputs missing"}', status_code=422)
        steps = counts.get(session_id, 0) + 1
        counts[session_id] = steps
        return Response(reply_text(steps).encode(), media_type="application/json")

    @app.post("/v2/models/{model}/infer")
    async def v2_infer(model: str, request: Request) -> Response:
        body = await request.body()
        split = int(request.headers.get("inference-header-content-length", len(body)))
        header = orjson.loads(body[:split])
        if not isinstance(header, dict) or "inputs" not in header:
            return Response(b'{"error":"inputs missing"}', status_code=400)
        reply = v2_reply_header(model)
        return Response(
            reply + V2_OUTPUT,
            media_type="application/octet-stream",
            headers={"inference-header-content-length": str(len(reply))},
        )

    @app.delete("/v1/sessions/{session_id}", status_code=204)
    async def delete(session_id: str) -> Response:
        counts.pop(session_id, None)
        return Response(status_code=204)

    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8200)
    parser.add_argument(
        "--loop",
        choices=["auto", "asyncio", "uvloop"],
        default="auto",
        help="uvicorn's event loop (auto: uvloop when installed)",
    )
    args = parser.parse_args(argv)
    uvicorn.run(
        create_app(),
        host=args.host,
        port=args.port,
        access_log=False,
        log_level="warning",
        loop=args.loop,
    )


if __name__ == "__main__":
    main()
