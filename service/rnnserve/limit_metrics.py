"""The server's own limits as Prometheus gauges: the most rows in one batch, the most rows
waiting per model version, the most live sessions.

Why: the alerting and recording rules (deploy/prometheus/rules/) compare what the server holds
with what it may hold (batch fill = rows per run ÷ --max-batch, queue saturation = queued rows
÷ --max-queue, sessions near --max-sessions). Exported next to the counts, those ratios follow
a changed flag without anyone editing a rule, and a replica started with other flags is
measured against its own limits."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Gauge

from rnnserve.settings import Settings


def export_limits(registry: CollectorRegistry, settings: Settings) -> None:
    """Register the three limit gauges in `registry`, set once: the flags are read at start."""
    Gauge("rnnserve_batch_max_rows",
          "Most rows (sequences or session steps) in one ONNX Runtime call (--max-batch)",
          registry=registry).set(settings.max_batch)
    Gauge("rnnserve_batch_queue_max_rows",
          "Most rows waiting in the batcher's queue per model version (--max-queue; 503 above)",
          registry=registry).set(settings.max_queue)
    Gauge("rnnserve_sessions_max",
          "Most live sessions the state store holds (--max-sessions; with Redis the cap is "
          "shared by every replica)", registry=registry).set(settings.max_sessions)
