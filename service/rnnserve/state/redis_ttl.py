"""Each Redis session's own idle timeout: its model version's `session_ttl_s` (model.json),
else the store's --session-ttl-s.

A session keeps the timeout of the version it belongs to, and every replica must agree on it
whatever its own flags say, so the timeout travels with the record: the hash's `ttl` field
holds it in seconds (Python's repr of the float, exact both ways). Writes that know the
version (create, the bulk create, scatter: each takes a StateLayout) use the layout's
timeout and store it; writes that know only an id (reset) and reads (get, gather, attach)
use the `ttl` field. `ttl` is a new field that a replica of the previous release never
reads (docs/deploy.md, "Rolling upgrades"): that replica refreshes a session it steps with
its own flag's timeout, and the next write of this release puts the version's back. A
record without the field (written by that release) has the reader's default: the layout's
timeout where the reader has a layout, else its flag's.

The marker (rnnserve:k:{id}, "{ttl label} {steps} {model}") carries the same timeout as its
label, so "expired after N s" names the version's timeout; the live sorted sets score each
id with its own expiry, so the sweep needs no timeout at all."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from rnnserve.state.base import StateLayout

TTL = b"ttl"
"""The hash field of a session's idle timeout, in seconds."""
MARKER_GRACE_MS = 86_400_000
"""How long after expiry an id still answers "expired" rather than "unknown"."""


@dataclass(frozen=True)
class TtlTimes:
    """One idle timeout as the scripts take it."""

    ttl_s: float
    ms: int  # the hash's PEXPIRE (at least 1 ms)
    marker_ms: int  # the marker outlives the hash by MARKER_GRACE_MS
    label: str  # the marker's "{ttl}" (what "expired after N s" says)
    field: str  # the hash's `ttl` value

    @classmethod
    def of(cls, ttl_s: float) -> TtlTimes:
        ms = max(1, math.ceil(ttl_s * 1000))
        return cls(ttl_s, ms, ms + MARKER_GRACE_MS, f"{ttl_s:g}", repr(float(ttl_s)))


class Timeouts:
    """The store's default timeout and each layout's, made once per value."""

    def __init__(self, default_s: float) -> None:
        self.default = TtlTimes.of(default_s)
        self._made: dict[float, TtlTimes] = {default_s: self.default}

    def times(self, ttl_s: float) -> TtlTimes:
        made = self._made.get(ttl_s)
        if made is None:
            made = TtlTimes.of(ttl_s)
            if len(self._made) < 64:  # the versions' timeouts: a handful of values
                self._made[ttl_s] = made
        return made

    def of_layout(self, layout: StateLayout) -> TtlTimes:
        """The timeout of the layout's version: its own, else the store's."""
        return self.default if layout.ttl_s is None else self.times(layout.ttl_s)

    def of_record(self, fields: dict[bytes, Any], default: TtlTimes | None = None) -> TtlTimes:
        """A stored record's timeout: its `ttl` field, else `default` (else the store's)."""
        stored = record_ttl(fields, None)
        if stored is None:
            return default or self.default
        return self.times(stored)


def record_ttl(fields: dict[bytes, Any], default_s: float | None) -> float | None:
    """The idle timeout a record's `ttl` field names, else `default_s` (also for a value
    that is no positive finite number: a record this release did not write)."""
    raw = fields.get(TTL)
    if raw:
        try:
            value = float(raw)
        except ValueError:
            return default_s
        if math.isfinite(value) and value > 0:
            return value
    return default_s
