"""The memory store's replay window: each session's last N step ids with their outputs.

A client that pipelines (a WebSocket with up to --ws-max-queue steps in flight) and loses its
connection cannot know which of its unanswered steps were applied. It re-sends them all with
their original step ids; every id found here is replayed (its recorded outputs, not applied
again) and the others are applied. So N must be at least the stream's window: the server
takes the larger of --step-history and --ws-max-queue (Settings.replay_window).

Only steps that carry a step id are recorded; a step without one leaves the window as it was.
A reset, a delete or the end of the session forgets the window."""

from __future__ import annotations

import numpy as np

Entry = tuple[np.ndarray, int]
"""A recorded step: its outputs [time, out] and the session's timesteps after it."""

Kept = tuple[bytes, int, int]
"""How an entry is kept: the outputs' float32 bytes, their timesteps, the steps after it
(bytes rather than an array: about 100 bytes less per entry; bench numbers in
docs/deploy.md)."""


class StepHistory:
    """Per session, the last `size` step ids (oldest first) with their outputs."""

    def __init__(self, size: int) -> None:
        self.size = max(1, size)
        self._by_session: dict[str, dict[str, Kept]] = {}  # insertion order: oldest first

    def __bool__(self) -> bool:
        return bool(self._by_session)

    def find(self, session_id: str, step_id: str) -> Entry | None:
        """The recorded outputs and steps of `step_id`, if the session still remembers it."""
        window = self._by_session.get(session_id)
        kept = None if window is None else window.get(step_id)
        if kept is None:
            return None
        raw, time, steps = kept
        return np.frombuffer(raw, np.float32).reshape(time, -1).copy(), steps

    def latest(self, session_id: str) -> str | None:
        """The id of the session's latest recorded step (the WebSocket greeting names it)."""
        window = self._by_session.get(session_id)
        return next(reversed(window.keys())) if window else None

    def record(self, session_id: str, step_id: str, outputs: np.ndarray, steps: int) -> None:
        """Remember an applied step (the outputs are copied); the oldest beyond `size` goes."""
        window = self._by_session.get(session_id)
        if window is None:
            window = self._by_session[session_id] = {}
        window.pop(step_id, None)  # a reused id moves to the newest place
        arr = np.ascontiguousarray(outputs, np.float32)
        window[step_id] = (arr.tobytes(), arr.shape[0], steps)
        while len(window) > self.size:
            del window[next(iter(window))]

    def replays(self, ids: list[str], step_ids: list[str | None],
                rows: np.ndarray) -> list[Entry | None]:
        """Per row of a batch, its recorded step when `rows` (a mask) has it and its step id
        is in its session's window: that step was applied already and must not be again."""
        found: list[Entry | None] = [None] * len(ids)
        if any(step_ids):
            for i in np.flatnonzero(rows).tolist():
                step_id = step_ids[i]
                if step_id is not None:
                    found[i] = self.find(ids[i], step_id)
        return found

    def record_rows(self, ids: list[str], step_ids: list[str | None], outputs: np.ndarray,
                    rows: np.ndarray, steps: np.ndarray) -> None:
        """Record the written rows (`rows`, a mask) of a batch that carry step ids."""
        for i in np.flatnonzero(rows).tolist():
            step_id = step_ids[i]
            if step_id is not None:
                self.record(ids[i], step_id, outputs[i], int(steps[i]))

    def forget(self, session_id: str) -> None:
        self._by_session.pop(session_id, None)
