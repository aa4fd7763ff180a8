"""Metrics of the streams (WebSocket and gRPC ModelStreamInfer): streams open, messages in and
out, each reply's status and latency, and how streams closed.

A stream step costs the server about 30 µs; prometheus_client's Histogram.observe takes a lock
and walks its buckets in Python (2 µs) and Counter.inc takes a lock too, so three of them per
message would cost a tenth of the step. These series are plain Python numbers changed only on
the event loop's thread (where every stream's messages are handled and where /metrics is
rendered), so they need no lock: a message costs one bisect and a few additions. They are
exported through a collector of the metrics registry, in Prometheus' usual shapes."""

from __future__ import annotations

import bisect
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString


class StreamSeries:
    """One (transport, route, model)'s numbers. `received` returns the message's start time,
    which its `replied` takes back."""

    __slots__ = ("_bounds", "buckets", "closes", "codes", "open", "received_count",
                 "replied_count", "seconds")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self._bounds = bounds
        self.buckets = [0] * (len(bounds) + 1)  # the last one: above every bound
        self.seconds = 0.0
        self.received_count = 0
        self.replied_count = 0
        self.codes: dict[str, int] = {}
        self.open = 0
        self.closes: dict[str, int] = {}

    def received(self) -> float:
        self.received_count += 1
        return time.perf_counter()

    def replied(self, code: str, started: float) -> None:
        seconds = time.perf_counter() - started
        self.buckets[bisect.bisect_left(self._bounds, seconds)] += 1
        self.seconds += seconds
        self.replied_count += 1
        codes = self.codes
        codes[code] = codes.get(code, 0) + 1

    def opened(self) -> None:
        self.open += 1

    def closed(self, code: str) -> None:
        self.open -= 1
        self.closes[code] = self.closes.get(code, 0) + 1


class StreamMetrics(Collector):
    """Every stream series, registered as one collector."""

    LABELS = ("transport", "route", "model")

    def __init__(self, registry: CollectorRegistry, bounds: tuple[float, ...]) -> None:
        self._bounds = bounds
        self._series: dict[tuple[str, str, str], StreamSeries] = {}
        registry.register(self)

    def series(self, transport: str, route: str, model: str) -> StreamSeries:
        """The series of a stream's messages (labels bounded by the caller: route templates,
        served model names)."""
        key = (transport, route, model)
        found = self._series.get(key)
        if found is None:
            found = self._series[key] = StreamSeries(self._bounds)
        return found

    def describe(self) -> list[Any]:
        return []  # collected only when rendered: the families' names are fixed below

    def collect(self) -> Iterator[Any]:
        labels = list(self.LABELS)
        opened = GaugeMetricFamily("rnnserve_streams_open", "Streams open now", labels=labels)
        closes = CounterMetricFamily(
            "rnnserve_stream_closes", "Streams ended, by how: the WebSocket close code, or "
            "the gRPC status of ModelStreamInfer", labels=[*labels, "code"])
        messages = CounterMetricFamily(
            "rnnserve_stream_messages", "Stream messages received (in) and replies sent (out)",
            labels=[*labels, "direction"])
        replies = CounterMetricFamily(
            "rnnserve_stream_replies", "Stream replies by status: the HTTP status a WebSocket "
            "reply carries (200 or its error's), the gRPC status code of a gRPC reply",
            labels=[*labels, "code"])
        latency = HistogramMetricFamily(
            "rnnserve_stream_message_duration_seconds",
            "From a stream message's arrival to its reply", labels=labels)
        for key, series in self._series.items():
            values = list(key)
            opened.add_metric(values, series.open)
            for code, count in series.closes.items():
                closes.add_metric([*values, code], count)
            messages.add_metric([*values, "in"], series.received_count)
            messages.add_metric([*values, "out"], series.replied_count)
            for code, count in series.codes.items():
                replies.add_metric([*values, code], count)
            cumulative, running = [], 0
            for bound, count in zip((*map(floatToGoString, self._bounds), "+Inf"), series.buckets,
                                    strict=True):
                running += count
                cumulative.append((bound, running))
            latency.add_metric(values, cumulative, series.seconds)
        yield from (opened, closes, messages, replies, latency)
