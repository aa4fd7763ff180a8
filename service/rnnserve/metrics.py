"""Prometheus metrics: HTTP requests by route template, model and status, and latency; gRPC
calls by method, model and code, and latency; streams (stream_metrics.py); refused
connections; the batcher (batch rows, queue time, run time, ONNX Runtime time, queue depth);
sessions (live, created, expired, evicted, deleted, steps per session); the process (CPU, RSS,
open files). One registry per engine, so several servers in one process (tests) keep separate
counts. docs/operations.md lists every family."""

from __future__ import annotations

from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)

from rnnserve.stream_metrics import StreamMetrics

LATENCY_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                   0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Seconds; from 50 µs, where a stream step lives, to 10 s."""

ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
STEP_BUCKETS = (0, 1, 10, 100, 1_000, 10_000, 100_000, 1_000_000)

OTHER = "_other"
"""The label value of a model the server does not serve, or of an unusual HTTP method: a client
chooses the names in its URLs, and every new label value would be a new series kept for the
life of the process (20,000 random model names once grew /metrics a hundredfold)."""

HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
"""Methods labelled by name; any other is OTHER."""


class Metrics:
    """The server's metric families, registered in their own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)  # process_cpu_seconds_total, RSS, open fds
        self.requests = Counter(
            "rnnserve_http_requests", "HTTP requests by route, model and status",
            ["method", "route", "model", "status"], registry=self.registry)
        self.latency = Histogram(
            "rnnserve_http_request_duration_seconds", "HTTP request latency",
            ["method", "route"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.direct_requests = Counter(
            "rnnserve_http_direct_requests",
            "HTTP requests to the hot routes (session step, bulk steps, KServe v2 infer) "
            "answered from the HTTP protocol directly rather than through the ASGI stack; "
            "also counted in rnnserve_http_requests_total", registry=self.registry)
        self.sequence_lane = Counter(
            "rnnserve_http_v2_sequence_lane_steps",
            "KServe v2 sequence steps over HTTP answered by the sequence lane (a later step of "
            "a sequence its keep-alive connection already stepped: no lookup, no task); also "
            "counted in rnnserve_http_direct_requests_total", registry=self.registry)
        # gRPC calls (a stream's messages are in `streams`)
        self.grpc_requests = Counter(
            "rnnserve_grpc_requests", "gRPC calls by method, model and status code (a "
            "ModelStreamInfer stream counts once, when it ends)",
            ["method", "model", "code"], registry=self.registry)
        self.grpc_latency = Histogram(
            "rnnserve_grpc_request_duration_seconds", "gRPC call latency (a stream: its life)",
            ["method"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.streams = StreamMetrics(self.registry, LATENCY_BUCKETS)
        self.connections_refused = Counter(
            "rnnserve_http_connections_refused",
            "HTTP connections the server refused or closed before a request: over "
            "--max-connections-per-client (client_cap), or no complete request head within "
            "--header-timeout-s (header_timeout)",
            ["reason"], registry=self.registry)
        self.model_loaded = Gauge(
            "rnnserve_model_loaded", "1 if a model version is loaded and ready, 0 if it failed",
            ["model", "version"], registry=self.registry)
        # the batcher
        self.batch_rows = Histogram(
            "rnnserve_batch_rows", "Rows (sequences or session steps) per ONNX Runtime call",
            ["model", "version"], buckets=ROW_BUCKETS, registry=self.registry)
        self.queue_seconds = Histogram(
            "rnnserve_batch_queue_seconds", "Time a job waited in the batcher's queue",
            ["model", "version"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.run_seconds = Histogram(
            "rnnserve_batch_run_seconds",
            "Time of one batch: state gather and ONNX Runtime run (the scatter is timed as "
            "rnnserve_state_store_seconds{operation=\"scatter\"})",
            ["model", "version"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.onnxruntime_seconds = Histogram(
            "rnnserve_onnxruntime_run_seconds", "ONNX Runtime's own time for one batch",
            ["model", "version"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.queue_depth = Gauge(
            "rnnserve_batch_queue_rows", "Rows waiting in the batcher's queue",
            ["model", "version"], registry=self.registry)
        self.store_seconds = Histogram(
            "rnnserve_state_store_seconds", "State store round trips of the batcher",
            ["store", "operation"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.store_errors = Counter(
            "rnnserve_state_store_errors", "State store calls that failed in the store itself: "
            "unreachable (no answer in time), full (it refused to hold more), format (a record "
            "of a newer format than this release reads); a missing session is no store error",
            ["store", "kind"], registry=self.registry)
        self.store_reachable = Gauge(
            "rnnserve_state_store_reachable",
            "1 while the state store answers, 0 from its first unanswered call or probe "
            "(readiness turns false once it has been 0 for --store-unready-after-s)",
            ["store"], registry=self.registry)
        # sessions
        self.live_sessions = Gauge(
            "rnnserve_sessions_live", "Live sessions (in this process's view of the store)",
            ["model"], registry=self.registry)
        self.session_events = Counter(
            "rnnserve_sessions", "Sessions created, deleted, expired or evicted",
            ["model", "event"], registry=self.registry)
        self.session_steps = Histogram(
            "rnnserve_session_steps", "Timesteps a session had taken when it ended",
            ["model"], buckets=STEP_BUCKETS, registry=self.registry)
        self._created: dict[str, tuple[Any, Any]] = {}

    def session_event(self, event: str, model: str, steps: int) -> None:
        """The state store's callback: count the event, track live sessions. A create's two
        series are looked up once per model (a bulk create calls this per session)."""
        if event == "created":
            series = self._created.get(model)
            if series is None:
                series = self._created[model] = (self.session_events.labels(model, event),
                                                  self.live_sessions.labels(model))
            series[0].inc()
            series[1].inc()
            return
        self.session_events.labels(model, event).inc()
        self.live_sessions.labels(model).dec()
        self.session_steps.labels(model).observe(steps)

    def render(self) -> bytes:
        return generate_latest(self.registry)
