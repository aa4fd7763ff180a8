"""Correctness before speed: a few sequences stepped one timestep at a time through rnnserve
(sequence_id, state on the server) and through Triton (the client carries h/c), over v2 HTTP
with binary tensors and over a gRPC ModelStreamInfer stream, each compared with a stateless
v2 predict of the whole sequence on rnnserve (and that with PyTorch). Same codecs as the load,
so a check that passes says the measured requests do the real work.

One real rnnserve stream reply is kept: the gRPC echo answers with its bytes (same size)."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

from bench.medium_model import MODEL_NAME, agreement
from bench.peers.closedloop import Codec, Link, State
from bench.peers.systems import STATE_SHAPE
from bench.peers.v2grpc import GrpcChannel, GrpcCodec
from bench.peers.v2http import BinaryCodec, HttpLink, read_reply
from bench.procs import HOST, ServerProcess, base_url


def _port(server: ServerProcess) -> int:
    return int(base_url(server).rsplit(":", 1)[1])


def predict_whole(server: ServerProcess, sequence: np.ndarray) -> np.ndarray:
    """rnnserve's stateless v2 infer of the whole [T, F] sequence: output [T]."""
    import urllib.request

    body = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "shape": [1, *sequence.shape],
                    "datatype": "FP32",
                    "data": sequence.ravel().tolist(),
                }
            ]
        }
    )
    request = urllib.request.Request(
        f"{base_url(server)}/v2/models/{MODEL_NAME}/infer",
        data=body,
        method="POST",
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        reply = orjson.loads(response.read())
    output = next(o for o in reply["outputs"] if o["name"] == "output")
    return np.asarray(output["data"], dtype=np.float32).reshape(-1)


async def _step_through(
    link: Link, codec: Codec, steps: int, grpc: bool
) -> tuple[list[float], Any]:
    """Step one sequence (index 0) through `link`; its outputs, and the second raw reply."""
    state: State = None
    outputs: list[float] = []
    sample = None
    for number in range(steps):
        raw = await link.call(codec.request(0, number, state, number == 0, number == steps - 1))
        error, state = codec.reply(raw)
        if error is not None:
            raise RuntimeError(f"step {number}: {error}")
        outputs.append(_output_of(raw, grpc))
        if number == 1:
            sample = raw
    await link.aclose()
    return outputs, sample


def _output_of(raw: Any, grpc: bool) -> float:
    if grpc:
        from rnnserve.grpc.generated import inference_pb2 as pb

        infer = pb.ModelStreamInferResponse.FromString(raw).infer_response
        names = [o.name for o in infer.outputs]
        data = infer.raw_output_contents[names.index("output")]
    else:
        _, outputs = read_reply(raw)
        data = outputs["output"]
    return float(np.frombuffer(data, "<f4")[0])


async def _one_system(
    server: ServerProcess, carry: bool, sequence: np.ndarray, first_id: int
) -> dict[str, Any]:
    steps = sequence[:, None, :]  # [T, 1, F]: the codec's x of step n is steps[n]
    http = BinaryCodec(HOST, MODEL_NAME, steps, carry, STATE_SHAPE, first_id)
    got_http, _ = await _step_through(
        await HttpLink.open(HOST, _port(server)), http, len(sequence), grpc=False
    )
    channel = GrpcChannel(server.grpc_target)
    try:
        await channel.ready()
        grpc_codec = GrpcCodec(MODEL_NAME, steps, carry, STATE_SHAPE, True, first_id + 1)
        got_grpc, sample = await _step_through(
            await channel.stream(), grpc_codec, len(sequence), grpc=True
        )
    finally:
        await channel.aclose()
    return {
        "http": np.asarray(got_http, np.float32),
        "grpc": np.asarray(got_grpc, np.float32),
        "sample": sample,
    }


def check_peers(
    servers: dict[str, ServerProcess], sequences: np.ndarray, expected: np.ndarray
) -> tuple[dict[str, Any], bytes | None]:
    """Verdicts per system and path (printed), and one rnnserve stream reply's bytes."""
    from bench.client_loop import run_client

    verdicts: dict[str, Any] = {}
    sample: bytes | None = None
    rnnserve = servers.get("rnnserve")
    if rnnserve is None:
        return verdicts, None
    for i, sequence in enumerate(sequences):
        whole = predict_whole(rnnserve, sequence)
        verdicts.setdefault("rnnserve predict (whole sequence) vs PyTorch", []).append(
            agreement(whole, expected[i].reshape(-1))
        )
        for name, carry in (("rnnserve", False), ("triton", True)):
            if name not in servers:
                continue
            got = run_client(_one_system(servers[name], carry, sequence, 900_000 + 10 * i))
            if name == "rnnserve" and sample is None:
                sample = got["sample"]
            for path in ("http", "grpc"):
                verdicts.setdefault(f"{name} {path} steps vs predict", []).append(
                    agreement(got[path], whole)
                )
    summary = {
        key: {
            "sequences": len(values),
            "max_abs_diff": max(v["max_abs_diff"] for v in values),
            "ok": all(v["ok"] for v in values),
        }
        for key, values in verdicts.items()
    }
    for key, verdict in summary.items():
        print(
            f"correctness {key}: max |diff| {verdict['max_abs_diff']:.2e} over "
            f"{verdict['sequences']} sequences: {'OK' if verdict['ok'] else 'WRONG'}",
            flush=True,
        )
    return summary, sample
