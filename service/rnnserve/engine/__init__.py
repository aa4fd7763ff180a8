"""The transport-agnostic core. Protocol adapters (http/, grpc/) call only `Engine`;
nothing below this package knows about HTTP, JSON or protobuf."""

from rnnserve.engine.engine import Engine

__all__ = ["Engine"]
