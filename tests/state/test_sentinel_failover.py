"""Sessions survive the death of their Redis master when Sentinel promotes a replica.

Real processes only: a Redis master with two replicas and three sentinels (password set on
every data node), two rnnserve servers pointed at them with
`--state-store redis+sentinel://:PASSWORD@S1,S2,S3/NAME/0 --redis-wait-replicas 1`, and a few
concurrent clients that step their sessions one step at a time, each step with a step_id and
retried (same step_id, alternating servers) on a 503 or a lost connection until acknowledged.
Mid-stream the master is SIGKILLed (the network stays up); the sentinels promote a replica and
the servers follow it.

Afterwards every session's step count must equal the distinct step_ids acknowledged for it
(none lost, none doubled) and its joined outputs must equal a stateless predict of its whole
input. The unavailability window and the steps acknowledged, lost and doubled are printed
and written to test-artifacts/sentinel-figures.json. The attach channel (pub/sub) must
follow the new master too: an idle stream replaced from the other server is closed, 4409."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.conftest import ROOT, ServerProcess, serving_replicas
from tests.state.redis_sentinel_cluster import REDIS_SENTINEL, SentinelCluster
from tests.state.redis_server import REDIS_SERVER

pytestmark = pytest.mark.skipif(
    REDIS_SERVER is None or REDIS_SENTINEL is None,
    reason="needs redis-server and redis-sentinel (apt-get install redis-server redis-sentinel)")

CLIENTS, SESSIONS_PER_CLIENT, STEPS = 4, 3, 30
KILL_AFTER_ACKS = CLIENTS * SESSIONS_PER_CLIENT * STEPS // 3
TRIES_PER_STEP, STREAM_DEADLINE_S, PACE_S, RETRY_PAUSE_S = 400, 40.0, 0.02, 0.05
FIGURES = ROOT / "test-artifacts" / "sentinel-figures.json"
RNG = np.random.default_rng(16)


@pytest.fixture
def servers(cluster: SentinelCluster, tiny_repo: Path, tmp_path: Path
            ) -> Iterator[list[ServerProcess]]:
    # a step is acknowledged only once a replica has it (WAIT 1 after each batch's write):
    # the replica Sentinel promotes then holds every acknowledged step
    args = ["--models", str(tiny_repo), "--state-store", cluster.url,
            "--redis-wait-replicas", "1"]
    with serving_replicas(args, tmp_path, 2, name="server") as procs:
        yield procs


@dataclass
class Traffic:
    """What every try saw, on one clock (time.monotonic)."""

    failures: list[tuple[float, str]] = field(default_factory=list)
    successes: list[float] = field(default_factory=list)
    out_of_order: list[str] = field(default_factory=list)  # acknowledged with a wrong count
    killed_at: float | None = None


@dataclass
class Session:
    sid: str
    seq: np.ndarray
    acked: set[str] = field(default_factory=set)
    outputs: list[list[float]] = field(default_factory=list)


async def step_until_acknowledged(http: httpx.AsyncClient, urls: list[str], s: Session, t: int,
                                  traffic: Traffic, deadline: float) -> None:
    body = {"inputs": s.seq[t:t + 1].tolist(), "step_id": f"{s.sid}:{t}"}
    for attempt in range(TRIES_PER_STEP):
        if time.monotonic() > deadline:
            break
        url = urls[(t + attempt) % len(urls)]
        try:
            r = await http.post(f"{url}/v1/sessions/{s.sid}/step", json=body)
        except httpx.TransportError as exc:
            traffic.failures.append((time.monotonic(), f"transport: {type(exc).__name__}"))
            await asyncio.sleep(RETRY_PAUSE_S)
            continue
        if r.status_code == 503:  # the store is failing over: retry with the same step_id
            traffic.failures.append((time.monotonic(), r.json().get("error", "")[:120]))
            await asyncio.sleep(RETRY_PAUSE_S)
            continue
        assert r.status_code == 200, f"{r.status_code}: {r.text}"  # never a 500 or a 409
        traffic.successes.append(time.monotonic())
        answer = r.json()
        if answer["steps"] != t + 1:
            traffic.out_of_order.append(f"{s.sid} step {t}: steps {answer['steps']}")
        s.acked.add(str(body["step_id"]))
        s.outputs.extend(answer["outputs"])
        return
    raise AssertionError(f"step {t} of {s.sid} was never acknowledged; last failures: "
                         f"{traffic.failures[-3:]}")


async def client(urls: list[str], sessions: list[Session], traffic: Traffic,
                 deadline: float) -> None:
    """One device-like client: its sessions in turn, one step each, paced."""
    async with httpx.AsyncClient(timeout=10) as http:
        for t in range(STEPS):
            for s in sessions:
                await step_until_acknowledged(http, urls, s, t, traffic, deadline)
            await asyncio.sleep(PACE_S)


async def kill_master_mid_stream(cluster: SentinelCluster, sessions: list[Session],
                                 traffic: Traffic, deadline: float) -> None:
    while time.monotonic() < deadline:
        if sum(len(s.acked) for s in sessions) >= KILL_AFTER_ACKS:
            traffic.killed_at = time.monotonic()
            cluster.master.kill()  # SIGKILL: no shutdown; the network stays up
            return
        await asyncio.sleep(0.01)


async def drive(cluster: SentinelCluster, urls: list[str], sessions: list[Session],
                traffic: Traffic) -> None:
    deadline = time.monotonic() + STREAM_DEADLINE_S
    groups = [sessions[i::CLIENTS] for i in range(CLIENTS)]
    await asyncio.gather(kill_master_mid_stream(cluster, sessions, traffic, deadline),
                         *(client(urls, g, traffic, deadline) for g in groups))


def figures(cluster: SentinelCluster, traffic: Traffic, sessions: list[Session],
            counts: dict[str, int], promoted_after_s: float) -> dict[str, Any]:
    assert traffic.killed_at is not None
    after_kill = [at for at, _ in traffic.failures if at >= traffic.killed_at]
    first_failure = min(after_kill) if after_kill else None
    back = [at for at in traffic.successes if first_failure is not None and at > first_failure]
    acked = sum(len(s.acked) for s in sessions)
    return {
        "sessions": len(sessions), "steps_per_session": STEPS, "clients": CLIENTS,
        "rnnserve_servers": 2, "redis": "1 master + 2 replicas, 3 sentinels (quorum 2)",
        "down_after_ms": cluster.down_after_ms,
        "failed_tries": len(traffic.failures),
        "unavailable_s": (round(min(back) - first_failure, 3)
                          if back and first_failure is not None else None),
        "last_failure_after_kill_s": (round(max(after_kill) - traffic.killed_at, 3)
                                      if after_kill else None),
        "promotion_confirmed_within_s": round(promoted_after_s, 3),
        "steps_acknowledged": acked,
        "steps_lost": sum(max(0, len(s.acked) - counts[s.sid]) for s in sessions),
        "steps_doubled": sum(max(0, counts[s.sid] - len(s.acked)) for s in sessions),
        "acknowledged_with_a_wrong_count": len(traffic.out_of_order),
        "failure_kinds": sorted({why for _, why in traffic.failures})[:8],
    }



def test_sessions_continue_exactly_after_the_master_is_killed(
    cluster: SentinelCluster, servers: list[ServerProcess]
) -> None:
    urls = [p.url for p in servers]
    total = CLIENTS * SESSIONS_PER_CLIENT
    seqs = RNG.normal(size=(total, STEPS, 3)).astype(np.float32)
    sessions = []
    for i in range(total):
        r = httpx.post(f"{urls[i % 2]}/v1/models/tiny-lstm/sessions", timeout=10)
        assert r.status_code == 201, r.text
        sessions.append(Session(r.json()["session_id"], seqs[i]))
    old_master = cluster.master.port
    traffic = Traffic()

    asyncio.run(drive(cluster, urls, sessions, traffic))
    assert traffic.killed_at is not None, "the master was never killed"
    promoted = cluster.wait_promoted()
    promoted_after_s = time.monotonic() - traffic.killed_at  # upper bound: asked after the stream
    assert promoted.port != old_master

    counts = {}
    for i, s in enumerate(sessions):
        r = httpx.get(f"{urls[i % 2]}/v1/sessions/{s.sid}", timeout=10)
        assert r.status_code == 200, r.text
        counts[s.sid] = int(r.json()["steps"])
    result = figures(cluster, traffic, sessions, counts, promoted_after_s)
    FIGURES.parent.mkdir(parents=True, exist_ok=True)
    FIGURES.write_text(json.dumps(result, indent=2) + "\n")
    print("\nsentinel failover:", json.dumps(result))

    assert traffic.failures, "the kill was never noticed: the test proved nothing"
    assert result["steps_lost"] == 0 and result["steps_doubled"] == 0, result
    assert traffic.out_of_order == [], traffic.out_of_order[:5]
    for s in sessions:
        assert counts[s.sid] == len(s.acked) == STEPS
    r = httpx.post(f"{urls[1]}/v1/models/tiny-lstm/predict",
                   json={"inputs": seqs.tolist()}, timeout=30)
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(np.asarray([s.outputs for s in sessions]),
                               np.asarray(r.json()["outputs"]), atol=1e-5)
    for proc in servers:
        assert cluster.password not in proc.log()  # the URL's password is never logged

    asyncio.run(attach_closes_the_other_servers_stream(servers))


async def attach_closes_the_other_servers_stream(servers: list[ServerProcess]) -> None:
    """The attach channel follows the new master: a stream on one server is replaced by an
    attach on the other, and is closed 4409 (retried for a bounded time while each server's
    listener resubscribes after the failover)."""
    import websockets
    from websockets.exceptions import ConnectionClosed

    def ws(server: ServerProcess, sid: str | None = None) -> str:
        url = server.url.replace("http://", "ws://") + "/v1/models/tiny-gru/stream"
        return url + (f"?session_id={sid}" if sid else "")

    deadline = time.monotonic() + 10
    code = None
    while code != 4409 and time.monotonic() < deadline:
        async with websockets.connect(ws(servers[0])) as old:
            sid = json.loads(await old.recv())["session_id"]
            async with websockets.connect(ws(servers[1], sid)) as new:
                assert "session_id" in json.loads(await new.recv())
                try:
                    async with asyncio.timeout(2.0):
                        await old.recv()
                except ConnectionClosed as closed:
                    code = closed.rcvd.code if closed.rcvd else None
                except TimeoutError:
                    code = None
    assert code == 4409, "the stream replaced from the other server was not closed"
