"""The rnnserve-client command against a real server: its stream of a CSV prints the same
outputs as the library's stream (and a stateless prediction), resumes with --session, reads
stdin, takes the URL from the environment, and says what went wrong in one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from rnnserve.client import Client

from tests.conftest import ServerProcess


def cli(*args: str, stdin: str | None = None, env: dict[str, str] | None = None
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rnnserve_client", *args], input=stdin,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def parsed(stdout: str) -> np.ndarray:
    return np.asarray([[float(v) for v in line.split(",")] for line in stdout.splitlines()],
                      dtype=np.float32)


def write_csv(path: Path, rows: np.ndarray, header: bool = True) -> Path:
    lines = [",".join(f"f{i}" for i in range(rows.shape[1]))] if header else []
    lines += [",".join(format(float(v), ".9g") for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_the_cli_streams_a_csv_exactly_as_the_library_does(server: ServerProcess,
                                                           tmp_path: Path) -> None:
    with Client(server.url) as client:
        width = client.model("tiny-gru").input_size
        rows = np.random.default_rng(5).normal(size=(120, width)).astype(np.float32)
        rows = rows.astype(np.float64).round(6).astype(np.float32)  # as the CSV holds them
        with client.stream("tiny-gru") as stream:
            library = np.concatenate(list(stream.feed(rows)))
        whole = client.predict("tiny-gru", rows)
    csv_file = write_csv(tmp_path / "readings.csv", rows)

    streamed = cli("--url", server.url, "stream", "tiny-gru", str(csv_file))
    assert streamed.returncode == 0, streamed.stderr
    np.testing.assert_array_equal(parsed(streamed.stdout), library)
    np.testing.assert_allclose(parsed(streamed.stdout), whole, atol=1e-5)
    session = streamed.stderr.split("session: ", 1)[1].split()[0]

    # resumed from stdin, the URL from the environment: the state goes on where it stopped
    # (one `--session=ID` argument: an id may begin with "-", which argparse would otherwise
    # take for an option; CI hit one)
    more = cli("stream", "tiny-gru", "-", f"--session={session}",
               stdin=csv_file.read_text(), env={"RNNSERVE_URL": server.url})
    assert more.returncode == 0, more.stderr
    with Client(server.url) as client:
        twice = client.predict("tiny-gru", np.concatenate([rows, rows]))
        assert client.session(session).steps == 240
    np.testing.assert_allclose(parsed(more.stdout), twice[120:], atol=1e-5)

    predicted = cli("--url", server.url, "predict", "tiny-gru", str(csv_file))
    assert predicted.returncode == 0, predicted.stderr
    np.testing.assert_array_equal(parsed(predicted.stdout), whole)

    listed = cli("--url", server.url, "models")
    assert listed.returncode == 0 and "tiny-gru\tversion 1" in listed.stdout


def test_the_cli_says_what_went_wrong(server: ServerProcess, tmp_path: Path) -> None:
    gone = cli("--url", server.url, "stream", "tiny-gru", "--session", "no-such-session",
               stdin="1,2,3\n")
    assert gone.returncode == 1
    assert gone.stderr.startswith("rnnserve-client: SessionGone: ")
    missing = cli("--url", server.url, "predict", "no-such-model", stdin="1,2,3\n")
    assert missing.returncode == 1 and "NotFound" in missing.stderr
