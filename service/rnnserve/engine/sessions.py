"""Stateful sessions: the server keeps each client's hidden state between calls.

A session is a record and a state in the store, pinned to the model version it was created
on (adding or reloading a version never changes the weights under it). Every step enters
through that version's StepEntrance (steps.py), which hands the batcher one session's steps
one at a time, in arrival order. KServe v2 sequences (v2.py) are sessions too, under ids
derived from the model and the sequence id: one store, one entrance, one mechanism."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

import numpy as np

from rnnserve.engine import deadlines
from rnnserve.engine.attachments import Attachments, LetGo
from rnnserve.engine.batcher import Batcher
from rnnserve.engine.bulk_create import CreateOutcome, NewSession, create_many
from rnnserve.engine.limits import Limits
from rnnserve.engine.migration import Migrated, migrate, migrate_version, once_more_if_moved
from rnnserve.engine.pending import (
    ARRAYS,
    PendingStep,
    StepDecoder,
    StepOutcome,
    StepResult,
    StepRows,
    all_applied,
    check_step_id,
)
from rnnserve.engine.runner import Runner
from rnnserve.engine.session_ids import (
    MAX_SESSION_ID_CHARS,
    new_session_id,
    new_session_ids,
    too_long,
)
from rnnserve.engine.session_stepper import SessionStepper
from rnnserve.engine.statistics import counted, now_ns
from rnnserve.engine.step_waits import answered, one_step, unset
from rnnserve.engine.steps import StepEntrance
from rnnserve.engine.tensors import check_state
from rnnserve.errors import (
    InvalidInput,
    NotStreamable,
    RnnServeError,
    SessionNotFound,
    SessionOnOtherVersion,
    SessionQuotaExceeded,
    Unavailable,
    UnknownSession,
    not_applied,
)
from rnnserve.settings import Settings
from rnnserve.state import SessionRecord, StateStore

log = logging.getLogger("rnnserve.sessions")


def require_streamable(runner: Runner) -> None:
    """Refuse (NotStreamable, 400) a session, sequence or step on a version that cannot be
    stepped (runner.streaming, checked at load): its steps would silently answer wrong numbers."""
    if runner.streaming.streamable:
        return
    name = runner.name
    raise NotStreamable(
        f"model {name!r} version {runner.version} cannot be stepped in a session or a "
        f"sequence: {runner.streaming.reason}; predict whole sequences instead (POST "
        f"/v1/models/{name}/predict, or KServe v2 inference without sequence_id)")


class ServedVersions(Protocol):
    """What sessions need of the engine (which satisfies it; sessions never import it)."""

    def runner(self, model: str, version: str | int | None = None) -> Runner: ...
    def served_version(self, model: str, version: int) -> Runner | None: ...
    def session_runner(self, model: str, version: int, created: float) -> Runner | None: ...
    def batcher(self, runner: Runner) -> Batcher: ...


class Sessions:
    """Session lifecycle over the store and the step entrances. `owner` is the API key's
    identity (empty when keys are off): another owner's session is reported as unknown.
    `client` is the caller's address for the per-address cap (empty: not counted)."""

    def __init__(self, settings: Settings, store: StateStore, served: ServedVersions,
                 limits: Limits) -> None:
        self._settings = settings
        self._store = store
        self._served = served
        self._limits = limits
        self._entrances: dict[Runner, StepEntrance] = {}  # one per loaded instance
        self._attachments = Attachments()
        store.watch_attachments(self._attachments.attached)

    # -- lookups ---------------------------------------------------------------------------

    async def _owned(self, session_id: str, owner: str) -> SessionRecord:
        if len(session_id) > MAX_SESSION_ID_CHARS:
            raise too_long(session_id)
        record = await self._store.get(session_id)
        if record.owner != owner:
            raise UnknownSession(f"unknown session {session_id!r}")
        return record

    async def _owned_to_step(self, session_id: str, owner: str) -> SessionRecord:
        """`_owned`, where a step follows: a store that cannot answer means not applied."""
        try:
            return await self._owned(session_id, owner)
        except Unavailable as exc:
            raise not_applied(exc) from exc

    def _runner_of(self, record: SessionRecord) -> Runner:
        """The instance the session steps on: its version's, and of that version's files
        the ones it started on (model control may have loaded newer ones since)."""
        runner = self._served.session_runner(record.model, record.version, record.created)
        if runner is None:
            raise SessionNotFound(f"session {record.id!r} runs on {record.model!r} version "
                                  f"{record.version}, which is no longer served")
        return runner

    async def resolve(self, session_id: str, owner: str) -> tuple[SessionRecord, Runner]:
        """The session's record and the model version it runs on."""
        record = await self._owned(session_id, owner)
        return record, self._runner_of(record)

    def _entrance(self, runner: Runner) -> StepEntrance:
        """The version's step entrance: every step (REST, gateway, WebSocket, v2) goes
        through here, so none reaches a model that cannot be stepped."""
        require_streamable(runner)
        batcher = self._served.batcher(runner)
        entrance = self._entrances.get(runner)
        if entrance is None or entrance.batcher is not batcher:
            entrance = StepEntrance(runner.signature, batcher, self._limits)
            self._entrances[runner] = entrance
        return entrance

    def forget(self, runner: Runner) -> None:
        """An instance no longer served (model control unloaded it): drop its entrance."""
        self._entrances.pop(runner, None)

    # -- the session API -------------------------------------------------------------------

    async def live_by_model(self) -> dict[str, int]:
        """Live sessions per model name, as the store counts them (the model listing)."""
        return await self._store.live_sessions()

    async def create(
        self, model: str, *, version: str | int | None = None,
        state: Mapping[str, np.ndarray] | None = None, owner: str = "", client: str = "",
    ) -> SessionRecord:
        runner = self._served.runner(model, version)
        checked = check_state(runner.signature, state, "state")
        return await self.open(runner, new_session_id(), owner, checked, client=client)

    async def create_many(
        self, model: str, items: Sequence[NewSession | RnnServeError], *, owner: str = "",
        client: str = "",
    ) -> list[CreateOutcome]:
        """Many new sessions of `model` at once, each under a single create's rules, each
        succeeding or failing alone (bulk_create)."""
        return await create_many(self._settings, self._store, self._served, model, items,
                                 owner=owner, client=client, new_ids=new_session_ids,
                                 streamable=require_streamable)

    async def open(self, runner: Runner, session_id: str, owner: str,
                   state: dict[str, np.ndarray] | None = None, *,
                   replace: bool = False, client: str = "") -> SessionRecord:
        """Store a new session under `session_id` (a v2 sequence's start replaces its session)
        within the key's quota, or without keys the client address's (the store counts it,
        across replicas). A model that cannot be stepped gets none (NotStreamable)."""
        require_streamable(runner)
        cap = self._settings.max_sessions_per_key
        if cap and owner and await self._store.owned_sessions(owner) >= cap:
            raise SessionQuotaExceeded(f"this API key holds its maximum of {cap} live sessions",
                                       retry_after_s=5)
        counted = client if not owner and self._settings.max_sessions_per_client else ""
        now = time.time()
        record = SessionRecord(id=session_id, model=runner.name, version=runner.version,
                               created=now, last_used=now, ttl_s=runner.settings.session_ttl_s,
                               owner=owner, client=counted)
        async with deadlines.writing("creation", f"session {session_id!r}"):
            return await self._store.create(self._served.batcher(runner).layout, record,
                                            state, replace=replace)

    async def attach(self, session_id: str, owner: str) -> SessionRecord:
        """A connection (a WebSocket resuming its session) takes the session over: the
        latest attach wins. The record carries the holder number the connection's steps
        claim (`stepper`); `hold` it to hear when a newer attach takes over."""
        return await self._store.attach(session_id, owner)

    def hold(self, record: SessionRecord, let_go: LetGo) -> Callable[[], None]:
        """Call `let_go` (once, from the event loop) when a newer connection attaches to the
        session, here or on another replica; returns the release for when this one ends."""
        return self._attachments.hold(record.id, record.holder, let_go)

    def stepper(self, record: SessionRecord, decoder: StepDecoder) -> SessionStepper:
        """A stepper for a session the caller already resolved and holds (a WebSocket, at
        connect): its steps claim the record's holder number, so once a newer connection
        attaches they are refused (StreamReplaced) and not applied."""
        runner = self._runner_of(record)
        return SessionStepper(self._entrance(runner), record.id, record.owner, decoder,
                              record.holder, stats=runner.stats)

    def sequence_stepper(self, runner: Runner, session_id: str, owner: str, *,
                         with_states: bool) -> SessionStepper:
        """A stepper for a session its caller steps again and again with checked arrays
        [1, time, features] and a callback each (a KServe v2 sequence on a gRPC stream, once
        its first step there succeeded): the steps of `step_checked`, without a lookup, task
        or future per step. A session gone meanwhile fails its step with SessionNotFound."""
        return SessionStepper(self._entrance(runner), session_id, owner, None, None,
                              with_states)

    async def step(self, session_id: str, x: np.ndarray, *, owner: str = "",
                   step_id: str | None = None) -> StepResult:
        """Apply timesteps [time, features]. With a `step_id` (the client's idempotency key),
        a retry of one of the session's recent steps (its replay window: --step-history)
        returns the recorded outputs instead of applying it twice. The entrance checks the
        inputs with the other steps of its turn (ARRAYS). A session migrated while its step
        ran (not applied) steps once more, on its new version. One request in the statistics."""
        started = now_ns()

        async def attempt() -> StepResult:
            runner = self._runner_of(await self._owned_to_step(session_id, owner))
            return await counted(runner.stats, started,
                                 self._step(runner, session_id, x, owner, step_id))

        return await once_more_if_moved(attempt)

    async def _step(self, runner: Runner, session_id: str, x: np.ndarray, owner: str,
                    step_id: str | None) -> StepResult:
        check_step_id(step_id)
        return await one_step(self._entrance(runner), PendingStep(
            [session_id], owner, x, None if step_id is None else [step_id], unset, ARRAYS))

    async def step_checked(self, runner: Runner, session_id: str, owner: str, x3: np.ndarray,
                           *, with_states: bool = False, step_id: str | None = None
                           ) -> StepResult:
        """One step of checked timesteps [1, time, features] through the entrance; with
        `with_states`, the result carries the session's new state. `step_id` as in `step`
        (a replayed step's state is the stored one: it is the session's latest)."""
        check_step_id(step_id)
        return await one_step(self._entrance(runner), PendingStep(
            [session_id], owner, x3, None if step_id is None else [step_id], unset,
            with_states=with_states))

    async def step_many(
        self, model: str, ids: list[str], inputs: np.ndarray | list[np.ndarray | RnnServeError],
        step_ids: list[str | None], *, owner: str = "",
    ) -> Sequence[StepOutcome]:
        """One step for each of many sessions of `model` (a gateway's request). Inputs of one
        shape [sessions, time, features] enter as one PendingStep, checked at once; the rest
        (ragged inputs, a session listed again, sessions on another version of the model)
        enter one by one. Each item succeeds or fails alone; a failed item leaves its session
        unchanged. A model whose default version cannot be stepped fails the whole request
        (NotStreamable): its sessions could only run on another version, which REST steps
        and the WebSocket still reach. Counted as one request in the statistics of the
        model's default version (its items' rows count in its runs)."""
        started = now_ns()
        runner = self._served.runner(model)  # 404 for an unknown model fails the whole request
        return await counted(runner.stats, started,
                             self._step_many(runner, model, ids, inputs, step_ids, owner))

    async def _step_many(
        self, runner: Runner, model: str, ids: list[str],
        inputs: np.ndarray | list[np.ndarray | RnnServeError], step_ids: list[str | None],
        owner: str,
    ) -> Sequence[StepOutcome]:
        require_streamable(runner)
        n = len(ids)
        out: list[StepOutcome | None] = [None] * n
        together: list[int] = []
        alone: list[int] = []
        whole = inputs if isinstance(inputs, np.ndarray) else None
        given = step_ids.count(None) < n  # a step id "", 0 or false is given (and refused)
        try:  # every item's inputs wrong alike: each item says so, after its session's error
            if whole is not None:
                self._limits.check_step_input(runner.signature, whole[0], "steps[0].inputs")
        except RnnServeError:
            inputs, whole = list(inputs), None
        if whole is not None:
            finite = np.isfinite(whole).all(axis=(1, 2))
            if finite.all() and len(set(ids)) == n and (
                    not given or _valid_step_ids(step_ids)) and (
                    max(map(len, ids)) <= MAX_SESSION_ID_CHARS):
                together = list(range(n))  # the common case: no per-item sorting at all
            else:
                seen: set[str] = set()
                for i, sid in enumerate(ids):
                    if not finite[i]:
                        out[i] = InvalidInput(f"steps[{i}].inputs: values must be finite "
                                              "float32 numbers (no NaN or Infinity)")
                    elif len(sid) > MAX_SESSION_ID_CHARS:
                        out[i] = too_long(sid)
                    elif not _valid_step_ids(step_ids[i:i + 1]):
                        out[i] = InvalidInput("step_id must be a string of 1 to 128 characters")
                    elif sid in seen:
                        alone.append(i)
                    else:
                        seen.add(sid)
                        together.append(i)
        else:
            alone = list(range(n))
        if together and whole is not None:
            everyone = len(together) == n
            x = whole if everyone else whole[together]
            rows = ids if everyone else [ids[i] for i in together]
            rows_step_ids = (step_ids if everyone else [step_ids[i] for i in together]
                             ) if given else None
            outcomes = await answered(self._entrance(runner),
                                       PendingStep(rows, owner, x, rows_step_ids, unset))
            if everyone and type(outcomes) is StepRows:
                return outcomes  # every row applied: the arrays, with no object per row
            if everyone:
                out = list[StepOutcome | None](outcomes)
            else:
                for i, outcome in zip(together, outcomes, strict=True):
                    out[i] = outcome
            if not all_applied(outcomes):
                # a session pinned to another version of this model goes again, alone
                alone.extend(i for i, outcome in zip(together, outcomes, strict=True)
                             if isinstance(outcome, SessionOnOtherVersion))

        async def one(i: int) -> StepResult:
            x = inputs[i]
            if isinstance(x, RnnServeError):
                raise x
            record = await self._owned_to_step(ids[i], owner)
            if record.model != model:
                raise InvalidInput(f"session {ids[i]!r} belongs to model {record.model!r}, "
                                   f"not {model!r}")
            check_step_id(step_ids[i])
            step_id = step_ids[i]
            return await one_step(self._entrance(self._runner_of(record)), PendingStep(
                [ids[i]], owner, x, None if step_id is None else [step_id], unset, ARRAYS))

        late = await asyncio.gather(*(one(i) for i in alone), return_exceptions=True)
        for i, res in zip(alone, late, strict=True):
            if isinstance(res, BaseException) and not isinstance(res, RnnServeError):
                raise res
            out[i] = res
        return [r if r is not None else InvalidInput("not run") for r in out]

    async def reset(
        self, session_id: str, *, state: Mapping[str, np.ndarray] | None = None, owner: str = ""
    ) -> SessionRecord:
        record, runner = await self.resolve(session_id, owner)
        checked = check_state(runner.signature, state, "state")
        async with deadlines.writing("reset", f"session {session_id!r}"):
            return await self._store.reset(session_id, checked)

    async def migrate(self, session_id: str, version: int | str, *, owner: str = "") -> Migrated:
        """Move the session to another version of its model, re-warmed (migration.py)."""
        record, runner = await self.resolve(session_id, owner)
        return await migrate(self._store, self._served, record, runner, version)

    async def migrate_version(self, model: str, version: int, to: int | str, *,
                              owner: str = "") -> list[dict[str, object]]:
        """`migrate` for each of `owner`'s sessions on the version: one outcome each."""
        return await migrate_version(self._store, self._served, model, version, to, owner,
                                     lambda sid: self.migrate(sid, to, owner=owner))

    async def describe(self, session_id: str, *, owner: str = "") -> SessionRecord:
        return await self._owned(session_id, owner)

    async def read_state(
        self, session_id: str, *, owner: str = ""
    ) -> tuple[SessionRecord, dict[str, np.ndarray]]:
        await self._owned(session_id, owner)
        return await self._store.read(session_id)

    async def delete(self, session_id: str, *, owner: str = "") -> None:
        await self._owned(session_id, owner)
        async with deadlines.writing("deletion", f"session {session_id!r}"):
            await self._store.delete(session_id)

    async def end(self, session_id: str) -> None:
        """Free a session that may already be gone (a v2 sequence's end, after its last step).
        That step is applied, so it is answered even if the store fails here: the session
        then expires after its idle timeout instead (logged)."""
        try:
            await self._store.delete(session_id)
        except SessionNotFound:
            pass
        except Unavailable as exc:
            log.warning("session %r was stepped but could not be ended (it will expire): %s",
                        session_id, exc.message)


def _valid_step_ids(step_ids: list[str | None]) -> bool:
    try:
        for step_id in step_ids:
            check_step_id(step_id)
    except InvalidInput:
        return False
    return True
