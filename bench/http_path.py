"""Event-loop CPU per hot HTTP request, the direct path against the ASGI path, in one process.

`python -m bench.http_path [--requests 4000] [--clients 64] [--rounds 3] [--routes v2,rest]
[--loop uvloop|asyncio]`

The server's part of a request that the HTTP layer decides (parsing, the layers around the
route, the route, writing the answer) runs on the event loop thread. On this shared 2-core
machine throughput and process CPU move with whatever else runs, and with them the batch sizes
and the runtime's share; this bench removes both. It builds the application and uvicorn's
httptools protocol exactly as `rnnserve serve` does, feeds each protocol instance complete
requests through `data_received` (what the socket would hand it) from `--clients` in-memory
connections at once, and counts the event loop thread's own CPU time (`time.thread_time`)
per answered request. ONNX Runtime runs on the engine's worker threads and is not counted.
Rounds alternate the two paths; the figure per path is the median round. The process is tuned
as `rnnserve serve` tunes it (rnnserve.runtime: the garbage collector's settings above all),
and the collector's own share of each figure is printed beside it.

Beside the two paths, the same requests' work below HTTP, in the same rounds and with as many
callers: for v2, the body decoded, the v2 data plane's sequence step and the reply encoded
(http/v2_codec.py, engine/v2.py); for REST, the JSON body parsed and the session step. What a
path costs above that figure is its HTTP layer's (parsing, request id, time limit, metrics, API
keys, the route, writing the answer).

Routes: a KServe v2 sequence step with binary tensors, and a REST session step. The event
loop is the one `rnnserve serve` runs (uvloop when installed) unless `--loop asyncio` asks
for the standard library's, whose pure-Python timers and callbacks cost more per request."""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvicorn
from rnnserve.engine import Engine, V2DataPlane
from rnnserve.http.app import create_app
from rnnserve.http.connections import ConnectionGuard
from rnnserve.http.direct_path import DirectPath
from rnnserve.http.http_protocols import server_protocols
from rnnserve.runtime import tune_for_serving
from rnnserve.serve import _loop_factory
from rnnserve.settings import Settings

MODELS = Path(__file__).resolve().parent.parent / "models"
MODEL = "temperature-lstm"
WIDTH = int(json.loads((MODELS / MODEL / "model.json").read_text())["input_size"])  # features


