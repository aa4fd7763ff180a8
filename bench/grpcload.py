"""Closed-loop sequence load over KServe v2 gRPC `ModelStreamInfer`: N sequences, each its own
`sequence_id`, ONE timestep per message, each waiting for its response before sending its next.

How the client is kept cheap (it shares the cores with the server under test):

* grpc.aio with the method bound WITHOUT serializers: requests go out as bytes and responses
  come back as bytes, so nothing is built per message. Each request is two pre-encoded pieces
  joined: the sequence's prefix (model name, request id, sequence_id; sequence_start or
  sequence_end for the untimed first and last steps) and one of a few bodies (the input
  tensor [1, 1, features] FP32 in `raw_input_contents`, and the requested output). Protobuf
  allows that: two serialized messages concatenated parse as the two merged (repeated fields
  and map entries append, the pieces set disjoint fields). Responses are parsed with the
  project's generated stubs (upb, a few µs) to read the request id, the in-band error and the
  output.
* One ModelStreamInfer stream per sequence (`per_stream=1`, the default), all on one channel
  (one HTTP/2 connection): what a gateway fronting many users would do, a stream living as
  long as the user's session, so that an error, a cancel or a slow reader stays in that
  session (HTTP/2 flow control is per stream) and no session waits behind another's steps.
  `per_stream=64` multiplexes 64 sequences per stream instead: rnnserve runs the steps of
  different sequences of one stream concurrently, keeps each sequence's steps in order and
  holds at most 256 messages of a stream in flight (service/rnnserve/grpc/servicer.py), so 64
  closed-loop sequences never meet that window; but each stream is read one message at a
  time, so in docs/bench_grpc.md it measured slower (smaller batches). Responses are matched
  to their sequence by request id (one step of a sequence in flight at a time, so the
  sequence index is a unique id). gRPC allows one write in flight per call, so each stream
  has a writer task that sends what its sequences queued, in order.
* `client="tritonclient"` drives the same streams through tritonclient.grpc.aio's
  `stream_infer` instead (a dict of arguments per step, turned into a protobuf request by
  tritonclient; each response wrapped in an InferResult): what a gateway written against
  Triton's client would cost. The event loop is uvloop (as the WebSocket load generator), or
  the stdlib loop with `loop="asyncio"`.

Measurement rules as bench/wsload.py (`bench.stats.Window`): the streams open and every
sequence's first step (sequence_start) is answered before the clock starts; warm-up, then a
window bounded in time and message count; afterwards each sequence's last step
(sequence_end, untimed) frees it on the server.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from bench.client_loop import run_client
from bench.stats import CpuMarks, CpuProbe, LoadResult, Window

METHOD = "/inference.GRPCInferenceService/ModelStreamInfer"


def _pb() -> Any:
    from rnnserve.grpc.generated import inference_pb2

    return inference_pb2


def encode_bodies(input_name: str, output_name: str, steps: np.ndarray) -> list[bytes]:
    """One serialized ModelInferRequest fragment per timestep in `steps` [k, features]: the
    input tensor as [1, 1, features] FP32 (raw, little-endian) and the one output asked for."""
    pb = _pb()
    bodies = []
    for x in np.asarray(steps, dtype="<f4"):
        request = pb.ModelInferRequest()
        request.inputs.add(name=input_name, datatype="FP32", shape=[1, 1, x.shape[-1]])
        request.outputs.add(name=output_name)
        request.raw_input_contents.append(x.tobytes())
        bodies.append(request.SerializeToString())
    return bodies


def encode_prefix(
    model: str, request_id: str, sequence_id: int, *, start: bool = False, end: bool = False
) -> bytes:
    """The per-sequence fragment: model, request id, sequence_id (int64_param, as tritonclient
    sends it) and, when set, sequence_start / sequence_end (bool_param)."""
    pb = _pb()
    request = pb.ModelInferRequest(model_name=model, id=request_id)
    request.parameters["sequence_id"].int64_param = sequence_id
    if start:
        request.parameters["sequence_start"].bool_param = True
    if end:
        request.parameters["sequence_end"].bool_param = True
    data: bytes = request.SerializeToString()
    return data


class _Stream:
    """One ModelStreamInfer call, raw bytes: a writer task sending queued messages one write at
    a time, a reader task resolving each sequence's pending future from the request id."""

    def __init__(self, call: Any, output_bytes: int) -> None:
        self.call = call
        self.output_bytes = output_bytes
        self.outbox: asyncio.Queue[Any] = asyncio.Queue()
        self.pending: dict[str, asyncio.Future[str | None]] = {}
        self.broken: str | None = None
        self.tasks = self._start()

    def _start(self) -> list[asyncio.Task[None]]:
        return [asyncio.create_task(self._write()), asyncio.create_task(self._read())]

    def send(self, request_id: str, message: Any) -> asyncio.Future[str | None]:
        """Queue `message`; the future resolves to None (good reply) or an error text."""
        future: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        if self.broken is not None:
            future.set_result(self.broken)
            return future
        self.pending[request_id] = future
        self.outbox.put_nowait(message)
        return future

    def _resolve(self, response: Any) -> None:
        """`response`: a ModelInferResponse (its id names the sequence)."""
        future = self.pending.pop(response.id, None)
        if future is None or future.done():
            return
        if [len(b) for b in response.raw_output_contents] != [self.output_bytes]:
            future.set_result(f"bad reply: {str(response)[:200]}")
        else:
            future.set_result(None)

    def _fail_all(self, why: str) -> None:
        self.broken = why
        for future in self.pending.values():
            if not future.done():
                future.set_result(why)
        self.pending.clear()

    async def _write(self) -> None:
        try:
            while (message := await self.outbox.get()) is not None:
                await self.call.write(message)
            await self.call.done_writing()
        except Exception as exc:
            self._fail_all(f"write: {type(exc).__name__}: {exc}")

    async def _read(self) -> None:
        import grpc

        parse = _pb().ModelStreamInferResponse.FromString
        eof = grpc.aio.EOF
        try:
            while (raw := await self.call.read()) is not eof:
                response = parse(raw)
                if response.error_message:
                    future = self.pending.pop(response.infer_response.id, None)
                    if future is not None and not future.done():
                        future.set_result(f"in-band error: {response.error_message[:200]}")
                else:
                    self._resolve(response.infer_response)
            self._fail_all("stream ended")
        except Exception as exc:
            self._fail_all(f"read: {type(exc).__name__}: {exc}")

    async def close(self, timeout_s: float) -> None:
        self.outbox.put_nowait(None)
        try:
            await asyncio.wait_for(asyncio.gather(*self.tasks), timeout_s)
        except (TimeoutError, asyncio.CancelledError):
            cancel = getattr(self.call, "cancel", None)
            if cancel is not None:
                cancel()


