"""The standard gRPC health checking service (grpc.health.v1.Health), answered from the
engine's readiness at each call, so that it turns NOT_SERVING as soon as the engine does (a
failed model under strict readiness, draining at shutdown, or the state store unreachable for
longer than --store-unready-after-s), like GET /v2/health/ready."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc

from rnnserve.engine import Engine
from rnnserve.grpc.generated import health_pb2

WATCH_POLL_S = 1.0
"""How often Watch looks at readiness."""


class HealthServicer:
    """Check, List and Watch for "" (the server) and each served service name."""

    def __init__(self, engine: Engine, services: tuple[str, ...]) -> None:
        self._engine = engine
        self._services = {"", *services}

    def _status(self, service: str) -> Any:
        if service not in self._services:
            return health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
        if self._engine.ready:
            return health_pb2.HealthCheckResponse.SERVING
        return health_pb2.HealthCheckResponse.NOT_SERVING

    async def Check(self, request: health_pb2.HealthCheckRequest, context: Any
                    ) -> health_pb2.HealthCheckResponse:
        if request.service not in self._services:
            await context.abort(grpc.StatusCode.NOT_FOUND,
                                f"unknown service {request.service[:200]!r}")
        return health_pb2.HealthCheckResponse(status=self._status(request.service))

    async def List(self, request: Any, context: Any) -> Any:
        """Every service's status (the List RPC: rnnserve serves its own grpc.health.v1 stubs,
        proto/health.proto, so List is there whatever protobuf major is installed)."""
        statuses = {name: health_pb2.HealthCheckResponse(status=self._status(name))
                    for name in sorted(self._services)}
        return health_pb2.HealthListResponse(statuses=statuses)

    async def Watch(self, request: health_pb2.HealthCheckRequest, context: Any
                    ) -> AsyncIterator[health_pb2.HealthCheckResponse]:
        """The status now, then each change (an unknown service is SERVICE_UNKNOWN)."""
        last = None
        while True:
            status = self._status(request.service)
            if status != last:
                yield health_pb2.HealthCheckResponse(status=status)
                last = status
            await asyncio.sleep(WATCH_POLL_S)
