"""Correctness before speed: one short sequence through each stateful API (REST steps, the
WebSocket stream, a gRPC ModelStreamInfer stream), compared with PyTorch's outputs, so that
every system measured does the same work."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import orjson

from bench.client_loop import run_client
from bench.medium_model import MODEL_NAME, agreement
from bench.procs import RnnserveProcess, ServerProcess, base_url
from bench.sessions.plan import ONNX_INPUT, ONNX_OUTPUT, Plan
from bench.sessions.servers import ws_url
from bench.wsload import delete_sessions


def check_rest(server: ServerProcess, sequence: np.ndarray, expected: np.ndarray) -> dict[str, Any]:
    """Create a session, step it one timestep at a time, compare with PyTorch's outputs."""
    import urllib.request

    def post(path: str, body: bytes = b"") -> Any:
        request = urllib.request.Request(
            base_url(server) + path,
            data=body,
            method="POST",
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    sid = post(f"/v1/models/{MODEL_NAME}/sessions")["session_id"]
    got = [
        post(
            f"/v1/sessions/{sid}/step",
            orjson.dumps({"inputs": x[None]}, option=orjson.OPT_SERIALIZE_NUMPY),
        )
        for x in sequence
    ]
    outputs = np.asarray([g["outputs"][0] for g in got], dtype=np.float32)
    delete_sessions(base_url(server), [sid])
    return {**agreement(outputs, expected), "steps": got[-1]["steps"]}


def check_grpc(server: ServerProcess, sequence: np.ndarray, expected: np.ndarray) -> dict[str, Any]:
    """One sequence over one ModelStreamInfer stream with the project's stubs, checked."""
    import grpc
    from rnnserve.grpc.generated import inference_pb2 as pb
    from rnnserve.grpc.generated import inference_pb2_grpc

    assert isinstance(server, RnnserveProcess) and server.grpc_target
    requests = []
    for i, x in enumerate(sequence):
        request = pb.ModelInferRequest(model_name=MODEL_NAME, id=f"check-{i}")
        request.parameters["sequence_id"].string_param = "bench-sessions-check"
        request.parameters["sequence_start"].bool_param = i == 0
        request.parameters["sequence_end"].bool_param = i == len(sequence) - 1
        request.inputs.add(name=ONNX_INPUT, datatype="FP32", shape=[1, 1, x.shape[-1]])
        request.outputs.add(name=ONNX_OUTPUT)
        request.raw_input_contents.append(np.asarray(x, dtype="<f4").tobytes())
        requests.append(request)
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = inference_pb2_grpc.GRPCInferenceServiceStub(channel)
        responses = list(stub.ModelStreamInfer(iter(requests), timeout=60))
    errors = [r.error_message for r in responses if r.error_message]
    if errors or len(responses) != len(sequence):
        return {"ok": False, "errors": errors[:3], "responses": len(responses)}
    by_id = {r.infer_response.id: r.infer_response for r in responses}
    outputs = np.asarray(
        [
            np.frombuffer(by_id[f"check-{i}"].raw_output_contents[0], dtype="<f4")
            for i in range(len(sequence))
        ],
        dtype=np.float32,
    ).reshape(expected.shape)
    return {**agreement(outputs, expected), "steps": len(responses)}


def check_ws(server: ServerProcess, sequence: np.ndarray, expected: np.ndarray) -> dict[str, Any]:
    """The same over rnnserve's WebSocket stream (the last reply kept, a sample of the format)."""

    async def go() -> tuple[list[Any], str]:
        import aiohttp

        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(ws_url(server)) as ws:
                sid = orjson.loads((await ws.receive()).data)["session_id"]
                replies = []
                for x in sequence:
                    await ws.send_str(
                        orjson.dumps(
                            {"inputs": x[None]}, option=orjson.OPT_SERIALIZE_NUMPY
                        ).decode()
                    )
                    replies.append(orjson.loads((await ws.receive()).data))
                return replies, sid

    replies, sid = run_client(go())
    delete_sessions(base_url(server), [sid])
    outputs = np.asarray([r["outputs"][0] for r in replies], dtype=np.float32)
    return {
        **agreement(outputs, expected),
        "steps": replies[-1]["steps"],
        "reply_sample": orjson.dumps(replies[-1]).decode(),
    }


def check_all(
    servers: dict[str, ServerProcess], plan: Plan, sequence: np.ndarray, expected: np.ndarray
) -> dict[str, Any]:
    """Every stateful API the run measures, on the servers that started; verdicts printed."""
    correctness: dict[str, Any] = {}
    if "rnnserve" in servers:
        correctness["rest"] = check_rest(servers["rnnserve"], sequence, expected)
        correctness["ws"] = check_ws(servers["rnnserve"], sequence, expected)
        if "grpc-stream" in plan.systems:
            correctness["grpc-stream"] = check_grpc(servers["rnnserve"], sequence, expected)
    if "naive" in servers:
        correctness["naive"] = check_rest(servers["naive"], sequence, expected)
    for system, verdict in correctness.items():
        print(f"correctness {system}: {verdict}", flush=True)
    return correctness
