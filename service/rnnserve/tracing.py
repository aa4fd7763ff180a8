"""Optional OpenTelemetry tracing: off unless `--otel-endpoint` names an OTLP/HTTP collector
(e.g. http://collector:4318/v1/traces). Each HTTP request becomes a server span named after its
route, carrying the request id, the model and the status; each batch the engine runs becomes a
span with its rows. Needs the `otel` extra; the server imports none of it otherwise."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any


class Tracing:
    """A tracer when configured, else no-ops at the cost of one attribute check."""

    def __init__(self, endpoint: str, service_name: str) -> None:
        self.enabled = bool(endpoint)
        self._provider: Any = None
        self._tracer: Any = None
        if not self.enabled:
            return
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
        except ImportError as exc:
            raise RuntimeError(f"--otel-endpoint needs the otel extra (pip install "
                               f"'rnnserve[otel]'): {exc}") from exc
        self._provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
        self._provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
        self._tracer = self._provider.get_tracer("rnnserve")

    def span(self, name: str, *, server: bool = False) -> AbstractContextManager[Any]:
        """A span around a block (nullcontext when tracing is off)."""
        if self._tracer is None:
            return nullcontext()
        from opentelemetry.trace import SpanKind

        kind = SpanKind.SERVER if server else SpanKind.INTERNAL
        return self._tracer.start_as_current_span(name, kind=kind)  # type: ignore[no-any-return]

    def shutdown(self) -> None:
        """Flush what is batched (called when the server stops)."""
        if self._provider is not None:
            self._provider.shutdown()
