"""Triton's ModelConfig and ModelStatistics RPCs: the engine's answers (Triton's JSON shape,
engine/v2_extensions.py, the same HTTP sends) parsed into the messages of inference.proto, so
gRPC and HTTP say the same thing field for field."""

from __future__ import annotations

from google.protobuf import json_format

from rnnserve.engine import Engine, model_config, model_statistics
from rnnserve.grpc.generated import inference_pb2 as pb


def config_response(engine: Engine, request: pb.ModelConfigRequest) -> pb.ModelConfigResponse:
    config = model_config(engine, request.name, request.version or None)
    response = pb.ModelConfigResponse()
    json_format.ParseDict({"config": config}, response)
    return response


def statistics_response(engine: Engine, request: pb.ModelStatisticsRequest
                        ) -> pb.ModelStatisticsResponse:
    """Every model (no name), every version of one (no version), or one version."""
    stats = model_statistics(engine, request.name or None, request.version or None)
    response = pb.ModelStatisticsResponse()
    json_format.ParseDict(stats, response)
    return response
