"""KServe v2 gRPC sequence steps as `closedloop` codecs and links, one client for every server
(rnnserve, Triton, the bare echo of bench/grpc_echo.py).

* Links: `StreamLink` is one `ModelStreamInfer` call per sequence (all on one channel, one
  HTTP/2 connection, as bench/grpcload.py measures rnnserve's stream); `UnaryLink` sends each
  step as a unary `ModelInfer`. Both grpc.aio with no serializers: bytes out, bytes in.
* Codec: requests are pre-encoded protobuf pieces joined (two serialized messages
  concatenated parse as the two merged; bench/grpcload.py): for rnnserve the sequence's prefix
  (grpcload.encode_prefix: model, id, sequence_id, start/end) + a body with the input in
  `raw_input_contents`; for Triton one fixed prefix naming the inputs input/h0/c0 and outputs
  output/hn/cn, then the three raw contents (field 7) written as bytes fields: the state the
  last reply carried goes out without being decoded. Replies are parsed with the project's
  generated stubs.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bench.grpcload import encode_bodies, encode_prefix
from bench.peers.closedloop import State

SERVICE = "/inference.GRPCInferenceService/"
OPTIONS = [
    ("grpc.max_send_message_length", 16 << 20),
    ("grpc.max_receive_message_length", 16 << 20),
]
OUTPUT_BYTES = 4


def _pb() -> Any:
    from rnnserve.grpc.generated import inference_pb2

    return inference_pb2


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def raw_input_field(data: bytes) -> bytes:
    """`raw_input_contents` (field 7, length-delimited) holding `data`, serialized."""
    return b"\x3a" + _varint(len(data)) + data


class GrpcChannel:
    """One grpc.aio channel shared by a point's links; `stream()` and `unary()` open links."""

    def __init__(self, target: str) -> None:
        import grpc

        self.channel = grpc.aio.insecure_channel(target, options=OPTIONS)
        self._stream_method = self.channel.stream_stream(SERVICE + "ModelStreamInfer")
        self._unary_method = self.channel.unary_unary(SERVICE + "ModelInfer")

    async def ready(self, timeout_s: float = 30.0) -> None:
        import asyncio

        await asyncio.wait_for(self.channel.channel_ready(), timeout_s)

    async def stream(self) -> StreamLink:
        return StreamLink(self._stream_method())

    async def unary(self) -> UnaryLink:
        return UnaryLink(self._unary_method)

    async def aclose(self) -> None:
        await self.channel.close()


class StreamLink:
    """One ModelStreamInfer call: write a request, read its one reply (closed loop)."""

    def __init__(self, rpc: Any) -> None:
        self._rpc = rpc

    async def call(self, message: bytes) -> Any:
        await self._rpc.write(message)
        return await self._rpc.read()

    async def aclose(self) -> None:
        try:
            await self._rpc.done_writing()
        except Exception:  # the stream is already over
            self._rpc.cancel()


class UnaryLink:
    """Each step a unary ModelInfer on the shared channel."""

    def __init__(self, method: Any) -> None:
        self._method = method

    async def call(self, message: bytes) -> Any:
        return await self._method(message, timeout=60)

    async def aclose(self) -> None:
        return None


class GrpcCodec:
    """rnnserve (`carry_state=False`: sequence_id, the server keeps h/c) or Triton
    (`carry_state=True`: h0/c0 in, hn/cn out). `stream`: replies are ModelStreamInferResponse
    (else ModelInferResponse, unary)."""

    def __init__(
        self,
        model: str,
        steps: np.ndarray,
        carry_state: bool,
        state_shape: tuple[int, int],
        stream: bool,
        first_sequence_id: int = 1,
    ) -> None:
        pb = _pb()
        xs = np.asarray(steps, dtype="<f4").reshape(len(steps), -1)  # [k, F]
        self.model = model
        self.carry_state = carry_state
        self.first_id = first_sequence_id
        self.zero_state = bytes(4 * state_shape[0] * state_shape[1])
        parse = (
            pb.ModelStreamInferResponse.FromString if stream else pb.ModelInferResponse.FromString
        )
        self._parse = parse
        self.stream = stream
        self._prefixes: dict[int, bytes] = {}
        if carry_state:
            request = pb.ModelInferRequest(model_name=model, id="0")
            request.inputs.add(name="input", datatype="FP32", shape=[1, 1, xs.shape[1]])
            for name in ("h0", "c0"):
                request.inputs.add(name=name, datatype="FP32", shape=[1, *state_shape])
            for name in ("output", "hn", "cn"):
                request.outputs.add(name=name)
            self._fixed = request.SerializeToString()
            self.bodies = [raw_input_field(x.tobytes()) for x in xs]
        else:
            self.bodies = encode_bodies("input", "output", xs)

    def request(self, index: int, number: int, state: State, start: bool, end: bool) -> bytes:
        body = self.bodies[(index + number) % len(self.bodies)]
        if self.carry_state:
            h, c = (state["hn"], state["cn"]) if state else (self.zero_state, self.zero_state)
            return b"".join((self._fixed, body, raw_input_field(h), raw_input_field(c)))
        if start or end:
            prefix = encode_prefix(
                self.model, str(index), self.first_id + index, start=start, end=end
            )
        else:
            prefix = self._prefixes.get(index) or self._prefixes.setdefault(
                index, encode_prefix(self.model, str(index), self.first_id + index)
            )
        return prefix + body

    def reply(self, raw: Any) -> tuple[str | None, State]:
        if not isinstance(raw, bytes):
            return f"no reply ({raw!r})", None
        message = self._parse(raw)
        if self.stream:
            if message.error_message:
                return f"in-band error: {message.error_message[:200]}", None
            message = message.infer_response
        contents = dict(
            zip([o.name for o in message.outputs], message.raw_output_contents, strict=False)
        )
        if len(contents.get("output", b"")) != OUTPUT_BYTES:
            return f"bad reply: {str(message)[:200]}", None
        if not self.carry_state:
            return None, None
        state = {n: contents.get(n, b"") for n in ("hn", "cn")}
        if any(len(v) != len(self.zero_state) for v in state.values()):
            return f"bad state in reply: {str(message)[:200]}", None
        return None, state
