"""The grpc.aio server: KServe v2 inference, standard health checking (grpc.health.v1) and
server reflection, in the event loop that serves HTTP. serve.py starts it after the engine is
open and stops it (with grace) before the engine closes."""

from __future__ import annotations

import logging
from typing import Any

import grpc
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_reflection.v1alpha import reflection, reflection_pb2

from rnnserve.engine import Engine
from rnnserve.grpc.generated import health_pb2, inference_pb2
from rnnserve.grpc.health import HealthServicer
from rnnserve.grpc.observed import CallObserver
from rnnserve.grpc.servicer import InferenceServicer
from rnnserve.grpc.undecodable import (
    Undecodable,
    lenient,
    refusing_undecodable,
    refusing_undecodable_stream,
)
from rnnserve.settings import Settings

log = logging.getLogger("rnnserve.grpc")

SERVICE = inference_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name


def address(host: str, port: int) -> str:
    """host:port for grpc, with an IPv6 literal in brackets."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}"


def reflection_pool() -> DescriptorPool:
    """The served files in one pool. Ours is private (see rnnserve.grpc.generate), so reflection
    gets a pool of its own holding it and the health and reflection files."""
    pool = DescriptorPool()
    for file in (inference_pb2.DESCRIPTOR, health_pb2.DESCRIPTOR, reflection_pb2.DESCRIPTOR):
        pool.AddSerializedFile(file.serialized_pb)
    return pool


UNARY_METHODS: dict[str, tuple[Any, Any]] = {  # name: (request, response) classes
    "ServerLive": (inference_pb2.ServerLiveRequest, inference_pb2.ServerLiveResponse),
    "ServerReady": (inference_pb2.ServerReadyRequest, inference_pb2.ServerReadyResponse),
    "ModelReady": (inference_pb2.ModelReadyRequest, inference_pb2.ModelReadyResponse),
    "ServerMetadata": (inference_pb2.ServerMetadataRequest,
                       inference_pb2.ServerMetadataResponse),
    "ModelMetadata": (inference_pb2.ModelMetadataRequest, inference_pb2.ModelMetadataResponse),
    "ModelInfer": (inference_pb2.ModelInferRequest, inference_pb2.ModelInferResponse),
    "ModelConfig": (inference_pb2.ModelConfigRequest, inference_pb2.ModelConfigResponse),
    "ModelStatistics": (inference_pb2.ModelStatisticsRequest,
                        inference_pb2.ModelStatisticsResponse),
    "RepositoryIndex": (inference_pb2.RepositoryIndexRequest,
                        inference_pb2.RepositoryIndexResponse),
    "RepositoryModelLoad": (inference_pb2.RepositoryModelLoadRequest,
                            inference_pb2.RepositoryModelLoadResponse),
    "RepositoryModelUnload": (inference_pb2.RepositoryModelUnloadRequest,
                              inference_pb2.RepositoryModelUnloadResponse),
}


def add_inference_service(servicer: InferenceServicer, observer: CallObserver,
                          server: grpc.aio.Server) -> None:
    """The generated `add_GRPCInferenceServiceServicer_to_server`, but every method observed
    (grpc/observed.py: metrics, log, span, request id), a message that does not parse is
    answered INVALID_ARGUMENT (grpc/undecodable.py), and ModelStreamInfer's replies go out
    as the bytes the servicer encodes (grpc/wire.py): no response serializer, so no message
    object per reply."""
    handlers = {
        name: grpc.unary_unary_rpc_method_handler(
            observer.unary(name, refusing_undecodable(getattr(servicer, name),
                                                      servicer.refusing_for(name))),
            request_deserializer=lenient(request),
            response_serializer=response.SerializeToString)
        for name, (request, response) in UNARY_METHODS.items()}
    handlers["ModelStreamInfer"] = grpc.stream_stream_rpc_method_handler(
        observer.streaming("ModelStreamInfer", servicer.ModelStreamInfer),
        request_deserializer=lenient(inference_pb2.ModelInferRequest))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    server.add_registered_method_handlers(SERVICE, handlers)


def add_health_service(servicer: HealthServicer, server: grpc.aio.Server) -> None:
    """The generated `add_HealthServicer_to_server`, but a request that does not parse gets
    INVALID_ARGUMENT (grpc/undecodable.py), not grpc's UNKNOWN and an error in the log: the
    health service needs no key, so anyone could fill the log otherwise."""
    check, listing = health_pb2.HealthCheckRequest, health_pb2.HealthListRequest
    handlers = {
        "Check": grpc.unary_unary_rpc_method_handler(
            refusing_undecodable(servicer.Check), request_deserializer=lenient(check),
            response_serializer=health_pb2.HealthCheckResponse.SerializeToString),
        "List": grpc.unary_unary_rpc_method_handler(
            refusing_undecodable(servicer.List), request_deserializer=lenient(listing),
            response_serializer=health_pb2.HealthListResponse.SerializeToString),
        "Watch": grpc.unary_stream_rpc_method_handler(
            refusing_undecodable_stream(servicer.Watch), request_deserializer=lenient(check),
            response_serializer=health_pb2.HealthCheckResponse.SerializeToString),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(HEALTH_SERVICE,
                                                                          handlers),))
    server.add_registered_method_handlers(HEALTH_SERVICE, handlers)


def add_reflection_service(names: tuple[str, ...], server: grpc.aio.Server) -> None:
    """grpcio-reflection's servicer, registered as `reflection.enable_server_reflection`
    would, but a stream message that does not parse gets an in-band error response (as the
    servicer gives a request of no known kind) and the stream goes on, instead of grpc's
    UNKNOWN and an error in the log: reflection needs no key either."""
    servicer = reflection.aio.ReflectionServicer(names, pool=reflection_pool())
    request = reflection_pb2.ServerReflectionRequest
    response = reflection_pb2.ServerReflectionResponse

    async def one(message: Any) -> Any:
        yield message

    async def answer(requests: Any, context: Any) -> Any:
        async for message in requests:
            if type(message) is Undecodable:
                yield response(error_response=reflection_pb2.ErrorResponse(
                    error_code=grpc.StatusCode.INVALID_ARGUMENT.value[0],
                    error_message=message.error.message))
                continue
            async for reply in servicer.ServerReflectionInfo(one(message), context):
                yield reply

    handlers = {"ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
        answer, request_deserializer=lenient(request),
        response_serializer=response.SerializeToString)}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        reflection.SERVICE_NAME, handlers),))
    server.add_registered_method_handlers(reflection.SERVICE_NAME, handlers)


async def start_grpc_server(engine: Engine, settings: Settings) -> grpc.aio.Server:
    """Listen on settings.host:settings.grpc_port; messages up to settings.max_body_bytes
    (grpcio's default is 4 MiB; tritonclient allows 2 GiB on its side)."""
    limit = settings.max_body_bytes
    server = grpc.aio.server(options=[
        ("grpc.max_send_message_length", limit),
        ("grpc.max_receive_message_length", limit),
        ("grpc.so_reuseport", 0),  # a port in use is an error, not a silently shared port
    ])
    add_inference_service(InferenceServicer(engine), CallObserver(engine), server)

    add_health_service(HealthServicer(engine, (SERVICE,)), server)
    add_reflection_service((SERVICE, HEALTH_SERVICE, reflection.SERVICE_NAME), server)

    where = address(settings.host, settings.grpc_port)
    try:
        server.add_insecure_port(where)
    except RuntimeError as exc:
        raise RuntimeError(f"cannot listen for gRPC on {where} ({exc}): is the port in use? "
                           "choose another with --grpc-port, or 0 to turn gRPC off") from None
    await server.start()
    log.info("gRPC listening on %s", where)
    return server
