"""SessionRetired through the client: a session and a stream on a version removed from the
repository step on within the grace (--retire-grace-s), then raise SessionRetired (REST 410,
WebSocket close 4410), final, with the server's message."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from rnnserve.client import Client, SessionRetired

from tests.conftest import serving
from tests.lifecycle.test_retirement import put_version


def test_a_retired_version_raises_session_retired(tmp_path: Path) -> None:
    repo = tmp_path / "models"
    repo.mkdir()
    put_version(repo, "forecast", 1, "temperature-gru")
    put_version(repo, "forecast", 2, "temperature-rnn")
    with serving(["--models", str(repo), "--model-control", "poll", "--repository-poll-s",
                  "0.3", "--retire-grace-s", "1"], tmp_path / "server.log") as server, \
            Client(server.url) as client:
        width = client.model("forecast", 1).input_size
        reading = np.zeros(width, np.float32)
        session = client.create_session("forecast", version=1)
        stream = client.stream("forecast", version=1)
        stream.open()
        assert session.version == 1 and stream.aio.version == 1
        session.step(reading)
        stream.step(reading)
        shutil.rmtree(repo / "forecast" / "1")
        deadline = time.monotonic() + 30
        for call in (session.step, stream.step):
            with pytest.raises(SessionRetired) as retired:  # on within the grace, then final
                while time.monotonic() < deadline:
                    call(reading)
                    time.sleep(0.2)
            assert retired.value.status == 410 and "retired" in str(retired.value)
        stream.close()
