"""Prometheus metrics of the HTTP server: requests by route template, model and status, and
latency histograms. One registry per app, so several servers in one process (tests) keep
separate counts."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                   5.0, 10.0)


class Metrics:
    """The server's metric families, registered in their own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "rnnserve_http_requests", "HTTP requests by route, model and status",
            ["method", "route", "model", "status"], registry=self.registry)
        self.latency = Histogram(
            "rnnserve_http_request_duration_seconds", "HTTP request latency",
            ["method", "route"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.model_loaded = Gauge(
            "rnnserve_model_loaded", "1 if a model version is loaded and ready, 0 if it failed",
            ["model", "version"], registry=self.registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Counts every HTTP request by its route template (not its raw path: unbounded labels)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            model = scope.get("path_params", {}).get("model", "")
            method = scope["method"]
            self.metrics.requests.labels(method, template, model, str(status)).inc()
            self.metrics.latency.labels(method, template).observe(time.perf_counter() - started)
