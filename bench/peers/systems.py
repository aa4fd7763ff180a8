"""One load phase per measured system: a function of no arguments that runs one phase
(`Plan.window`) and returns its summary (bench.stats.LoadResult.summary). The rows
(bench/peers/rows.py) say which systems they compare.

Reused, not rewritten: the REST and WebSocket points of bench.sessions (keep-alive aiohttp
pool, WebSocket client), its in-process loop; new here only the v2 sequence client
(`closedloop` with the HTTP/1.1 or gRPC link) that rnnserve and Triton share.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import numpy as np

from bench.medium_model import MODEL_NAME, MediumConfig
from bench.peers.closedloop import Codec, LinkOpener, run_sequences
from bench.peers.plan import Plan
from bench.peers.servers import tree_cpu
from bench.peers.v2grpc import GrpcChannel, GrpcCodec
from bench.peers.v2http import BinaryCodec, HttpLink, JsonCodec
from bench.procs import HOST, ServerProcess, base_url
from bench.sessions.points import rest_point, step_inputs, step_messages, ws_point
from bench.stats import LoadResult
from bench.wsload import run_uv

Phase = Callable[[], dict[str, Any]]
STATE_SHAPE = (2, 128)
_sequence_ids = itertools.count(1_000_000, 100_000)  # a fresh block of ids for every phase


def _summary(result: LoadResult) -> dict[str, Any]:
    return result.summary()


def _port(server: ServerProcess) -> int:
    return int(base_url(server).rsplit(":", 1)[1])


def v2_http(server: ServerProcess, plan: Plan, kind: str, sessions: int) -> Phase:
    """kind: "binary" (rnnserve: sequence_id), "binary-carry" (Triton: h/c in the requests) or
    "json" (rnnserve, JSON bodies)."""
    steps = step_inputs(MediumConfig())  # [64, 1, F]
    port = _port(server)

    def phase() -> dict[str, Any]:
        first = next(_sequence_ids)
        codec: Codec
        if kind == "json":
            codec = JsonCodec(HOST, MODEL_NAME, steps, first)
        else:
            codec = BinaryCodec(HOST, MODEL_NAME, steps, kind == "binary-carry", STATE_SHAPE, first)

        async def opener() -> Any:
            return await HttpLink.open(HOST, port)

        return _summary(
            run_uv(
                run_sequences(
                    opener,
                    codec,
                    concurrency=sessions,
                    **plan.window(),
                    cpu_probes={"server": tree_cpu(server.pid)},
                )
            )
        )

    return phase


def v2_grpc(server: ServerProcess, plan: Plan, carry: bool, stream: bool, sessions: int) -> Phase:
    """ModelStreamInfer (a stream per sequence, one channel) or unary ModelInfer; rnnserve's
    requests (sequence_id) unless `carry` (Triton's: h/c in, hn/cn out). The gRPC echo gets
    rnnserve's requests."""
    steps = step_inputs(MediumConfig())
    target = server.grpc_target

    def phase() -> dict[str, Any]:
        codec = GrpcCodec(MODEL_NAME, steps, carry, STATE_SHAPE, stream, next(_sequence_ids))

        async def go() -> LoadResult:
            channel = GrpcChannel(target)
            try:
                await channel.ready()
                opener: LinkOpener = channel.stream if stream else channel.unary
                return await run_sequences(
                    opener,
                    codec,
                    concurrency=sessions,
                    **plan.window(),
                    cpu_probes={"server": tree_cpu(server.pid)},
                )
            finally:
                await channel.aclose()

        return _summary(run_uv(go()))

    return phase


def rest(server: ServerProcess, plan: Plan, sessions: int) -> Phase:
    """bench.sessions' REST step point (`POST /v1/sessions/{id}/step`, aiohttp keep-alive)."""
    point = rest_point(server, step_messages(MediumConfig()), plan.sessions_plan())
    return lambda: point(sessions)


def ws(server: ServerProcess, plan: Plan, sessions: int) -> Phase:
    """bench.sessions' WebSocket point (a connection per session, one step per message)."""
    point = ws_point(server, step_messages(MediumConfig()), plan.sessions_plan())
    return lambda: point(sessions)


def in_process_steps(onnx: Any, plan: Plan) -> Phase:
    """ONNX Runtime in this process, library default threads, stepping `bulk_sessions` states
    [layers, N, hidden] one timestep per session.run, fed back each call: the work of one bulk
    request with nothing around it. Steps/s counts sessions stepped."""
    from bench import ceiling
    from bench.inprocess import run_threads

    config = MediumConfig()
    session = ceiling.ort_session(onnx, intra_op_threads=0)
    n = plan.bulk_sessions
    rng = np.random.default_rng(config.seed + 3)
    xs = rng.standard_normal((4, n, 1, config.input_size)).astype(np.float32)
    state = {
        k: np.zeros((config.num_layers, n, config.hidden_size), np.float32) for k in ("h0", "c0")
    }

    def work(worker: int, number: int) -> None:
        _, state["h0"], state["c0"] = session.run(
            ["output", "hn", "cn"], {"input": xs[number % 4], **state}
        )

    def phase() -> dict[str, Any]:
        return run_threads(work, concurrency=1, **plan.window()).summary(items_per_request=n)

    return phase


def bulk_json(server: ServerProcess, plan: Plan) -> Phase:
    """`POST /v1/models/{m}/steps` with `bulk_sessions` sessions' steps per JSON request, one
    client closed loop (as bench.sessions' gateway), the sessions made on the first phase."""
    import orjson

    from bench.loadgen import Request, run_load
    from bench.wsload import create_sessions

    config = MediumConfig()
    n = plan.bulk_sessions
    made: list[list[bytes]] = []
    headers = {"content-type": "application/json"}
    path = f"/v1/models/{MODEL_NAME}/steps"

    def bodies() -> list[bytes]:
        if not made:
            sids = create_sessions(base_url(server), MODEL_NAME, n)
            rng = np.random.default_rng(config.seed + 3)
            xs = rng.standard_normal((4, n, 1, config.input_size)).astype(np.float32)
            made.append(
                [
                    orjson.dumps(
                        {
                            "steps": [
                                {"session_id": s, "inputs": x}
                                for s, x in zip(sids, batch, strict=True)
                            ]
                        },
                        option=orjson.OPT_SERIALIZE_NUMPY,
                    )
                    for batch in xs
                ]
            )
        return made[0]

    def check(status: int, body: bytes) -> str | None:
        if status != 200:
            return f"HTTP {status}: {body[:200]!r}"
        return f"item error: {body[:300]!r}" if b'"error"' in body else None

    def phase() -> dict[str, Any]:
        encoded = bodies()
        result = run_load(
            base_url(server),
            lambda client, number: Request("POST", path, encoded[number % 4], headers),
            concurrency=1,
            **plan.window(),
            validate=check,
            cpu_probes={"server": tree_cpu(server.pid)},
        )
        summary = result.summary(items_per_request=n)
        summary["request_bytes"] = len(encoded[0])
        return summary

    return phase
