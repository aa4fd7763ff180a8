"""KServe v2 sequence inputs, alike over HTTP (raw JSON) and gRPC (the real tritonclient.grpc),
against one real server: a step that asks for an output the model does not have is refused
before anything is applied (the sequence keeps its steps and its next output is what it would
have been; a refused start does not restart it, a refused end does not end it); a string
sequence_id is 1 to 256 printable characters; a model version that is not a number is
unknown (404, NOT_FOUND), never a server error."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from tests.conftest import ServerProcess, serving

RNG = np.random.default_rng(29)
MODEL = "tiny-gru"
TRANSPORTS = ["http", "grpc"]


@pytest.fixture(scope="module")
def server(tiny_repo: Path, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[ServerProcess]:
    with serving(["--models", str(tiny_repo)], tmp_path_factory.mktemp("v2-inputs") / "log",
                 grpc=True) as proc:
        yield proc


class Refused(Exception):
    """A refused infer call: its status (HTTP status, or gRPC code name) and message."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status, self.message = status, message


def infer(server: ServerProcess, triton: grpcclient.InferenceServerClient, transport: str,
          x: np.ndarray, sequence_id: int | str, outputs: list[str] | None = None,
          version: str = "", **flags: bool) -> np.ndarray:
    """One sequence request over `transport`; the "output" tensor [batch, time, 1], or
    Refused."""
    if transport == "grpc":
        tensor = grpcclient.InferInput("input", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
        requested = [grpcclient.InferRequestedOutput(n) for n in outputs] if outputs else None
        try:
            result = triton.infer(MODEL, [tensor], model_version=version, outputs=requested,
                                  sequence_id=sequence_id, **flags)
        except InferenceServerException as exc:
            raise Refused(str(exc.status()), str(exc.message())) from None
        return np.asarray(result.as_numpy("output"))
    body: dict[str, Any] = {
        "parameters": {"sequence_id": sequence_id, **flags},
        "inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32",
                    "data": x.ravel().tolist()}]}
    if outputs:
        body["outputs"] = [{"name": name} for name in outputs]
    route = f"/versions/{version}" if version else ""
    r = httpx.post(f"{server.url}/v2/models/{MODEL}{route}/infer", json=body)
    if r.status_code != 200:
        raise Refused(str(r.status_code), r.json()["error"])
    tensor_json = next(o for o in r.json()["outputs"] if o["name"] == "output")
    return np.asarray(tensor_json["data"], np.float32).reshape(tensor_json["shape"])


def refused(call: Any) -> Refused:
    with pytest.raises(Refused) as caught:
        call()
    return caught.value


INVALID = {"http": "400", "grpc": "StatusCode.INVALID_ARGUMENT"}
NOT_FOUND = {"http": "404", "grpc": "StatusCode.NOT_FOUND"}


def session_of(server: ServerProcess, kind: str, sequence_id: int | str) -> httpx.Response:
    """The session behind a sequence (keys off: v2.{model}.{n|s}.{id})."""
    return httpx.get(f"{server.url}/v1/sessions/v2.{MODEL}.{kind}.{sequence_id}")


def whole(server: ServerProcess, seq: np.ndarray) -> np.ndarray:
    r = httpx.post(f"{server.url}/v1/models/{MODEL}/predict", json={"inputs": [seq.tolist()]})
    assert r.status_code == 200, r.text
    return np.asarray(r.json()["outputs"][0], np.float32)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_step_asking_for_an_unknown_output_is_refused_before_it_is_applied(
    server: ServerProcess, triton: grpcclient.InferenceServerClient, transport: str,
) -> None:
    sequence_id = 4100 + TRANSPORTS.index(transport)
    seq = RNG.normal(size=(6, 3)).astype(np.float32)
    first = infer(server, triton, transport, seq[None, :2], sequence_id, sequence_start=True)
    for flags in ({}, {"sequence_start": True}, {"sequence_end": True}):
        refusal = refused(lambda flags=flags: infer(
            server, triton, transport, seq[None, 2:4], sequence_id, ["output", "nope"],
            **flags))
        assert refusal.status == INVALID[transport], flags
        assert refusal.message == "unknown output 'nope'; the model gives ['output', 'hn']"
        described = session_of(server, "n", sequence_id)
        assert described.status_code == 200, flags  # not ended
        assert described.json()["steps"] == 2, flags  # not applied, not restarted
    rest = infer(server, triton, transport, seq[None, 2:], sequence_id, sequence_end=True)
    got = np.concatenate([first[0], rest[0]])
    np.testing.assert_allclose(got, whole(server, seq), atol=1e-5)  # as if never asked


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_string_sequence_ids_are_1_to_256_printable_characters(
    server: ServerProcess, triton: grpcclient.InferenceServerClient, transport: str,
) -> None:
    x = np.ones((1, 1, 3), np.float32)
    longest = f"{transport}-" + "s" * (256 - len(transport) - 1)
    infer(server, triton, transport, x, longest, sequence_start=True)
    assert session_of(server, "s", longest).json()["steps"] == 1
    infer(server, triton, transport, x, longest, sequence_end=True)

    too_long = longest + "s"
    refusal = refused(lambda: infer(server, triton, transport, x, too_long,
                                    sequence_start=True))
    assert refusal.status == INVALID[transport]
    assert "sequence_id has 257 characters; a string sequence_id has 1 to 256" in \
        refusal.message
    assert session_of(server, "s", too_long).status_code == 404  # nothing was created
    huge = refused(lambda: infer(server, triton, transport, x, "h" * 100_000,
                                 sequence_start=True))
    assert huge.status == INVALID[transport] and "100000 characters" in huge.message
    assert len(huge.message) < 300  # the refusal does not echo the id back
    for unprintable in ("line\nbreak", "tab\there", "nul\x00", "bell\x07", "zero\u200bwidth"):
        refusal = refused(lambda s=unprintable: infer(server, triton, transport, x, s,
                                                      sequence_start=True))
        assert refusal.status == INVALID[transport], repr(unprintable)
        assert "printable characters" in refusal.message, repr(unprintable)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_version_that_is_not_a_number_is_unknown(
    server: ServerProcess, triton: grpcclient.InferenceServerClient, transport: str,
) -> None:
    x = np.ones((1, 1, 3), np.float32)
    for version in ("\u00b2", "\u0661", "x"):  # superscript two, Arabic-Indic one, a letter
        refusal = refused(lambda v=version: infer(server, triton, transport, x, 0, version=v))
        assert refusal.status == NOT_FOUND[transport], repr(version)
        assert f"has no version {version!r}" in refusal.message
    np.testing.assert_equal(infer(server, triton, transport, x, 0, version="1").shape,
                            (1, 1, 1))


def test_grpc_model_ready_of_a_version_that_is_not_a_number(
    triton: grpcclient.InferenceServerClient,
) -> None:
    assert triton.is_model_ready(MODEL, "\u00b2") is False
    assert triton.is_model_ready(MODEL, "1") is True
