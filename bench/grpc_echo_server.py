"""The gRPC transport floor: a bare grpc.aio server answering KServe v2 `ModelStreamInfer` and
`ModelInfer` with replies of the size rnnserve sends, and no model, state or checks.

It serves the same method names on the same kind of server (grpc.aio on the stdlib asyncio
loop, as `rnnserve serve` runs it), bound WITHOUT (de)serializers: each request is parsed once
with the generated stubs only to read its `id` (the load generator matches replies by it), and
each reply is a pre-encoded ModelInferResponse (model name, version, the output tensor's
metadata and `raw_output_contents` of the requested output's size) with that id. So what it
costs per message is grpc.aio's own work plus a few microseconds: what any Python gRPC server
pays before doing anything. bench/grpc_floor.py measures rnnserve against it in one run.

    python -m bench.grpc_echo_server --host 127.0.0.1 --port 50051 --output-size 1
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
from rnnserve.grpc.generated import inference_pb2 as pb

SERVICE = "inference.GRPCInferenceService"


class Replies:
    """Reply bytes per request id (a load generator reuses a few hundred ids), built once."""

    def __init__(self, model: str, output: str, output_size: int) -> None:
        template = pb.ModelInferResponse(model_name=model, model_version="1")
        template.outputs.add(name=output, datatype="FP32", shape=[1, 1, output_size])
        template.raw_output_contents.append(bytes(4 * output_size))
        self._template = template
        self._unary: dict[str, bytes] = {}
        self._stream: dict[str, bytes] = {}
        self._parse = pb.ModelInferRequest.FromString

    def _response(self, raw: bytes) -> pb.ModelInferResponse:
        response = pb.ModelInferResponse()
        response.CopyFrom(self._template)
        response.id = self._parse(raw).id
        return response

    def unary(self, raw: bytes) -> bytes:
        request_id = self._parse(raw).id
        reply = self._unary.get(request_id)
        if reply is None:
            reply = self._unary[request_id] = self._response(raw).SerializeToString()
        return reply

    def stream(self, raw: bytes) -> bytes:
        request_id = self._parse(raw).id
        reply = self._stream.get(request_id)
        if reply is None:
            reply = self._stream[request_id] = pb.ModelStreamInferResponse(
                infer_response=self._response(raw)).SerializeToString()
        return reply


async def serve(host: str, port: int, replies: Replies, writes: str = "yield") -> None:
    async def yielding(requests: Any, context: Any) -> AsyncIterator[bytes]:
        async for raw in requests:
            yield replies.stream(raw)

    async def writing(requests: Any, context: Any) -> None:
        async for raw in requests:
            await context.write(replies.stream(raw))

    model_stream_infer = yielding if writes == "yield" else writing

    async def model_infer(raw: bytes, context: Any) -> bytes:
        return replies.unary(raw)

    handler = grpc.method_handlers_generic_handler(SERVICE, {
        "ModelStreamInfer": grpc.stream_stream_rpc_method_handler(model_stream_infer),
        "ModelInfer": grpc.unary_unary_rpc_method_handler(model_infer),
    })
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"{host}:{port}")
    await server.start()
    await server.wait_for_termination()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.grpc_echo_server",
                                     description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model", default="medium-lstm")
    parser.add_argument("--output", default="output", help="the output tensor's name")
    parser.add_argument("--output-size", type=int, default=1, help="FP32 values per reply")
    parser.add_argument("--writes", choices=["yield", "write"], default="yield",
                        help="stream replies from an async generator (yield) or with "
                        "context.write (as rnnserve writes them)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(serve(args.host, args.port, Replies(args.model, args.output, args.output_size),
                      args.writes))


if __name__ == "__main__":
    main()
