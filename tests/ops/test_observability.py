"""Every transport observed alike, on a real server with an OTLP collector stand-in, JSON logs
at debug and gRPC on: REST, KServe v2 over HTTP, WebSocket and gRPC (unary and stream)
traffic, each sent with a W3C `traceparent` of its own, shows up in `/metrics` (by transport,
method or route, model, code), in the JSON access log (one object per line, request ids kept)
and in the exported spans (the caller's trace id kept; the batches that served the requests
linked to them)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import websockets
from rnnserve.grpc.generated import inference_pb2 as pb
from rnnserve.grpc.generated import inference_pb2_grpc

from tests.conftest import ServerProcess, serving
from tests.http.test_tracing import Collector

pytest.importorskip("opentelemetry.proto.collector.trace.v1.trace_service_pb2",
                    reason="needs the otel extra (opentelemetry-exporter-otlp-proto-http)")

MODEL = "tiny-lstm"
WS_MESSAGES = 5
GRPC_MESSAGES = 4


def traceparent() -> tuple[str, str]:
    """(trace id, a traceparent header naming it as the caller's trace)."""
    trace_id = secrets.token_hex(16)
    return trace_id, f"00-{trace_id}-{secrets.token_hex(8)}-01"


@pytest.fixture(scope="module")
def collector() -> Iterator[Collector]:
    c = Collector()
    yield c
    c.stop()


@pytest.fixture(scope="module")
def server(collector: Collector, tiny_repo: Path,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    os.environ["OTEL_BSP_SCHEDULE_DELAY"] = "100"  # export every 0.1 s (the server inherits it)
    try:
        with serving(["--models", str(tiny_repo), "--log-format", "json", "--log-level",
                      "debug", "--otel-endpoint",
                      f"http://127.0.0.1:{collector.port}/v1/traces"],
                     tmp_path_factory.mktemp("observed") / "server.log", grpc=True) as proc:
            yield proc
    finally:
        os.environ.pop("OTEL_BSP_SCHEDULE_DELAY", None)


def sample(metrics: str, name: str, **labels: str) -> float:
    """The sum of the series of `name` that have the labels given (in any order), else 0."""
    total = 0.0
    for line in metrics.splitlines():
        found = re.match(rf"^{re.escape(name)}\{{(.*)\}} (\S+)$", line)
        if found:
            have = dict(re.findall(r'(\w+)="([^"]*)"', found.group(1)))
            if all(have.get(k) == v for k, v in labels.items()):
                total += float(found.group(2))
    return total


def grpc_step(sequence: int, start: bool) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=MODEL)
    request.parameters["sequence_id"].int64_param = sequence
    if start:
        request.parameters["sequence_start"].bool_param = True
    tensor = request.inputs.add(name="input", datatype="FP32", shape=[1, 1, 3])
    del tensor
    request.raw_input_contents.append(np.array([0.1, 0.2, 0.3], "<f4").tobytes())
    return request


async def websocket_stream(server: ServerProcess, parent: str) -> None:
    url = server.url.replace("http://", "ws://") + f"/v1/models/{MODEL}/stream"
    async with websockets.connect(url, additional_headers={"traceparent": parent}) as ws:
        json.loads(await ws.recv())  # the session
        for _ in range(WS_MESSAGES):
            await ws.send(json.dumps({"inputs": [[0.1, 0.2, 0.3]]}))
            assert "outputs" in json.loads(await ws.recv())
        await ws.send(json.dumps({"inputs": [[0.1, 0.2]]}))  # one bad message: a 400 reply
        assert json.loads(await ws.recv())["status"] == 400


def test_every_transport_in_metrics_logs_and_traces(server: ServerProcess,
                                                    collector: Collector) -> None:
    traces = {kind: traceparent() for kind in ("rest", "v2", "ws", "grpc", "stream")}
    # REST
    made = httpx.post(f"{server.url}/v1/models/{MODEL}/sessions").json()
    step = httpx.post(f"{server.url}/v1/sessions/{made['session_id']}/step",
                      json={"inputs": [[0.1, 0.2, 0.3]]},
                      headers={"traceparent": traces["rest"][1], "X-Request-Id": "rest-1"})
    assert step.status_code == 200
    # KServe v2 over HTTP
    v2 = httpx.post(f"{server.url}/v2/models/{MODEL}/infer", headers={
        "traceparent": traces["v2"][1]}, json={"inputs": [{
            "name": "input", "shape": [1, 1, 3], "datatype": "FP32", "data": [0.1, 0.2, 0.3]}]})
    assert v2.status_code == 200
    # WebSocket
    asyncio.run(websocket_stream(server, traces["ws"][1]))
    # gRPC: a unary call with a request id, then a stream
    with grpc.insecure_channel(server.grpc_url) as channel:
        stub = inference_pb2_grpc.GRPCInferenceServiceStub(channel)
        _, call = stub.ModelInfer.with_call(grpc_step(71, True), metadata=(
            ("traceparent", traces["grpc"][1]), ("x-request-id", "grpc-1")))
        assert ("x-request-id", "grpc-1") in tuple(call.trailing_metadata())
        with pytest.raises(grpc.RpcError) as refused:
            stub.ModelMetadata(pb.ModelMetadataRequest(name="no-such-model"))
        assert refused.value.code() == grpc.StatusCode.NOT_FOUND
        replies = list(stub.ModelStreamInfer(
            iter([grpc_step(72, i == 0) for i in range(GRPC_MESSAGES)]),
            metadata=(("traceparent", traces["stream"][1]),)))
        assert len(replies) == GRPC_MESSAGES and not any(r.error_message for r in replies)

    metrics = httpx.get(server.url + "/metrics").text
    step_route = "/v1/sessions/{session_id}/step"
    assert sample(metrics, "rnnserve_http_requests_total", route=step_route, status="200") >= 1
    assert sample(metrics, "rnnserve_http_requests_total", route="/v2/models/{model}/infer",
                  model=MODEL, status="200") >= 1
    assert sample(metrics, "rnnserve_grpc_requests_total", method="ModelInfer", model=MODEL,
                  code="OK") == 1
    assert sample(metrics, "rnnserve_grpc_requests_total", method="ModelMetadata",
                  model="_other", code="NOT_FOUND") == 1
    assert sample(metrics, "rnnserve_grpc_requests_total", method="ModelStreamInfer",
                  code="OK") == 1
    assert sample(metrics, "rnnserve_grpc_request_duration_seconds_count",
                  method="ModelInfer") == 1
    ws = {"transport": "websocket", "route": "/v1/models/{model}/stream", "model": MODEL}
    assert sample(metrics, "rnnserve_stream_messages_total", **ws, direction="in") == \
        WS_MESSAGES + 1
    assert sample(metrics, "rnnserve_stream_replies_total", **ws, code="200") == WS_MESSAGES
    assert sample(metrics, "rnnserve_stream_replies_total", **ws, code="400") == 1
    assert sample(metrics, "rnnserve_stream_message_duration_seconds_count", **ws) == \
        WS_MESSAGES + 1
    assert sample(metrics, "rnnserve_stream_closes_total", **ws, code="client") == 1
    assert sample(metrics, "rnnserve_streams_open", **ws) == 0
    stream = {"transport": "grpc", "route": "ModelStreamInfer"}
    assert sample(metrics, "rnnserve_stream_replies_total", **stream, model=MODEL,
                  code="OK") == GRPC_MESSAGES
    assert sample(metrics, "rnnserve_stream_closes_total", **stream, model="", code="OK") == 1
    for family in ("process_cpu_seconds_total", "process_resident_memory_bytes",
                   "process_open_fds"):
        assert re.search(rf"^{family} \S+$", metrics, re.M), family
    assert sample(metrics, "rnnserve_onnxruntime_run_seconds_count", model=MODEL) >= 1
    assert 'le="5e-05"' in metrics  # latency buckets resolve the stream's sub-millisecond range

    # spans: the caller's trace kept on every transport; the batches linked to the requests
    expected = {"rest": "POST /v1/sessions/{session_id}/step",
                "v2": "POST /v2/models/{model}/infer", "ws": "WS /v1/models/{model}/stream",
                "grpc": "grpc ModelInfer", "stream": "grpc ModelStreamInfer"}
    for kind, name in expected.items():
        span = collector.wait_for(lambda s, k=kind: s.get("trace_id") == traces[k][0]
                                  and s.get("kind") == "server")
        assert span["name"] == name, (kind, span)
    # a stream's first message (then one in STREAM_SPAN_EVERY) has a span of its own
    collector.wait_for(lambda s: s["name"] == "grpc ModelStreamInfer message"
                       and s.get("trace_id") == traces["stream"][0])
    grpc_span = collector.wait_for(lambda s: s.get("trace_id") == traces["grpc"][0]
                                   and s.get("kind") == "server")
    assert grpc_span["rnnserve.request_id"] == "grpc-1"
    for kind in ("rest", "v2", "grpc"):
        collector.wait_for(lambda s, k=kind: s["name"] == f"batch {MODEL}"
                           and traces[k][0] in s.get("links", ()))

    # the access log: JSON lines only, and each transport's line
    lines = [line for line in server.log().splitlines() if line.startswith("{")]
    assert lines and all(isinstance(json.loads(line), dict) for line in lines)
    assert not [line for line in server.log().splitlines()
                if line.strip() and not line.startswith("{")], "a line that is not JSON"
    access = [json.loads(line) for line in lines if '"rnnserve.access"' in line]

    def logged(**fields: Any) -> dict[str, Any]:
        for entry in access:
            if all(entry.get(k) == v for k, v in fields.items()):
                return entry
        raise AssertionError(f"no access line with {fields} among {access[-20:]}")

    logged(method="POST", path=f"/v1/sessions/{made['session_id']}/step", status=200,
           request_id="rest-1")
    logged(method="gRPC", path="ModelInfer", status="OK", request_id="grpc-1", model=MODEL)
    logged(method="gRPC", path="ModelMetadata", status="NOT_FOUND")
    logged(method="gRPC", path="ModelStreamInfer", status="OK")
    logged(method="WS", path="/v1/models/{model}/stream", status="open", model=MODEL)
    logged(method="WS", path="/v1/models/{model}/stream", status="closed client", model=MODEL)
    assert logged(method="gRPC", path="ModelMetadata")["level"] == "warning"