class _TritonStream(_Stream):
    """The same over tritonclient.grpc.aio's `stream_infer`: it builds a protobuf request from
    each yielded dict of `async_stream_infer` arguments and wraps each response in an
    InferResult. Its in-band errors carry only the message (no request id), so an error fails
    the whole stream here; none is expected in a benchmark."""

    def _start(self) -> list[asyncio.Task[None]]:
        return [asyncio.create_task(self._run())]

    async def _requests(self) -> Any:
        while (message := await self.outbox.get()) is not None:
            yield message

    async def _run(self) -> None:
        try:
            self.call = self.call.stream_infer(self._requests())  # the client -> its iterator
            async for result, error in self.call:
                if error is not None:
                    self._fail_all(f"in-band error (tritonclient gives no request id): {error}")
                    return
                self._resolve(result.get_response())
            self._fail_all("stream ended")
        except Exception as exc:
            self._fail_all(f"stream: {type(exc).__name__}: {exc}")


class _Codec:
    """Messages for one client kind. raw: bytes, the sequence's prefix + a body; tritonclient:
    a fresh dict of `async_stream_infer` arguments with pre-built InferInput objects."""

    def __init__(self, client: str, model: str, bodies: Sequence[bytes], first_id: int) -> None:
        self.client = client
        self.model = model
        self.first_id = first_id
        self.bodies = list(bodies)
        self.prefixes: dict[int, bytes] = {}
        if client == "tritonclient":
            import tritonclient.grpc as grpcclient

            pb = _pb()
            self.inputs = []
            for body in bodies:
                fragment = pb.ModelInferRequest.FromString(body)
                tensor = fragment.inputs[0]
                one = grpcclient.InferInput(tensor.name, list(tensor.shape), tensor.datatype)
                one.set_data_from_numpy(
                    np.frombuffer(fragment.raw_input_contents[0], "<f4").reshape(list(tensor.shape))
                )
                self.inputs.append([one])
            self.outputs = [grpcclient.InferRequestedOutput(fragment.outputs[0].name)]
        elif client != "raw":
            raise ValueError(f"unknown gRPC client {client!r}: raw or tritonclient")

    def message(self, index: int, number: int, start: bool = False, end: bool = False) -> Any:
        body = (index + number) % len(self.bodies)
        if self.client == "raw":
            prefix = None if start or end else self.prefixes.get(index)
            if prefix is None:
                prefix = encode_prefix(
                    self.model, str(index), self.first_id + index, start=start, end=end
                )
                if not (start or end):
                    self.prefixes[index] = prefix  # pre-encoded once per sequence
            return prefix + self.bodies[body]
        return {
            "model_name": self.model,
            "inputs": self.inputs[body],
            "outputs": self.outputs,
            "request_id": str(index),
            "sequence_id": self.first_id + index,
            "sequence_start": start,
            "sequence_end": end,
        }