class MemoryTransport(asyncio.Transport):
    """What the protocol writes to, kept in memory; says when a whole response arrived."""

    def __init__(self, peer: int, answered: Callable[[], None]) -> None:
        super().__init__()
        self._extra = {"peername": ("127.0.0.1", 40000 + peer), "sockname": ("127.0.0.1", 8000)}
        self._answered = answered
        self._buffer = b""
        self._closing = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._extra.get(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._buffer += bytes(data)
        while b"\r\n\r\n" in self._buffer:  # one or more whole responses
            head, _, rest = self._buffer.partition(b"\r\n\r\n")
            length = int(head.lower().split(b"\r\ncontent-length: ", 1)[1].split(b"\r\n", 1)[0])
            if len(rest) < length:
                return
            assert head.startswith(b"HTTP/1.1 200"), head + rest[:200]
            self._buffer = rest[length:]
            self._answered()

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        self._closing = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0


def v2_binary_step(sequence: int, first: bool) -> bytes:
    head = json.dumps({"parameters": {"sequence_id": sequence, "sequence_start": first},
                       "inputs": [{"name": "input", "shape": [1, 1, WIDTH], "datatype": "FP32",
                                   "parameters": {"binary_data_size": 4 * WIDTH}}],
                       "outputs": [{"name": "output",
                                    "parameters": {"binary_data": True}}]}).encode()
    body = head + b"\0" * (4 * WIDTH)
    return (f"POST /v2/models/{MODEL}/infer HTTP/1.1\r\nHost: bench\r\n"
            "Content-Type: application/octet-stream\r\n"
            f"Inference-Header-Content-Length: {len(head)}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def rest_step(session_id: str) -> bytes:
    body = json.dumps({"inputs": [[50.0] + [0.5] * (WIDTH - 1)]}).encode()
    return (f"POST /v1/sessions/{session_id}/step HTTP/1.1\r\nHost: bench\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


class CollectorTime:
    """The garbage collector's CPU time on this thread while the `with` runs (gc.callbacks):
    part of the request cost the figures count, printed apart because the collector's
    settings (rnnserve.runtime) decide it."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._began = 0.0

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._began = time.thread_time()
        else:
            self.seconds += time.thread_time() - self._began

    def __enter__(self) -> CollectorTime:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._callback)


GC_SECONDS: dict[bool, list[float]] = {True: [], False: []}
"""Collector seconds per request of each round, by path (True: direct)."""


def connector(engine: Engine, direct: bool = True) -> Callable[[asyncio.Transport], Any]:
    """What makes one connection's HTTP protocol as `rnnserve serve` makes it (the
    application, the connection guard, uvicorn's httptools protocol with the direct path or
    without), connected to the transport it is given."""
    app = create_app(engine, manage_engine=False)
    guard = ConnectionGuard(30.0, 0, engine.proxies, engine.metrics.connections_refused)
    protocol_class, _ = server_protocols(guard, direct=DirectPath(app) if direct else None)
    config = uvicorn.Config(app, http=protocol_class, lifespan="off", log_config=None,
                            access_log=False)
    config.load()
    state = uvicorn.server.ServerState()

    def connect(transport: asyncio.Transport) -> Any:
        protocol = protocol_class(config=config, server_state=state,  # type: ignore[call-arg]
                                  app_state={})
        protocol.connection_made(transport)
        return protocol

    return connect


async def one_round(engine: Engine, direct: bool, route: str, clients: int,
                    requests: int, session_ids: list[str]) -> float:
    """Event-loop CPU microseconds per request for `requests` requests from `clients`
    connections, each sending its next request when its previous one is answered."""
    connect = connector(engine, direct)
    left = requests
    done = asyncio.get_running_loop().create_future()
    protocols: list[Any] = []

    def request_for(i: int, first: bool) -> bytes:
        return v2_binary_step(10_000 + i, first) if route == "v2" else rest_step(session_ids[i])

    # built before the clock starts: the event loop's CPU is the server's, not the client's
    first_requests = [request_for(i, True) for i in range(clients)]
    next_requests = [request_for(i, False) for i in range(clients)]

    def answered(i: int) -> Callable[[], None]:
        def next_request() -> None:
            nonlocal left
            left -= 1
            if left <= 0:
                if not done.done():
                    done.set_result(None)
                return
            asyncio.get_running_loop().call_soon(protocols[i].data_received,
                                                 next_requests[i])
        return next_request

    for i in range(clients):
        protocols.append(connect(MemoryTransport(i, answered(i))))
    counted = engine.metrics.registry.get_sample_value("rnnserve_http_direct_requests_total")
    collector = CollectorTime()
    started = time.thread_time()
    with collector:
        for protocol, request in zip(protocols, first_requests, strict=True):
            protocol.data_received(request)
        await asyncio.wait_for(done, 120)
    spent = time.thread_time() - started
    GC_SECONDS[direct].append(collector.seconds / requests)
    direct_answers = (engine.metrics.registry.get_sample_value(
        "rnnserve_http_direct_requests_total") or 0) - (counted or 0)
    # every request took the path measured (a few more may be in flight at the end)
    assert direct_answers >= requests if direct else direct_answers == 0, direct_answers
    for protocol in protocols:
        protocol.connection_lost(None)
    return spent / requests * 1e6


def split_request(raw: bytes) -> tuple[dict[bytes, bytes], bytes]:
    """(lower-cased headers, body) of one HTTP request written by the functions above."""
    head, _, body = raw.partition(b"\r\n\r\n")
    fields = (line.partition(b": ") for line in head.split(b"\r\n")[1:])
    return {name.lower(): value for name, _, value in fields}, body


async def below_http(engine: Engine, route: str, clients: int, requests: int,
                     session_ids: list[str]) -> float:
    """Event-loop CPU microseconds per request for the work under the HTTP layer: the same
    requests, decoded and answered by the calls the route makes, from `clients` callers each
    sending its next request when its previous one is answered."""
    from rnnserve.http.body import parse_json
    from rnnserve.http.sessions import step_inputs
    from rnnserve.http.v2_codec import decode_request, encode_response

    plane = V2DataPlane(engine)
    each = max(1, requests // clients)

    def v2_parts(i: int, first: bool) -> tuple[bytes, str]:
        headers, body = split_request(v2_binary_step(20_000_000 + i, first))
        return body, headers[b"inference-header-content-length"].decode()

    async def v2_step(body: bytes, header_length: str) -> None:
        call = decode_request(body, header_length, MODEL, None)
        encode_response(call, await plane.infer(call.request, ""))

    async def v2_caller(i: int) -> None:
        for _ in range(each):
            await v2_step(*later[i])

    async def rest_caller(i: int) -> None:
        for _ in range(each):
            await engine.sessions.step(session_ids[i], step_inputs(parse_json(later[i][0])))

    # built (and each v2 sequence started) before the clock starts, as in one_round
    if route == "v2":
        later = [v2_parts(i, False) for i in range(clients)]
        await asyncio.gather(*(v2_step(*v2_parts(i, True)) for i in range(clients)))
    else:
        later = [(split_request(rest_step(session_ids[i]))[1], "") for i in range(clients)]
    caller = v2_caller if route == "v2" else rest_caller
    started = time.thread_time()
    await asyncio.gather(*(caller(i) for i in range(clients)))
    return (time.thread_time() - started) / (each * clients) * 1e6


async def main(args: argparse.Namespace) -> None:
    engine = Engine(Settings(models=MODELS, grpc_port=0, log_level="warning"))
    engine.start()
    await engine.open()
    tune_for_serving(engine.settings.gil_switch_interval_ms / 1000)  # as `rnnserve serve` does
    try:
        ids = [(await engine.sessions.create(MODEL)).id for _ in range(args.clients)]
        print(f"{args.clients} connections, {args.requests} requests a round, "
              f"{args.rounds} rounds; event-loop CPU per request (median round)")
        for route in args.routes.split(","):
            figures: dict[bool, list[float]] = {True: [], False: []}
            below: list[float] = []
            for _ in range(args.rounds):
                for direct in (False, True):
                    figures[direct].append(await one_round(
                        engine, direct, route, args.clients, args.requests, ids))
                below.append(await below_http(engine, route, args.clients, args.requests, ids))
            asgi, fast = (statistics.median(figures[d]) for d in (False, True))
            collected = {d: statistics.median(GC_SECONDS[d]) * 1e6 for d in (False, True)}
            for d in GC_SECONDS:
                GC_SECONDS[d].clear()
            print(f"{route:5} ASGI path {asgi:7.1f} µs   direct path {fast:7.1f} µs   "
                  f"direct ÷ ASGI {fast / asgi:.2f}   (of which garbage collection: "
                  f"{collected[False]:.1f} and {collected[True]:.1f} µs)")
            print(f"{'':5} below HTTP (decode, step, encode: no HTTP layer) "
                  f"{statistics.median(below):7.1f} µs")
    finally:
        await engine.aclose()
        engine.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--routes", default="v2,rest", help="comma-separated: v2, rest")
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop",
                        help="uvloop (as rnnserve serve runs, when installed) or asyncio")
    arguments = parser.parse_args()
    factory = _loop_factory() if arguments.loop == "uvloop" else None
    print(f"event loop: {'uvloop' if factory is not None else 'asyncio'}")
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main(arguments))
