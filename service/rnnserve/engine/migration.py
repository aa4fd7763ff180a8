"""Moving a session to another version of its model (docs/migration.md).

The state of one model version means nothing to another (other weights, perhaps another
hidden size), so it is never carried over. Instead a version with `rewarm_steps` W > 0 in its
model.json has the store keep each session's last W timesteps of input, written with the
state in the same store write. Migration replays those inputs through the target version from
a zero state and moves the session to the target version with exactly that state, keeping
its id, step count and replay window of step ids (the store's `move`, refused and tried again
when the session stepped meanwhile, so no acknowledged step is overwritten): the state the
target would hold had the session started W steps ago (for a session shorter than W, exactly
what a session run on the target from its start holds). That is only a good start because a
recurrent state forgets its distant past; how much W is enough is measured per model, not
assumed.

Refused with 409 (MigrationRefused) where no exact answer exists: the session's version keeps
no inputs (W = 0), the target takes other inputs (another width or other feature names), or
the kept inputs are incomplete. An unknown target version is 404 like any unknown version."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import numpy as np

from rnnserve.engine import deadlines
from rnnserve.engine.batcher import Batcher
from rnnserve.engine.runner import Runner
from rnnserve.errors import (
    InvalidInput,
    MigrationRefused,
    ModelNotFound,
    RnnServeError,
    SessionChanged,
    SessionMoved,
    SessionOnOtherVersion,
    Unavailable,
)
from rnnserve.state import SessionRecord, StateStore

MIGRATE_TRIES = 5
"""Attempts to move a session that keeps stepping while its inputs replay, before a 503."""

T = TypeVar("T")


async def once_more_if_moved(attempt: Callable[[], Awaitable[T]], *, again: bool = True) -> T:
    """`attempt()` (a step that looks its session up, then steps it), run once more when a
    migration caught it: the session was moved to another version while the step ran, or
    between its lookup and its step, so it was not applied. The second run looks the
    session up again and steps it on its new version. REST steps and KServe v2 sequence steps
    both come here; `again` False: no second run (a v2 sequence's start)."""
    try:
        return await attempt()
    except (SessionOnOtherVersion, SessionMoved):
        if not again:
            raise
        return await attempt()


class MigrationTargets(Protocol):
    """What migration needs of the engine (Engine satisfies it)."""

    def runner(self, model: str, version: str | int | None = None) -> Runner: ...
    def served_version(self, model: str, version: int) -> Runner | None: ...
    def batcher(self, runner: Runner) -> Batcher: ...


@dataclass
class Migrated:
    """One migrated session: its new record and how many kept inputs were replayed."""

    record: SessionRecord
    replayed: int


def features_of(runner: Runner) -> list[Any]:
    """The feature names a version's model.json declares (empty: none declared)."""
    return list(runner.source.metadata.get("features", []) or [])


def check_same_inputs(source: Runner, target: Runner) -> None:
    """Refuse a target whose inputs differ from the source's: the kept inputs would mean
    something else to it (or not fit at all)."""
    model = source.name
    if source.signature.input_size != target.signature.input_size:
        raise MigrationRefused(
            f"model {model!r} version {target.version} takes {target.signature.input_size} "
            f"features per timestep and version {source.version} takes "
            f"{source.signature.input_size}: a session's kept inputs cannot be replayed "
            "through it; create a new session on that version instead")
    old, new = features_of(source), features_of(target)
    if old and new and old != new:
        raise MigrationRefused(
            f"model {model!r} version {target.version} takes the features {new} and version "
            f"{source.version} takes {old}: a session's kept inputs cannot be replayed "
            "through it; create a new session on that version instead")


def require_kept_inputs(source: Runner) -> int:
    """The source version's window W; MigrationRefused when it keeps none."""
    window = source.settings.rewarm_steps
    if window <= 0:
        raise MigrationRefused(
            f"model {source.name!r} version {source.version} keeps no inputs of its "
            "sessions (rewarm_steps is 0), so they cannot be migrated: set \"rewarm_steps\" "
            "(e.g. 48) in its model.json and load it again; sessions stepped after that can "
            "be migrated")
    return window


async def rewarmed_state(target: Runner, inputs: np.ndarray) -> dict[str, np.ndarray]:
    """The target's state after `inputs` [n, features] from zeros (zeros when n is 0)."""
    sig = target.signature
    zeros = {s.input: np.zeros(s.shape(1), np.float32) for s in sig.states}
    if len(inputs) == 0:
        return zeros
    feeds: dict[str, np.ndarray] = {sig.input_name: inputs[None].astype(np.float32), **zeros}
    out, _ = await target.run(feeds)
    return {s.input: np.ascontiguousarray(out[s.output]) for s in sig.states}


async def migrate(store: StateStore, served: MigrationTargets, record: SessionRecord,
                  source: Runner, version: int | str) -> Migrated:
    """Move one session (its owned record, its current instance) to `version`."""
    window = require_kept_inputs(source)
    target = served.runner(record.model, version)
    if target.version == record.version:
        raise InvalidInput(f"session {record.id!r} is on model {record.model!r} version "
                           f"{record.version} already; name another version")
    check_same_inputs(source, target)
    if not target.streaming.streamable:
        raise MigrationRefused(f"model {target.name!r} version {target.version} cannot be "
                               "stepped in a session, so no session can move to it")
    for _ in range(MIGRATE_TRIES):
        before, inputs = await store.recent_inputs(record.id, source.signature.input_size)
        if before.version != record.version:
            raise Unavailable(f"session {record.id!r} moved to version {before.version} "
                              "meanwhile (another migration); look it up and retry",
                              retry_after_s=0)
        if len(inputs) < min(before.steps, window):
            raise MigrationRefused(
                f"session {record.id!r} kept {len(inputs)} of its last "
                f"{min(before.steps, window)} inputs (some were stepped while its version kept "
                "none), so they cannot be replayed exactly; reset it, or migrate it after "
                "rewarm_steps more steps")
        inputs = inputs[-window:]
        state = await rewarmed_state(target, inputs)
        try:
            async with deadlines.writing("move", f"session {record.id!r} to its new version"):
                stored = await store.move(served.batcher(target).layout, before, state, inputs)
        except SessionChanged:
            continue  # stepped (or reset) while the inputs replayed: replay what it has now
        return Migrated(stored, int(len(inputs)))
    raise Unavailable(f"session {record.id!r} took steps during each of {MIGRATE_TRIES} "
                      "attempts to migrate it; migrate it between its steps (pause its "
                      "client), or retry", retry_after_s=1)


async def migrate_each(ids: list[str], one: Callable[[str], Awaitable[Migrated]]
                       ) -> list[dict[str, Any]]:
    """A bulk migration's outcome per session: migrated (with its new version and how many
    inputs were replayed), or its own error; one session's failure stops no other."""
    results: list[dict[str, Any]] = []
    for session_id in ids:
        try:
            done = await one(session_id)
        except RnnServeError as exc:
            results.append({"session_id": session_id, "error": exc.message,
                            "status": exc.http_status})
            continue
        results.append({"session_id": session_id, "version": done.record.version,
                        "replayed_steps": done.replayed})
    return results


async def migrate_version(store: StateStore, served: MigrationTargets, model: str,
                          version: int, to: int | str, owner: str,
                          one: Callable[[str], Awaitable[Migrated]]) -> list[dict[str, Any]]:
    """Every live session of `owner` on `model` version `version` to version `to`. What
    refuses them all (the target unknown, other inputs, no kept inputs) is raised once, before
    any moves; then each session is migrated on its own (`one`)."""
    target = served.runner(model, to)
    source = served.served_version(model, version)
    ids = await store.version_session_ids(model, version, owner)
    if source is None and not ids:
        raise ModelNotFound(f"model {model!r} has no version {version} with live sessions")
    if source is not None:
        require_kept_inputs(source)
        check_same_inputs(source, target)
    return await migrate_each(ids, one)
