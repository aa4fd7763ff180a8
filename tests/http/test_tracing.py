"""OpenTelemetry, for real: the server exports OTLP/HTTP to a collector stand-in (an HTTP
server in the test that decodes what it receives) a server span per request, with its route,
status and request id, and a span per batch with its rows."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT, free_port, serving

trace_service = pytest.importorskip(
    "opentelemetry.proto.collector.trace.v1.trace_service_pb2",
    reason="needs the otel extra (opentelemetry-exporter-otlp-proto-http)")


KINDS = {1: "internal", 2: "server", 3: "client"}  # OTLP's SpanKind numbers


class Collector:
    """Accepts OTLP/HTTP protobuf exports on /v1/traces and keeps every span."""

    def __init__(self) -> None:
        self.spans: list[dict[str, object]] = []
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server API
                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = trace_service.ExportTraceServiceRequest()
                request.ParseFromString(body)
                for resource in request.resource_spans:
                    for scope in resource.scope_spans:
                        for span in scope.spans:
                            attrs = {a.key: a.value.string_value or a.value.int_value
                                     for a in span.attributes}
                            collector.spans.append({
                                "name": span.name, **attrs,
                                "trace_id": span.trace_id.hex(),
                                "kind": KINDS.get(span.kind, str(span.kind)),
                                "links": [link.trace_id.hex() for link in span.links]})
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.port = free_port()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def wait_for(self, predicate: Callable[[dict[str, object]], bool],
                 timeout: float = 15) -> dict[str, object]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for span in list(self.spans):
                if predicate(span):
                    return span
            time.sleep(0.1)
        raise AssertionError(f"no such span among {self.spans}")

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def collector() -> Iterator[Collector]:
    c = Collector()
    yield c
    c.stop()


def test_requests_and_batches_become_spans(collector: Collector, tiny_repo: Path,
                                           tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")  # export every 0.1 s, not 5 s
    endpoint = f"http://127.0.0.1:{collector.port}/v1/traces"
    with serving(["--models", str(tiny_repo), "--otel-endpoint", endpoint],
                 tmp_path / "server.log") as server:
        r = httpx.post(server.url + "/v1/models/tiny-gru/predict",
                       json={"inputs": [[[1.0, 2.0, 3.0]] * 4] * 3},
                       headers={"X-Request-Id": "trace-me"})
        assert r.status_code == 200
        span = collector.wait_for(lambda s: s.get("rnnserve.request_id") == "trace-me")
        assert span["name"] == "POST /v1/models/{model}/predict"
        assert span["http.response.status_code"] == 200
        assert span["rnnserve.model"] == "tiny-gru"
        batch = collector.wait_for(lambda s: s["name"] == "batch tiny-gru")
        assert batch["rnnserve.rows"] == 3
        # a key in the query string is in no span (names and attributes hold the route)
        httpx.get(server.url + "/v1/models?api_key=trace-secret-key",
                  headers={"X-Request-Id": "trace-key"})
        span = collector.wait_for(lambda s: s.get("rnnserve.request_id") == "trace-key")
        assert span["http.route"] == "/v1/models"
        assert "trace-secret-key" not in repr(collector.spans)


def test_tracing_is_off_by_default() -> None:
    """No SDK, no exporter, no provider unless --otel-endpoint is set (FastAPI itself may
    import the opentelemetry API when it is installed)."""
    import subprocess
    import sys

    code = ("import sys, rnnserve.serve, rnnserve.engine; from rnnserve.engine import Engine; "
            "from rnnserve.settings import Settings; Engine(Settings()); "
            "assert not any(m.startswith(('opentelemetry.sdk', 'opentelemetry.exporter')) "
            "for m in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=ROOT)
    assert result.returncode == 0, result.stderr
