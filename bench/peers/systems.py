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

from bench.client_loop import run_client
from bench.medium_model import MODEL_NAME, MediumConfig
from bench.peers.closedloop import Codec, LinkOpener, run_sequences
from bench.peers.plan import Plan
from bench.peers.servers import tree_cpu
from bench.peers.v2grpc import GrpcChannel, GrpcCodec
from bench.peers.v2http import BinaryCodec, HttpLink, JsonCodec
from bench.procs import HOST, ServerProcess, base_url
from bench.sessions.points import rest_point, step_inputs, step_messages, ws_point
from bench.stats import LoadResult

Phase = Callable[[], dict[str, Any]]
STATE_SHAPE = (MediumConfig().num_layers, MediumConfig().hidden_size)  # per session
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
            run_client(
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

        return _summary(run_client(go()))

    return phase


def rest(server: ServerProcess, plan: Plan, sessions: int) -> Phase:
    """bench.sessions' REST step point (`POST /v1/sessions/{id}/step`, aiohttp keep-alive)."""
    point = rest_point(server, step_messages(MediumConfig()), plan.sessions_plan())
    return lambda: point(sessions)


def ws(server: ServerProcess, plan: Plan, sessions: int) -> Phase:
    """bench.sessions' WebSocket point (a connection per session, one step per message)."""
    point = ws_point(server, step_messages(MediumConfig()), plan.sessions_plan())
    return lambda: point(sessions)


def in_process_steps(onnx: Any, plan: Plan, intra_op_threads: int = 0) -> Phase:
    """ONNX Runtime in this process, library default threads (0) or as many as given, stepping
    `bulk_sessions` states [layers, N, hidden] one timestep per session.run, fed back each
    call: the work of one bulk request with nothing around it. Steps/s counts sessions
    stepped."""
    from bench import ceiling
    from bench.inprocess import run_threads

    config = MediumConfig()
    session = ceiling.ort_session(onnx, intra_op_threads)
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


def bulk(server: ServerProcess, plan: Plan, binary: bool) -> Phase:
    """`POST /v1/models/{m}/steps` with `bulk_sessions` sessions' steps per request, one
    client closed loop (as bench.sessions' gateway), the sessions made on the first phase.
    JSON bodies, or `binary`: raw float32 after a JSON header of
    Inference-Header-Content-Length bytes ({"session_ids", "shape", "datatype"})."""
    from bench.loadgen import Request, run_load
    from bench.wsload import create_sessions

    n = plan.bulk_sessions
    made: list[list[Request]] = []
    path = f"/v1/models/{MODEL_NAME}/steps"

    def requests() -> list[Request]:
        if not made:
            sids = create_sessions(base_url(server), MODEL_NAME, n)
            rng = np.random.default_rng(MediumConfig().seed + 3)
            xs = rng.standard_normal((4, n, 1, MediumConfig().input_size)).astype(np.float32)
            made.append([Request("POST", path, *bulk_body(sids, x, binary)) for x in xs])
        return made[0]

    def check(status: int, body: bytes) -> str | None:
        if status != 200:
            return f"HTTP {status}: {body[:200]!r}"
        failed = b'"errors":[]' not in body if binary else b'"error"' in body
        return f"item error: {body[:300]!r}" if failed else None

    def phase() -> dict[str, Any]:
        encoded = requests()
        result = run_load(
            base_url(server),
            lambda client, number: encoded[number % 4],
            concurrency=1,
            **plan.window(),
            validate=check,
            cpu_probes={"server": tree_cpu(server.pid)},
        )
        summary = result.summary(items_per_request=n)
        summary["request_bytes"] = len(encoded[0].body or b"")
        return summary

    return phase


def bulk_body(session_ids: list[str], x: np.ndarray, binary: bool) -> tuple[bytes, dict[str, str]]:
    """A bulk request's body and headers: x [sessions, 1, features] for `session_ids`."""
    import orjson

    if not binary:
        steps = [{"session_id": s, "inputs": xi} for s, xi in zip(session_ids, x, strict=True)]
        body = orjson.dumps({"steps": steps}, option=orjson.OPT_SERIALIZE_NUMPY)
        return body, {"content-type": "application/json"}
    header = orjson.dumps({"session_ids": session_ids, "shape": list(x.shape), "datatype": "FP32"})
    return header + np.asarray(x, "<f4").tobytes(), {
        "content-type": "application/octet-stream",
        "inference-header-content-length": str(len(header)),
    }


def bulk_binary_supported(server: ServerProcess) -> bool:
    """Whether the server takes binary bulk bodies: one session stepped with one (a server
    without them refuses the body, 4xx)."""
    import urllib.error
    import urllib.request

    from bench.wsload import create_sessions, delete_sessions

    url = base_url(server)
    sids = create_sessions(url, MODEL_NAME, 1)
    body, headers = bulk_body(sids, np.zeros((1, 1, MediumConfig().input_size), np.float32), True)
    request = urllib.request.Request(
        f"{url}/v1/models/{MODEL_NAME}/steps", data=body, method="POST", headers=headers
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            supported = response.status == 200 and b'"errors":[]' in response.read()
    except urllib.error.HTTPError:
        supported = False
    delete_sessions(url, sids)
    return supported
