"""The per-client-address cap on live sessions while API keys are off (--max-sessions-per-client),
against real servers: over REST, the WebSocket stream and KServe v2 HTTP the session past the
cap gets 429 with Retry-After (the WebSocket: the error, then close 1013) and deleting one makes
room; behind a trusted proxy (--forwarded-allow-ips) each forwarded address has its own count
and the proxy's own requests have none; without that trust X-Forwarded-For changes nothing; with
keys on only the per-key cap applies. gRPC: tests/grpc/test_grpc_client_cap.py."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from tests.conftest import ServerProcess, serving

CAP = 3


@pytest.fixture(scope="module")
def capped(tiny_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Keys off, 3 live sessions per client address, no trusted proxy."""
    with serving(["--models", str(tiny_repo), "--max-sessions-per-client", str(CAP)],
                 tmp_path_factory.mktemp("capped") / "server.log") as proc:
        yield proc


@pytest.fixture(scope="module")
def proxied(tiny_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The same cap behind a trusted proxy: 127.0.0.1 (the tests) plays the proxy."""
    with serving(["--models", str(tiny_repo), "--max-sessions-per-client", str(CAP),
                  "--forwarded-allow-ips", "127.0.0.1"],
                 tmp_path_factory.mktemp("proxied") / "server.log") as proc:
        yield proc


def forwarded(address: str | None) -> dict[str, str]:
    return {"X-Forwarded-For": address} if address else {}


def create(server: ServerProcess, address: str | None = None) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/models/tiny-gru/sessions", headers=forwarded(address))


def delete(server: ServerProcess, session_id: str) -> None:
    assert httpx.delete(f"{server.url}/v1/sessions/{session_id}").status_code == 204


def assert_refused(r: httpx.Response, address: str, advice: str) -> None:
    assert r.status_code == 429, r.text
    assert int(r.headers["retry-after"]) >= 1
    message = r.json()["error"]
    assert f"client address {address} holds its maximum of {CAP} live sessions" in message
    assert "--max-sessions-per-client" in message and advice in message


@pytest.fixture
def sessions(capped: ServerProcess, proxied: ServerProcess) -> Iterator[list[str]]:
    """Ids a test created over REST or a WebSocket, deleted after it (on either server), so
    every test starts with no session counted."""
    made: list[str] = []
    yield made
    for session_id in made:
        for server in (capped, proxied):
            httpx.delete(f"{server.url}/v1/sessions/{session_id}")


def fill(server: ServerProcess, made: list[str], address: str | None = None, n: int = CAP
         ) -> None:
    for _ in range(n):
        r = create(server, address)
        assert r.status_code == 201, r.text
        made.append(r.json()["session_id"])


def test_rest_past_the_cap_is_429_until_one_is_deleted(capped: ServerProcess,
                                                       sessions: list[str]) -> None:
    fill(capped, sessions)
    assert_refused(create(capped), "127.0.0.1", "delete some (DELETE /v1/sessions/{id})")
    delete(capped, sessions.pop(0))
    fill(capped, sessions, n=1)
    assert create(capped).status_code == 429


def ws_url(server: ServerProcess, query: str = "") -> str:
    return f"ws://127.0.0.1:{server.port}/v1/models/tiny-gru/stream{query}"


async def ws_session(server: ServerProcess, address: str | None = None,
                     query: str = "") -> dict[str, Any]:
    """Connect, read the first message (the session, or the error), then wait for the close
    that follows an error; returns the first message with the close code, if any."""
    async with websockets.connect(ws_url(server, query),
                                  additional_headers=forwarded(address)) as ws:
        first: dict[str, Any] = json.loads(await ws.recv())
        if "error" in first:
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
            assert closed.value.rcvd is not None
            first["close_code"] = closed.value.rcvd.code
    return first


async def test_websocket_past_the_cap_gets_the_error_and_close_1013(
        capped: ServerProcess, sessions: list[str]) -> None:
    for _ in range(CAP):  # every connect without a session_id creates one
        sessions.append((await ws_session(capped))["session_id"])
    refused = await ws_session(capped)
    assert refused["status"] == 429 and refused["close_code"] == 1013
    assert refused["retry_after_s"] > 0
    assert "client address 127.0.0.1 holds its maximum of 3" in refused["error"]
    resumed = await ws_session(capped, query=f"?session_id={sessions[0]}")
    assert resumed["session_id"] == sessions[0]  # attaching creates nothing: never refused
    delete(capped, sessions.pop(0))
    sessions.append((await ws_session(capped))["session_id"])


def v2_step(server: ServerProcess, sequence_id: int, *, start: bool = False, end: bool = False,
            address: str | None = None) -> httpx.Response:
    body = {"parameters": {"sequence_id": sequence_id, "sequence_start": start,
                           "sequence_end": end},
            "inputs": [{"name": "input", "shape": [1, 1, 3], "datatype": "FP32",
                        "data": [0.1, 0.2, 0.3]}]}
    return httpx.post(f"{server.url}/v2/models/tiny-gru/infer", json=body,
                      headers=forwarded(address))


def test_v2_sequence_start_past_the_cap_is_429(capped: ServerProcess) -> None:
    started = [71, 72, 73]
    try:
        for sequence_id in started:
            assert v2_step(capped, sequence_id, start=True).status_code == 200
        assert_refused(v2_step(capped, 74, start=True), "127.0.0.1",
                       "end some sequences (sequence_end=true)")
        assert v2_step(capped, 71, start=True).status_code == 200  # a restart replaces
        assert v2_step(capped, 71, end=True).status_code == 200  # ending one makes room
        started.remove(71)
        assert v2_step(capped, 74, start=True).status_code == 200
        started.append(74)
    finally:
        for sequence_id in started:
            v2_step(capped, sequence_id, end=True)


def test_forwarded_for_from_an_untrusted_peer_changes_nothing(
        capped: ServerProcess, sessions: list[str]) -> None:
    for address in ("10.0.0.1", "10.0.0.2", "10.0.0.3"):
        fill(capped, sessions, address, n=1)
    assert_refused(create(capped, "10.0.0.4"), "127.0.0.1", "DELETE /v1/sessions/")


async def test_behind_a_trusted_proxy_each_forwarded_address_has_its_own_cap(
        proxied: ServerProcess, sessions: list[str]) -> None:
    for address in ("10.0.0.1", "10.0.0.2"):
        fill(proxied, sessions, address)
        assert_refused(create(proxied, address), address, "DELETE /v1/sessions/")
    # a hop the client wrote itself does not make it another client: the nearest untrusted
    # hop (the address the proxy saw) counts
    assert_refused(create(proxied, "203.0.113.7, 10.0.0.1"), "10.0.0.1", "DELETE")
    fill(proxied, sessions, n=CAP + 2)  # the proxy's own requests: never capped
    for _ in range(CAP):  # over the WebSocket, forwarded alike
        sessions.append((await ws_session(proxied, "10.0.0.3"))["session_id"])
    refused = await ws_session(proxied, "10.0.0.3")
    assert refused["status"] == 429 and refused["close_code"] == 1013
    assert "client address 10.0.0.3" in refused["error"]
    for sequence_id in (81, 82, 83):  # and KServe v2 HTTP
        assert v2_step(proxied, sequence_id, start=True, address="10.0.0.4").status_code == 200
    assert_refused(v2_step(proxied, 84, start=True, address="10.0.0.4"), "10.0.0.4",
                   "sequence_end=true")
    for sequence_id in (81, 82, 83):
        assert v2_step(proxied, sequence_id, end=True, address="10.0.0.4").status_code == 200


def test_with_keys_only_the_per_key_cap_applies(start_server: Callable[..., ServerProcess],
                                                tiny_repo: Path) -> None:
    server = start_server("--models", str(tiny_repo), "--api-keys", "k1",
                          "--max-sessions-per-client", "2", "--max-sessions-per-key", "4")
    auth = {"Authorization": "Bearer k1"}
    for _ in range(4):  # the key is the tenant: one address, more than 2 sessions
        r = httpx.post(f"{server.url}/v1/models/tiny-gru/sessions", headers=auth)
        assert r.status_code == 201, r.text
    r = httpx.post(f"{server.url}/v1/models/tiny-gru/sessions", headers=auth)
    assert r.status_code == 429 and "this API key holds its maximum of 4" in r.json()["error"]


def test_an_ipv6_client_is_its_slash_64(proxied: ServerProcess, sessions: list[str]) -> None:
    """A host usually holds a whole /64: fresh addresses in it are one client."""
    for i in range(CAP):
        fill(proxied, sessions, f"2001:db8:0:7::{i + 1}", n=1)
    assert_refused(create(proxied, "2001:db8:0:7:abcd::9"), "2001:db8:0:7::/64", "DELETE")
    fill(proxied, sessions, "2001:db8:0:8::1", n=1)  # the next /64 is another client


@pytest.mark.parametrize(("trusted", "client", "forwarded", "counted"), [
    ("", "127.0.0.1", False, "127.0.0.1"),
    ("", "127.0.0.1", True, "127.0.0.1"),  # no trust: the peer, header or not
    ("127.0.0.1", "127.0.0.1", False, ""),  # the proxy's own request
    ("127.0.0.1", "10.0.0.1", True, "10.0.0.1"),
    ("10.0.0.0/8", "10.1.2.3", True, ""),  # only proxies on the way: none is a client
    ("*", "127.0.0.1", False, ""),  # every peer a proxy: its own requests are not counted,
    ("*", "10.0.0.1", True, "10.0.0.1"),  # but whom it forwards for is
    ("", "::ffff:10.0.0.1", False, "10.0.0.1"),
    ("", "", False, ""),  # unknown (a unix socket): not counted
])
def test_counted_address(trusted: str, client: str, forwarded: bool, counted: str) -> None:
    from rnnserve.proxies import TrustedProxies

    assert TrustedProxies(trusted).counted(client, forwarded) == counted
