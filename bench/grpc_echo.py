"""The gRPC transport floor: a bare grpc.aio server answering KServe v2 `ModelStreamInfer`
(bidirectional stream) and `ModelInfer` (unary) with no model work, no protobuf parsing and
no per-message objects: generic handlers on raw bytes, each request answered with one fixed
reply of the size rnnserve's reply has (`--reply-file`: a serialized ModelStreamInferResponse,
e.g. one rnnserve sent; its `infer_response` is the unary reply). The same client sends it
the same requests as rnnserve, so the difference is what rnnserve adds on top of grpc.aio.

With `--match-ids` (bench/grpc_floor.py, whose load generator matches replies to requests by
id) each request is parsed once to read its `id`, and the reply carries it (replies are built
once per id).

Runs on the stdlib asyncio loop, as `rnnserve serve` does.

`python -m bench.grpc_echo --port 8300 [--reply-file F | --output-size N] [--match-ids]`
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


def default_reply(output_size: int = 1) -> bytes:
    """A reply shaped like rnnserve's for one step of the medium LSTM: one FP32 output of
    `output_size` values."""
    from rnnserve.grpc.generated import inference_pb2 as pb

    response = pb.ModelStreamInferResponse()
    infer = response.infer_response
    infer.model_name, infer.model_version, infer.id = "medium-lstm", "1", "0"
    infer.outputs.add(name="output", datatype="FP32", shape=[1, 1, output_size])
    infer.raw_output_contents.append(bytes(4 * output_size))
    data: bytes = response.SerializeToString()
    return data


class IdReplies:
    """The reply with each request's id (a load generator reuses a few hundred ids), each
    built once."""

    def __init__(self, stream_reply: bytes) -> None:
        from rnnserve.grpc.generated import inference_pb2 as pb

        self._pb = pb
        self._template = pb.ModelStreamInferResponse.FromString(stream_reply)
        self._stream: dict[str, bytes] = {}
        self._unary: dict[str, bytes] = {}

    def _built(self, raw: bytes) -> tuple[str, Any]:
        request_id = self._pb.ModelInferRequest.FromString(raw).id
        response = self._pb.ModelStreamInferResponse()
        response.CopyFrom(self._template)
        response.infer_response.id = request_id
        return request_id, response

    def stream(self, raw: bytes) -> bytes:
        request_id = self._pb.ModelInferRequest.FromString(raw).id
        reply = self._stream.get(request_id)
        if reply is None:
            reply = self._stream[request_id] = self._built(raw)[1].SerializeToString()
        return reply

    def unary(self, raw: bytes) -> bytes:
        request_id = self._pb.ModelInferRequest.FromString(raw).id
        reply = self._unary.get(request_id)
        if reply is None:
            reply = self._unary[request_id] = self._built(raw)[1].infer_response \
                .SerializeToString()
        return reply


def unary_reply(stream_reply: bytes) -> bytes:
    from rnnserve.grpc.generated import inference_pb2 as pb

    data: bytes = pb.ModelStreamInferResponse.FromString(
        stream_reply
    ).infer_response.SerializeToString()
    return data


async def serve(host: str, port: int, reply: bytes, match_ids: bool = False) -> None:
    import grpc

    unary = unary_reply(reply)
    by_id = IdReplies(reply) if match_ids else None

    async def stream(requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
        if by_id is None:
            async for _ in requests:
                yield reply
        else:
            async for raw in requests:
                yield by_id.stream(raw)

    async def infer(request: bytes, context: Any) -> bytes:
        return unary if by_id is None else by_id.unary(request)

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
    parser.add_argument("--output-size", type=int, default=1,
                        help="FP32 values in the default reply's output")
    parser.add_argument("--match-ids", action="store_true",
                        help="each reply carries its request's id")
    args = parser.parse_args(argv)
    reply = (args.reply_file.read_bytes() if args.reply_file
             else default_reply(args.output_size))
    asyncio.run(serve(args.host, args.port, reply, args.match_ids))


if __name__ == "__main__":
    main()
