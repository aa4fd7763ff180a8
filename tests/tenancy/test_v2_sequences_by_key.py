"""KServe v2 sequence ids are scoped by API key: key A's sequence 42 and key B's 42 are two
sequences, over HTTP and gRPC alike, and nothing one key does to its sequence (start, step,
end) reaches the other's."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.conftest import ServerProcess, serving

A = {"Authorization": "Bearer key-a"}
B = {"Authorization": "Bearer key-b"}
RNG = np.random.default_rng(42)


@pytest.fixture(scope="module")
def server(tiny_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    log = tmp_path_factory.mktemp("tenancy") / "server.log"
    args = ["--models", str(tiny_repo), "--api-keys", "key-a,key-b"]
    with serving(args, log, grpc=True) as proc:
        yield proc


def whole(server: ServerProcess, seq: np.ndarray) -> np.ndarray:
    """The model's outputs over a whole sequence at once (no state kept)."""
    r = httpx.post(f"{server.url}/v1/models/tiny-gru/predict", headers=A,
                   json={"inputs": [seq.tolist()]})
    return np.asarray(r.json()["outputs"][0], np.float32)


class Clients:
    """One key's HTTP and gRPC tritonclients."""

    def __init__(self, server: ServerProcess, headers: dict[str, str]) -> None:
        self.http = httpclient.InferenceServerClient(server.url.removeprefix("http://"))
        self.grpc = grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
        self.http_headers = headers
        self.grpc_headers = {k.lower(): v for k, v in headers.items()}

    def infer(self, over: str, x: np.ndarray, sequence_id: int | str, *, start: bool = False,
              end: bool = False) -> np.ndarray:
        module = httpclient if over == "http" else grpcclient
        tensor = module.InferInput("input", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
        client = self.http if over == "http" else self.grpc
        # a copy each call: tritonclient.http writes its own headers into the dict it is given
        headers = dict(self.http_headers if over == "http" else self.grpc_headers)
        result = client.infer("tiny-gru", [tensor], sequence_id=sequence_id,
                              sequence_start=start, sequence_end=end, headers=headers)
        return result.as_numpy("output")[0]

    def close(self) -> None:
        self.http.close()
        self.grpc.close()


@pytest.fixture
def keys(server: ServerProcess) -> Iterator[tuple[Clients, Clients]]:
    a, b = Clients(server, A), Clients(server, B)
    yield a, b
    a.close()
    b.close()


@pytest.mark.parametrize("sequence_id", [42, "device-42"])
@pytest.mark.parametrize(("a_over", "b_over"), [("http", "http"), ("grpc", "grpc"),
                                                 ("http", "grpc"), ("grpc", "http")])
def test_another_key_starting_the_same_id_gets_its_own_sequence(
    server: ServerProcess, keys: tuple[Clients, Clients], a_over: str, b_over: str,
    sequence_id: int | str,
) -> None:
    a, b = keys
    seq_a = RNG.normal(size=(5, 3)).astype(np.float32)
    seq_b = RNG.normal(size=(5, 3)).astype(np.float32)
    got_a = [a.infer(a_over, seq_a[None, :2], sequence_id, start=True)]
    got_b = [b.infer(b_over, seq_b[None, :3], sequence_id, start=True)]  # same id, other key
    got_a.append(a.infer(b_over, seq_a[None, 2:4], sequence_id))  # A goes on, either transport
    b.infer(a_over, seq_b[None, 3:5], sequence_id, end=True)      # B ends its own
    got_a.append(a.infer(a_over, seq_a[None, 4:], sequence_id, end=True))  # A's still there
    np.testing.assert_allclose(np.concatenate(got_a), whole(server, seq_a), atol=1e-5)
    np.testing.assert_allclose(got_b[0], whole(server, seq_b)[:3], atol=1e-5)


@pytest.mark.parametrize("over", ["http", "grpc"])
def test_a_key_cannot_step_or_end_another_keys_sequence(
    server: ServerProcess, keys: tuple[Clients, Clients], over: str
) -> None:
    a, b = keys
    sequence_id = 4242 if over == "http" else 4343
    seq = RNG.normal(size=(3, 3)).astype(np.float32)
    first = a.infer(over, seq[None, :1], sequence_id, start=True)
    with pytest.raises(InferenceServerException, match="not active"):
        b.infer(over, seq[None, 1:2], sequence_id)  # B never started it: not B's to step
    with pytest.raises(InferenceServerException, match="not active"):
        b.infer(over, seq[None, 1:2], sequence_id, end=True)
    rest = a.infer(over, seq[None, 1:], sequence_id, end=True)  # unchanged by B's attempts
    np.testing.assert_allclose(np.concatenate([first, rest]), whole(server, seq), atol=1e-5)


def test_a_keys_sequence_is_invisible_to_the_other_key_over_rest(
    server: ServerProcess, keys: tuple[Clients, Clients]
) -> None:
    from rnnserve.auth import owner_of_key
    from rnnserve.engine.v2 import sequence_session_id

    a, _ = keys
    a.infer("grpc", np.ones((1, 2, 3), np.float32), 5, start=True)
    url = f"{server.url}/v1/sessions/{sequence_session_id('tiny-gru', 5, owner_of_key('key-a'))}"
    assert httpx.get(url, headers=A).json()["steps"] == 2
    assert httpx.get(url, headers=B).status_code == 404
    unscoped = f"{server.url}/v1/sessions/{sequence_session_id('tiny-gru', 5)}"
    assert httpx.get(unscoped, headers=A).status_code == 404


def test_two_keys_in_one_call_are_refused_over_both_transports(server: ServerProcess) -> None:
    """Which key is meant is not guessed: two Authorization headers (HTTP) or authorization
    metadata entries (gRPC) are refused, in either order, as over HTTP's other routes."""
    import grpc
    from rnnserve.grpc.generated import inference_pb2 as pb
    from rnnserve.grpc.generated import inference_pb2_grpc

    with grpc.insecure_channel(server.grpc_url) as channel:
        stub = inference_pb2_grpc.GRPCInferenceServiceStub(channel)
        for order in (("key-a", "wrong"), ("wrong", "key-a")):
            metadata = [("authorization", f"Bearer {key}") for key in order]
            with pytest.raises(grpc.RpcError) as caught:
                stub.ModelMetadata(pb.ModelMetadataRequest(name="tiny-lstm"),
                                   metadata=metadata, timeout=20)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "2 authorization metadata entries" in caught.value.details()
            r = httpx.get(f"{server.url}/v2/models/tiny-lstm", timeout=10, headers=[
                ("authorization", f"Bearer {key}") for key in order])
            assert r.status_code == 400, r.text
        assert stub.ModelMetadata(pb.ModelMetadataRequest(name="tiny-lstm"), timeout=20,
                                  metadata=[("authorization", "Bearer key-a")]).name == "tiny-lstm"


def test_bytes_that_are_no_protobuf_are_refused_for_the_key_first(server: ServerProcess) -> None:
    """A message that does not parse is UNAUTHENTICATED without a valid key (as any request
    is) and INVALID_ARGUMENT with one: a caller without a key learns nothing of what it sent.
    ServerLive and ServerReady need no key, so they say INVALID_ARGUMENT to anyone."""
    import grpc

    with grpc.insecure_channel(server.grpc_url) as channel:
        def send(method: str, key: str | None) -> grpc.StatusCode:
            call = channel.unary_unary(f"/inference.GRPCInferenceService/{method}",
                                       request_serializer=lambda b: b,
                                       response_deserializer=lambda b: b)
            metadata = [("authorization", f"Bearer {key}")] if key else []
            with pytest.raises(grpc.RpcError) as caught:
                call(b"\xff" * 10, metadata=metadata, timeout=20)
            return caught.value.code()  # type: ignore[no-any-return]

        for method in ("ModelInfer", "ModelMetadata"):
            assert send(method, None) == grpc.StatusCode.UNAUTHENTICATED
            assert send(method, "wrong") == grpc.StatusCode.UNAUTHENTICATED
            assert send(method, "key-a") == grpc.StatusCode.INVALID_ARGUMENT
        assert send("ServerLive", None) == grpc.StatusCode.INVALID_ARGUMENT
        assert send("ServerReady", None) == grpc.StatusCode.INVALID_ARGUMENT
