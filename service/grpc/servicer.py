"""`inference.GRPCInferenceService` over the engine: each RPC converts, awaits the engine and
converts back. Stateful requests (the sequence parameters) step the same sessions as HTTP v2,
so a sequence started over gRPC can be continued over HTTP and the other way round."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from typing import Any

from service.engine import Engine
from service.errors import NotFound
from service.grpc import converters
from service.grpc.errors import aborts_on_error, status_of
from service.grpc.generated import inference_pb2 as pb
from service.grpc.stream import pipeline

STREAM_WINDOW = 256
"""Most messages of one ModelStreamInfer stream in flight at once."""


class InferenceServicer:
    """Registered with `add_GRPCInferenceServiceServicer_to_server`; gRPC calls the methods by
    their RPC names. `context` is a grpc.aio.ServicerContext."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    @aborts_on_error
    async def ServerLive(self, request: pb.ServerLiveRequest, context: Any
                         ) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    @aborts_on_error
    async def ServerReady(self, request: pb.ServerReadyRequest, context: Any
                          ) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self._engine.ready)

    @aborts_on_error
    async def ModelReady(self, request: pb.ModelReadyRequest, context: Any
                         ) -> pb.ModelReadyResponse:
        """An unknown model or version is not ready (HTTP answers 404, which tritonclient.http
        reports as not ready); tritonclient.grpc expects ready=false, not an error."""
        try:
            self._engine.runner(request.name, request.version or None)
        except NotFound:
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=True)

    @aborts_on_error
    async def ServerMetadata(self, request: pb.ServerMetadataRequest, context: Any
                             ) -> pb.ServerMetadataResponse:
        return converters.server_metadata(self._engine.server_info())

    @aborts_on_error
    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: Any
                            ) -> pb.ModelMetadataResponse:
        described = self._engine.describe(request.name, request.version or None)
        return converters.model_metadata(described)

    @aborts_on_error
    async def ModelInfer(self, request: pb.ModelInferRequest, context: Any
                         ) -> pb.ModelInferResponse:
        return await self._infer(request)

    async def ModelStreamInfer(self, requests: AsyncIterable[pb.ModelInferRequest],
                               context: Any) -> AsyncIterator[pb.ModelStreamInferResponse]:
        """One response per request, as each completes; the steps of one sequence in
        arrival order. A failed request gets an in-band error and the stream goes on."""
        stream = pipeline(requests, self._stream_one, converters.sequence_key, STREAM_WINDOW)
        async for response in stream:
            yield response

    async def _stream_one(self, request: pb.ModelInferRequest) -> pb.ModelStreamInferResponse:
        try:
            return pb.ModelStreamInferResponse(infer_response=await self._infer(request))
        except Exception as exc:
            return converters.stream_error(request, status_of(exc)[1])

    async def _infer(self, request: pb.ModelInferRequest) -> pb.ModelInferResponse:
        call = converters.decode_infer_request(request)
        signature = self._engine.runner(call.model, call.version).signature
        converters.check_requested_outputs(call, signature.output_names)
        if call.sequence is None:
            runner, results = await self._engine.infer(call.model, call.inputs,
                                                       version=call.version)
        else:
            runner, results = await self._engine.sessions.sequence_step(
                call.model, call.version, *call.sequence, call.inputs)
        return converters.encode_infer_response(runner.name, runner.version, call, results,
                                                runner.signature.output_names)
