"""The per-client-address cap on live sessions over gRPC (KServe v2 sequence_start), against
real servers with keys off and --max-sessions-per-client 3: the sequence past the cap gets
RESOURCE_EXHAUSTED, ending one makes room, one count per address whatever the transport;
`x-forwarded-for` metadata names the client only from a trusted proxy (--forwarded-allow-ips),
whose own calls are not counted. HTTP and the WebSocket: tests/http/test_client_cap.py."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from rnnserve.grpc.generated import inference_pb2 as pb
from rnnserve.grpc.generated import inference_pb2_grpc

from tests.conftest import ServerProcess, serving

CAP = 3


def server_with(tiny_repo: Path, folder: Path, *args: str) -> Iterator[ServerProcess]:
    with serving(["--models", str(tiny_repo), "--max-sessions-per-client", str(CAP), *args],
                 folder / "server.log", grpc=True) as proc:
        yield proc


@pytest.fixture(scope="module")
def capped(tiny_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    yield from server_with(tiny_repo, tmp_path_factory.mktemp("capped"))


@pytest.fixture(scope="module")
def proxied(tiny_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    yield from server_with(tiny_repo, tmp_path_factory.mktemp("proxied"),
                           "--forwarded-allow-ips", "127.0.0.1")


def step(sequence_id: int, *, start: bool = False, end: bool = False) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="tiny-gru")
    request.parameters["sequence_id"].int64_param = sequence_id
    request.parameters["sequence_start"].bool_param = start
    request.parameters["sequence_end"].bool_param = end
    tensor = request.inputs.add(name="input", datatype="FP32", shape=[1, 1, 3])
    tensor.contents.fp32_contents.extend([0.1, 0.2, 0.3])
    return request


Call = tuple[int, bool, bool, str | None]
"""(sequence id, start, end, x-forwarded-for)"""
Outcome = tuple[grpc.StatusCode | None, str]
"""(None for OK, else the status code; the details)"""


def run(server: ServerProcess, calls: list[Call]) -> list[Outcome]:
    async def go() -> list[Outcome]:
        out: list[Outcome] = []
        async with grpc.aio.insecure_channel(server.grpc_url) as channel:
            stub = inference_pb2_grpc.GRPCInferenceServiceStub(channel)
            for sequence_id, start, end, address in calls:
                metadata = (("x-forwarded-for", address),) if address else None
                try:
                    await stub.ModelInfer(step(sequence_id, start=start, end=end),
                                          metadata=metadata, timeout=10)
                    out.append((None, ""))
                except grpc.aio.AioRpcError as exc:
                    out.append((exc.code(), exc.details() or ""))
        return out

    return asyncio.run(go())


def codes(outcomes: list[Outcome]) -> list[grpc.StatusCode | None]:
    return [code for code, _ in outcomes]


def starts(ids: range | list[int], address: str | None = None) -> list[Call]:
    return [(i, True, False, address) for i in ids]


def ends(ids: range | list[int], address: str | None = None) -> list[Call]:
    return [(i, False, True, address) for i in ids]


OK, FULL = None, grpc.StatusCode.RESOURCE_EXHAUSTED


def test_sequence_start_past_the_cap_is_resource_exhausted(capped: ServerProcess) -> None:
    outcomes = run(capped, starts(range(1, 5)))
    assert codes(outcomes) == [OK, OK, OK, FULL]
    refusal = outcomes[3][1]
    assert "client address 127.0.0.1 holds its maximum of 3 live sessions" in refusal
    assert "end some sequences (sequence_end=true)" in refusal
    assert "--max-sessions-per-client" in refusal
    assert codes(run(capped, starts([1]))) == [OK]  # a restart replaces its own session
    assert codes(run(capped, ends([1]) + starts([4, 5]))) == [OK, OK, FULL]  # ending makes room
    assert codes(run(capped, ends([2, 3, 4]))) == [OK, OK, OK]


def test_one_count_per_address_across_transports(capped: ServerProcess) -> None:
    r = httpx.post(f"{capped.url}/v1/models/tiny-gru/sessions")
    assert r.status_code == 201
    try:
        assert codes(run(capped, starts(range(11, 14)))) == [OK, OK, FULL]
    finally:
        httpx.delete(f"{capped.url}/v1/sessions/{r.json()['session_id']}")
        run(capped, ends([11, 12]))


def test_forwarded_for_from_an_untrusted_peer_changes_nothing(capped: ServerProcess) -> None:
    outcomes = run(capped, [(20 + i, True, False, f"10.0.0.{i}") for i in range(4)])
    assert codes(outcomes) == [OK, OK, OK, FULL]
    assert "client address 127.0.0.1" in outcomes[3][1]
    run(capped, ends(range(20, 23)))


def test_behind_a_trusted_proxy_each_forwarded_address_has_its_own_cap(
        proxied: ServerProcess) -> None:
    outcomes = run(proxied, starts(range(31, 35), "10.0.0.1"))
    assert codes(outcomes) == [OK, OK, OK, FULL]
    assert "client address 10.0.0.1" in outcomes[3][1]
    assert codes(run(proxied, starts(range(41, 45), "10.0.0.2"))) == [OK, OK, OK, FULL]
    own = CAP + 2  # the proxy's own calls are not counted
    assert codes(run(proxied, starts(range(51, 51 + own)))) == [OK] * own
    run(proxied, ends(range(31, 34)) + ends(range(41, 44)) + ends(range(51, 51 + own)))


@pytest.mark.parametrize(("peer", "host"), [
    ("ipv4:127.0.0.1:5555", "127.0.0.1"),
    ("ipv6:[::1]:5555", "::1"),
    ("ipv6:%5B2001:db8::7%5D:443", "2001:db8::7"),  # as some grpcio versions quote it
    ("unix:/run/rnnserve.sock", ""),
    ("", ""),
])
def test_peer_host(peer: str, host: str) -> None:
    from rnnserve.grpc.servicer import peer_host

    assert peer_host(peer) == host
