"""Placeholder until the gRPC adapter lands: says so instead of failing."""

from __future__ import annotations

import logging
from typing import Any

from service.engine import Engine
from service.settings import Settings


async def start_grpc_server(engine: Engine, settings: Settings) -> Any:
    logging.getLogger("rnnserve.grpc").warning(
        "gRPC is not available in this build; serving HTTP only (--grpc-port 0 silences this)")
    return None
