"""Optional OpenTelemetry tracing: off unless `--otel-endpoint` names an OTLP/HTTP collector
(e.g. http://collector:4318/v1/traces). Each HTTP request and gRPC call becomes a server span
named after its route or method, carrying the request id, the model and the status, a child of
the caller's span when its headers or metadata carry a W3C `traceparent`; a WebSocket or gRPC
stream is a span for its life, with a span for one message in STREAM_SPAN_EVERY; each batch the
engine runs becomes a span with its rows, linked to the span of every request it served. Needs
the `otel` extra; the server imports none of it otherwise."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

STREAM_SPAN_EVERY = 100
"""A stream message in this many gets a span of its own (the first one always): a span per
message would cost more than the message."""


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

    def span(self, name: str, *, server: bool = False,
             carrier: Mapping[str, str] | None = None,
             links: Sequence[Any] = ()) -> AbstractContextManager[Any]:
        """A span around a block (nullcontext when tracing is off). `carrier`: the caller's
        headers or metadata (lower-case names): a W3C `traceparent` there makes the span its
        child, so the caller's trace goes on through the server. `links`: span contexts of
        the requests a batch serves (`current`)."""
        if self._tracer is None:
            return nullcontext()
        from opentelemetry.trace import Link, SpanKind

        kind = SpanKind.SERVER if server else SpanKind.INTERNAL
        context = None
        if carrier is not None and "traceparent" in carrier:
            from opentelemetry.propagate import extract

            context = extract(carrier)
        return self._tracer.start_as_current_span(  # type: ignore[no-any-return]
            name, context=context, kind=kind, links=[Link(c) for c in links])

    def current(self) -> Any:
        """The span context of the span current here (None when tracing is off or no span is
        current): what a batch's span links to."""
        if self._tracer is None:
            return None
        from opentelemetry.trace import get_current_span

        context = get_current_span().get_span_context()
        return context if context.is_valid else None

    def shutdown(self) -> None:
        """Flush what is batched (called when the server stops)."""
        if self._provider is not None:
            self._provider.shutdown()
