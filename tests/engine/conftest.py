"""The engine tests' engine: the tiny models, started and opened in the test's event loop."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from rnnserve.engine import Engine
from rnnserve.settings import Settings


@pytest.fixture
async def engine(tiny_repo: Path) -> AsyncIterator[Engine]:
    eng = Engine(Settings(models=tiny_repo, grpc_port=0, max_delay_ms=2))
    eng.start()
    await eng.open()
    yield eng
    await eng.aclose()
    eng.close()
