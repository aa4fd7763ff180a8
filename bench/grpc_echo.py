"""The gRPC transport floor: a bare grpc.aio server answering KServe v2 `ModelStreamInfer`
(bidirectional stream) and `ModelInfer` (unary) with no model work, no protobuf parsing and
no per-message objects: generic handlers on raw bytes, each request answered with one fixed
reply of the size rnnserve's reply has (`--reply-file`: a serialized ModelStreamInferResponse,
e.g. one rnnserve sent; its `infer_response` is the unary reply). The same client sends it
the same requests as rnnserve, so the difference is what rnnserve adds on top of grpc.aio.

Runs on the stdlib asyncio loop, as `rnnserve serve` does.

`python -m bench.grpc_echo --port 8300 [--reply-file F]`
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

OPTIONS = [
    ("grpc.max_send_message_length", 16 << 20),
    ("grpc.max_receive_message_length", 16 << 20),
]


def default_reply() -> bytes:
    """A reply shaped like rnnserve's for one step of the medium LSTM: one FP32 output."""
    from rnnserve.grpc.generated import inference_pb2 as pb

    response = pb.ModelStreamInferResponse()
    infer = response.infer_response
    infer.model_name, infer.model_version, infer.id = "medium-lstm", "1", "0"
    infer.outputs.add(name="output", datatype="FP32", shape=[1, 1, 1])
    infer.raw_output_contents.append(b"\0\0\0\0")
    data: bytes = response.SerializeToString()
    return data


def unary_reply(stream_reply: bytes) -> bytes:
    from rnnserve.grpc.generated import inference_pb2 as pb

    data: bytes = pb.ModelStreamInferResponse.FromString(
        stream_reply
    ).infer_response.SerializeToString()
    return data


async def serve(host: str, port: int, reply: bytes) -> None:
    import grpc

    unary = unary_reply(reply)

    async def stream(requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
        async for _ in requests:
            yield reply

    async def infer(request: bytes, context: Any) -> bytes:
        return unary

    handler = grpc.method_handlers_generic_handler(
        "inference.GRPCInferenceService",
        {
            "ModelStreamInfer": grpc.stream_stream_rpc_method_handler(stream),
            "ModelInfer": grpc.unary_unary_rpc_method_handler(infer),
        },
    )
    server = grpc.aio.server(options=OPTIONS)
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"{host}:{port}")
    await server.start()
    await server.wait_for_termination()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8300)
    parser.add_argument("--reply-file", type=Path, help="serialized ModelStreamInferResponse")
    args = parser.parse_args(argv)
    reply = args.reply_file.read_bytes() if args.reply_file else default_reply()
    asyncio.run(serve(args.host, args.port, reply))


if __name__ == "__main__":
    main()
