"""The state store interface and the records it keeps."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from rnnserve.errors import (
    MigrationRefused,
    RnnServeError,
    SessionChanged,
    SessionMoved,
    SessionQuotaExceeded,
    StreamReplaced,
    Unavailable,
)

SessionEvent = Callable[[str, str, int], None]
"""(event, model, steps): event is created, deleted, expired or evicted (evicted: the memory
store's LRU only). Stores call it so the server's metrics follow the sessions."""

AttachEvent = Callable[[str, int], None]
"""(session id, holder): a connection attached to the session and now holds it; connections
holding an older holder number must let go. Called for attaches of this process and, with a
shared store, of every replica."""


@dataclass(frozen=True)
class StateLayout:
    """The state tensors of one model version: (state input name, layers, hidden) each."""

    model: str
    version: int
    tensors: tuple[tuple[str, int, int], ...]
    ttl_s: float | None = field(default=None, compare=False)
    """The version's own idle timeout (model.json `session_ttl_s`); None: the store's."""
    max_sessions: int | None = field(default=None, compare=False)
    """The most live sessions of this version (model.json `max_sessions`); None: only the
    store's cap. Both stores honour it and `ttl_s` (docs/model_settings.md)."""
    rewarm_steps: int = field(default=0, compare=False)
    """How many of each session's last timesteps of input the store keeps (model.json
    `rewarm_steps`), so the session can be migrated to another version (docs/migration.md);
    0: none are kept, and `scatter` is handed no inputs."""
    features: int = field(default=0, compare=False)
    """The width of one timestep of input (what a kept input holds)."""

    @property
    def key(self) -> str:
        return f"{self.model}/{self.version}"

    def zeros(self, batch: int) -> dict[str, np.ndarray]:
        return {name: np.zeros((layers, batch, hidden), np.float32)
                for name, layers, hidden in self.tensors}

    @property
    def row_bytes(self) -> int:
        """Raw bytes of one session's state (float32)."""
        return sum(4 * layers * hidden for _, layers, hidden in self.tensors)


@dataclass
class SessionRecord:
    """What is known of a session besides its state."""

    id: str
    model: str
    version: int
    created: float
    last_used: float
    ttl_s: float
    steps: int = 0
    owner: str = ""
    holder: int = 0  # which attach holds the session (0: its creator); see StateStore.attach
    client: str = ""
    """The client address whose live-session cap this session counts against (keys off);
    empty when it counts against none (keys on, the cap off, a trusted proxy's own)."""
    last_step_id: str | None = None
    """The id of the latest applied step that carried one (None: none recorded), so that a
    resuming stream can tell which of its unanswered steps landed."""

    @property
    def expires_at(self) -> float:
        return self.last_used + self.ttl_s


@dataclass
class Gathered:
    """States of a batch of sessions, stacked on the batch axis, ready to feed.

    `errors[i]` is set for a row whose session is gone (deleted, expired, other model); its
    state rows are zeros and must not be scattered back. `token` is the store's own
    bookkeeping (slots, versions) for the matching scatter."""

    ids: list[str]
    states: dict[str, np.ndarray]
    errors: list[RnnServeError | None]
    token: Any = None


@dataclass
class Written:
    """The outcome of a scatter, per row: `steps`, the session's timesteps after the write;
    or `conflict` when another writer (replica) changed the session since the gather: the step
    must be run again; or `replayed` (outputs, steps) when the row's step id is one of the
    session's last N (its replay window): that step was applied already, by this or another
    replica, and must not be applied twice; or an error (the session went away)."""

    steps: list[int]
    conflict: list[bool] = field(default_factory=list)
    errors: list[RnnServeError | None] = field(default_factory=list)
    replayed: list[tuple[np.ndarray, int] | None] = field(default_factory=list)


class StateStore(Protocol):
    """Session records and states. Implementations raise SessionNotFound (saying whether the
    session is unknown or expired) and Unavailable (full, or the backend is down)."""

    name: str

    async def start(self) -> None: ...
    async def close(self) -> None: ...

    async def ping(self) -> None:
        """One light round trip to the backend (the engine probes the store with it every
        second); StoreUnreachable when the backend cannot be reached."""
        ...

    async def create(
        self, layout: StateLayout, record: SessionRecord, state: dict[str, np.ndarray] | None,
        *, replace: bool = False,
    ) -> SessionRecord:
        """Store a new session (state [layers, 1, hidden] per tensor; zeros if None). With
        `replace`, an existing session of that id is overwritten (v2 sequence_start)."""
        ...

    async def create_many(
        self, layout: StateLayout, records: list[SessionRecord],
        states: list[dict[str, np.ndarray] | None],
    ) -> list[SessionRecord | RnnServeError]:
        """`create` (never replacing) for many sessions of one version in one call, of one
        caller (the records share an owner, a client address and a creation time): each
        record is stored or gets the error its own create would raise (id taken, the
        client address's cap, the store full), in order; the store's other failures
        (Unavailable: unreachable) fail the whole call."""
        ...

    async def get(self, session_id: str) -> SessionRecord: ...

    async def read(self, session_id: str) -> tuple[SessionRecord, dict[str, np.ndarray]]:
        """The record and the state, each tensor [layers, 1, hidden]."""
        ...

    async def reset(
        self, session_id: str, state: dict[str, np.ndarray] | None
    ) -> SessionRecord:
        """Back to zeros (or to `state`); steps count from 0 again."""
        ...

    async def delete(self, session_id: str) -> None: ...

    async def gather(
        self, layout: StateLayout, ids: list[str], owners: list[str | None],
        holders: list[int | None] | None = None,
    ) -> Gathered:
        """Stack the sessions' states [layers, batch, hidden]. A row whose session is gone,
        belongs to another model version, or (owner given) to another owner gets an error;
        so does a row whose holder (given: a streamed step) is no longer the session's
        (StreamReplaced: a newer connection attached)."""
        ...

    async def attach(self, session_id: str, owner: str) -> SessionRecord:
        """A connection takes the session over: the holder number goes up by one (returned in
        the record) and every AttachEvent watcher hears of it. Steps claiming an older holder
        are refused from now on, and a step of an older holder gathered before the attach is
        not written (Redis: its write conflicts and is gathered again, then refused). Another
        owner's session is unknown, and is left as it was."""
        ...

    def watch_attachments(self, on_attach: AttachEvent) -> None:
        """Call `on_attach` for every attach from now on (this process's and, with a shared
        store, other replicas')."""
        ...

    async def scatter(
        self, gathered: Gathered, states: dict[str, np.ndarray], steps: list[int],
        outputs: np.ndarray, step_ids: list[str | None], inputs: np.ndarray | None = None,
    ) -> Written:
        """Write back the rows of `gathered` that had no error, adding `steps[i]` steps. A row
        with a step id also records it with its outputs [time, out], atomically with the state;
        a row whose step id is among the session's recorded ones (its replay window: the last
        N step ids) is not written but replayed. With `inputs` [rows, time, features] (the
        layout's `rewarm_steps` > 0), each written row's inputs are appended to the session's
        window of its last `rewarm_steps` inputs, in the same write as its state."""
        ...

    async def recent_inputs(self, session_id: str, features: int
                            ) -> tuple[SessionRecord, np.ndarray]:
        """The session's record and its last inputs since its creation or reset, at most its
        version's `rewarm_steps` of them, oldest first [n, features] (n 0: none kept). A store
        that cannot vouch for them (Redis: an older replica stepped the session without
        keeping its inputs) raises MigrationRefused."""
        ...

    async def move(self, layout: StateLayout, expect: SessionRecord,
                   state: dict[str, np.ndarray], inputs: np.ndarray) -> SessionRecord:
        """Migrate the session `expect` (as read by recent_inputs) to `layout`'s version of its
        model with `state`, atomically: refused with SessionChanged when it stepped, reset,
        was attached or moved since that read. It keeps its id, owner, client, created time,
        steps and replay window of step ids; its kept inputs become `inputs` [n, features]
        (the last `layout.rewarm_steps` of them)."""
        ...

    async def replay(
        self, session_id: str, step_id: str, owner: str
    ) -> tuple[np.ndarray, int] | None:
        """(outputs, steps after it) if `step_id` is in the session's replay window (its last
        N step ids) and the session is `owner`'s, else None."""
        ...

    async def live_sessions(self) -> dict[str, int]:
        """Live sessions per model name."""
        ...

    async def version_sessions(self, model: str) -> dict[int, int]:
        """Live sessions of `model` per version (versions with none may be left out)."""
        ...

    async def version_session_ids(self, model: str, version: int, owner: str) -> list[str]:
        """The ids of the live sessions of one model version created by `owner` (a bulk
        migration's sessions)."""
        ...

    async def retire(self, model: str, version: int, until: float) -> float:
        """Record a model version as retired (no new sessions; its sessions step on until
        `until`, epoch seconds), for every replica sharing the store. The first retirement
        fixes `until`: the recorded one is returned."""
        ...

    async def unretire(self, model: str, version: int) -> None:
        """The version serves again: forget its retirement."""
        ...

    async def retirements(self) -> dict[tuple[str, int], float]:
        """Every retired (model, version) and the end of its sessions' grace."""
        ...

    async def owned_sessions(self, owner: str) -> int:
        """Live sessions created by `owner` (an API key's identity), for per-key caps."""
        ...

    async def client_sessions(self, client: str) -> int:
        """Live sessions counted against the client address `client`. `create` refuses a
        record whose `client` holds `max_sessions_per_client` already (checked and written
        at once, so concurrent creates, on any replica, cannot overshoot)."""
        ...


def replaced(session_id: str) -> StreamReplaced:
    """The error of a streamed step whose connection no longer holds its session."""
    return StreamReplaced(f"session {session_id!r} was attached by a newer connection; this "
                          "step was not applied")


def version_full(layout: StateLayout, max_sessions: int) -> Unavailable:
    """The refusal of a session past a model version's own `max_sessions` (model.json)."""
    return Unavailable(f"model {layout.model!r} version {layout.version} holds its maximum of "
                       f"{max_sessions} live sessions (max_sessions in its model.json); delete "
                       "idle ones or retry later", retry_after_s=5)


def moved(session_id: str) -> SessionMoved:
    """The error of a step whose session was migrated to another version while it ran."""
    return SessionMoved(f"session {session_id!r} was migrated to another version of its model "
                        "while this step ran; the step was not applied: send it again")


def session_changed(session_id: str) -> SessionChanged:
    """The refusal of a move (migration) whose session changed since it was read: the
    migration reads it again."""
    return SessionChanged(f"session {session_id!r} stepped while it was being migrated; "
                          "migrate it again")


def unkept(session_id: str) -> MigrationRefused:
    """The refusal of a migration whose kept inputs miss the session's latest steps."""
    return MigrationRefused(
        f"session {session_id!r} was stepped without keeping its inputs (by a replica of an "
        "older release, or while its version had rewarm_steps 0), so they cannot be replayed "
        "exactly; reset it, or migrate it after rewarm_steps more steps")


def store_full(max_sessions: int) -> Unavailable:
    """The refusal of a session past --max-sessions (503: retry once sessions end)."""
    return Unavailable(f"the server holds its maximum of {max_sessions} live sessions; delete "
                       "idle ones or retry later", retry_after_s=5)


def client_quota_exceeded(client: str, cap: int) -> SessionQuotaExceeded:
    """The refusal of a session over the per-address cap (the transport adds how to free
    sessions: its advice for the remedy)."""
    return SessionQuotaExceeded(
        f"client address {client} holds its maximum of {cap} live sessions (without API keys "
        "live sessions are capped per client address; the server's operator sets the cap with "
        "--max-sessions-per-client)", retry_after_s=5)
