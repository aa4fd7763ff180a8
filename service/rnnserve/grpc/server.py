"""The grpc.aio server: KServe v2 inference, standard health checking (grpc.health.v1) and
server reflection, in the event loop that serves HTTP. serve.py starts it after the engine is
open and stops it (with grace) before the engine closes."""

from __future__ import annotations

import logging

import grpc
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2

from rnnserve.engine import Engine
from rnnserve.grpc.generated import inference_pb2, inference_pb2_grpc
from rnnserve.grpc.health import HealthServicer
from rnnserve.grpc.servicer import InferenceServicer
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


async def start_grpc_server(engine: Engine, settings: Settings) -> grpc.aio.Server:
    """Listen on settings.host:settings.grpc_port; messages up to settings.max_body_bytes
    (grpcio's default is 4 MiB; tritonclient allows 2 GiB on its side)."""
    limit = settings.max_body_bytes
    server = grpc.aio.server(options=[
        ("grpc.max_send_message_length", limit),
        ("grpc.max_receive_message_length", limit),
        ("grpc.so_reuseport", 0),  # a port in use is an error, not a silently shared port
    ])
    inference_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(
        InferenceServicer(engine), server)

    health_pb2_grpc.add_HealthServicer_to_server(HealthServicer(engine, (SERVICE,)), server)
    names = (SERVICE, HEALTH_SERVICE, reflection.SERVICE_NAME)
    reflection.enable_server_reflection(names, server, pool=reflection_pool())

    where = address(settings.host, settings.grpc_port)
    try:
        server.add_insecure_port(where)
    except RuntimeError as exc:
        raise RuntimeError(f"cannot listen for gRPC on {where} ({exc}): is the port in use? "
                           "choose another with --grpc-port, or 0 to turn gRPC off") from None
    await server.start()
    log.info("gRPC listening on %s", where)
    return server