async def run_grpc_stream_point_async(
    target: str,
    model: str,
    bodies: Sequence[bytes],
    *,
    concurrency: int,
    duration_s: float,
    warmup_s: float,
    max_requests: int,
    first_sequence_id: int,
    per_stream: int = 1,
    client: str = "raw",
    output_bytes: int = 4,
    cpu_probes: Mapping[str, CpuProbe] | None = None,
    timeout_s: float = 60.0,
) -> tuple[LoadResult, float, int]:
    """Open ceil(concurrency / per_stream) streams on one channel to `target` (host:port),
    start `concurrency` sequences (ids first_sequence_id ...), run the closed loop, end the
    sequences. Returns the result, the seconds the set-up took and how many sequences failed
    to end. `output_bytes`: the size of a good reply's one output (1 FP32 value: 4).
    `client`: "raw" (grpc.aio, bytes) or "tritonclient" (tritonclient.grpc.aio)."""
    import grpc

    options = [
        ("grpc.max_send_message_length", 16 << 20),
        ("grpc.max_receive_message_length", 16 << 20),
    ]
    codec = _Codec(client, model, bodies, first_sequence_id)
    streams: list[_Stream] = []
    n_streams = -(-concurrency // per_stream)
    triton: Any = None
    channel: Any = None
    try:
        opened_at = time.perf_counter()
        if client == "raw":
            channel = grpc.aio.insecure_channel(target, options=options)
            await asyncio.wait_for(channel.channel_ready(), timeout_s)
            method = channel.stream_stream(METHOD)  # no (de)serializers: bytes in, bytes out
            streams = [_Stream(method(), output_bytes) for _ in range(n_streams)]
        else:
            import tritonclient.grpc.aio as triton_aio

            triton = triton_aio.InferenceServerClient(target, channel_args=options)
            streams = [_TritonStream(triton, output_bytes) for _ in range(n_streams)]
        ids = [str(i) for i in range(concurrency)]
        make = codec.message

        async def bookend(start: bool) -> list[str | None]:
            futures = [
                streams[i // per_stream].send(ids[i], make(i, 0, start=start, end=not start))
                for i in range(concurrency)
            ]
            return list(await asyncio.wait_for(asyncio.gather(*futures), timeout_s))

        started_errors = [e for e in await bookend(start=True) if e is not None]
        if started_errors:
            raise RuntimeError(
                f"{len(started_errors)} of {concurrency} sequences failed to start: "
                f"{started_errors[:3]}"
            )
        setup_s = time.perf_counter() - opened_at

        result = LoadResult(concurrency=concurrency, window_s=0.0)
        window = Window(time.perf_counter(), warmup_s, duration_s, max_requests)
        cpu = CpuMarks(cpu_probes)

        async def one_sequence(index: int) -> None:
            stream = streams[index // per_stream]
            request_id = ids[index]
            number = 1  # the start step was number 0
            while window.open_for_new(time.perf_counter()):
                message = make(index, number)
                number += 1
                started = time.perf_counter()
                try:
                    error = await stream.send(request_id, message)
                except Exception as exc:  # a failed message is a data point, not a crash
                    error = f"{type(exc).__name__}: {exc}"
                if not window.record(result, started, time.perf_counter(), error):
                    return
                if error is not None and stream.broken is not None:
                    return

        timer = asyncio.create_task(cpu.mark_window_edges(window))
        try:
            await asyncio.wait_for(
                asyncio.gather(*(one_sequence(i) for i in range(concurrency))),
                warmup_s + duration_s + timeout_s,
            )
        finally:
            timer.cancel()
        result.window_s = window.length()
        cpu.into(result)
        end_failures = sum(e is not None for e in await bookend(start=False))
        return result, setup_s, end_failures
    finally:
        for stream in streams:
            await stream.close(10.0)
        if channel is not None:
            await channel.close()
        if triton is not None:
            await triton.close()


def run_grpc_stream_point(
    target: str, model: str, bodies: Sequence[bytes], loop: str = "uvloop", **options: Any
) -> tuple[LoadResult, float, int]:
    """On uvloop when installed (as the WebSocket client; grpc.aio runs on it: its sockets are
    grpc core's own, the loop schedules the tasks and futures) or on the stdlib loop."""
    coro = run_grpc_stream_point_async(target, model, bodies, **options)
    return run_client(coro, use_uvloop=loop != "asyncio")
