"""Sessions created in bulk: many new sessions of one model in one call (a fleet reconnecting
after an outage opens thousands at once, and one request and one store write per session
would cost minutes at a million).

Every rule of a single create (`Sessions.create` and `Sessions.open`) holds per item: the
version it pins, its state's check, a model that cannot be stepped, the API key's session
cap, the client address's cap and --max-sessions (the store counts and refuses those two
item by item), and the store's `created` event. An item that breaks one gets its own error;
the others are created. What is shared is the work: each model version's items go to the
store as one `create_many` (one slab write in memory, one script per chunk in Redis)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple, Protocol

import numpy as np

from rnnserve.engine import deadlines
from rnnserve.engine.batcher import Batcher
from rnnserve.engine.runner import Runner
from rnnserve.engine.tensors import check_state
from rnnserve.errors import RnnServeError, SessionQuotaExceeded
from rnnserve.settings import Settings
from rnnserve.state import SessionRecord, StateStore

CreateOutcome = SessionRecord | RnnServeError


class NewSession(NamedTuple):
    """One item of a bulk create: the version to pin (None: the highest) and a starting
    state (None: zeros), as a single create takes them."""

    version: str | int | None = None
    state: Mapping[str, np.ndarray] | None = None


class Versions(Protocol):
    """What a bulk create needs of the engine (Sessions' ServedVersions)."""

    def runner(self, model: str, version: str | int | None = None) -> Runner: ...
    def batcher(self, runner: Runner) -> Batcher: ...


async def create_many(
    settings: Settings, store: StateStore, served: Versions, model: str,
    items: Sequence[NewSession | RnnServeError], *, owner: str, client: str,
    new_ids: Callable[[int], list[str]], streamable: Callable[[Runner], None],
) -> list[CreateOutcome]:
    """One outcome per item, in order: its session's record, or the error a single create
    of it would have raised. An item given as an error (the transport could not read it)
    stays that error. An unknown model fails the whole call, as it does a single create."""
    served.runner(model)  # ModelNotFound (404) for the whole request
    out: list[CreateOutcome | None] = [None] * len(items)
    runners: dict[str | int | None, Runner | RnnServeError] = {}
    groups: dict[tuple[str, int], tuple[Runner, list[int], list[dict[str, np.ndarray] | None]]]
    groups = {}
    for i, item in enumerate(items):
        if isinstance(item, RnnServeError):
            out[i] = item
            continue
        runner = runners.get(item.version)
        if runner is None:
            try:
                runner = served.runner(model, item.version)
                streamable(runner)
            except RnnServeError as exc:
                runner = exc
            runners[item.version] = runner
        if isinstance(runner, RnnServeError):
            out[i] = runner
            continue
        state = None
        if item.state is not None:
            try:
                state = check_state(runner.signature, item.state, f"sessions[{i}].state")
            except RnnServeError as exc:
                out[i] = exc
                continue
        group = groups.setdefault((runner.name, runner.version), (runner, [], []))
        group[1].append(i)
        group[2].append(state)
    await _within_key_cap(settings, store, owner, groups, out)
    counted = client if not owner and settings.max_sessions_per_client else ""
    now = time.time()
    for runner, indexes, states in groups.values():
        if not indexes:
            continue
        name, version, ttl_s = runner.name, runner.version, runner.settings.session_ttl_s
        records = [SessionRecord(id=session_id, model=name, version=version, created=now,
                                 last_used=now, ttl_s=ttl_s, owner=owner, client=counted)
                   for session_id in new_ids(len(indexes))]
        try:
            async with deadlines.writing("creation", f"{len(records)} sessions"):
                made = await store.create_many(served.batcher(runner).layout, records, states)
        except RnnServeError as exc:
            if not any(isinstance(o, SessionRecord) for o in out):
                raise  # nothing created: the request fails as a single create would
            made = [exc] * len(records)  # other versions' sessions exist: answer them
        for i, outcome in zip(indexes, made, strict=True):
            out[i] = outcome
    return [o if o is not None else RnnServeError("not created") for o in out]


async def _within_key_cap(
    settings: Settings, store: StateStore, owner: str,
    groups: dict[tuple[str, int], tuple[Runner, list[int], list[dict[str, np.ndarray] | None]]],
    out: list[CreateOutcome | None],
) -> None:
    """An API key's cap (--max-sessions-per-key): the items past the sessions it may still
    open fail with the single create's SessionQuotaExceeded (counted once, as a single
    create counts before it writes). Trims `groups` in place, latest items first."""
    cap = settings.max_sessions_per_key
    if not (cap and owner):
        return
    room = max(0, cap - await store.owned_sessions(owner))
    wanted = sorted(i for _, indexes, _ in groups.values() for i in indexes)
    if len(wanted) <= room:
        return
    refused = set(wanted[room:])
    for key, (runner, indexes, states) in list(groups.items()):
        kept = [(i, s) for i, s in zip(indexes, states, strict=True) if i not in refused]
        groups[key] = (runner, [i for i, _ in kept], [s for _, s in kept])
    for i in refused:
        out[i] = SessionQuotaExceeded(f"this API key holds its maximum of {cap} live sessions",
                                      retry_after_s=5)
