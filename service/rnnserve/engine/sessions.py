"""Stateful sessions: the server keeps each client's hidden state between calls.

A session is a record and a state in the store, pinned to the model version it was created
on (adding or reloading a version never changes the weights under it). Every step goes
through that version's batcher, which applies one session's steps one at a time, in arrival
order. KServe v2 sequences (sequence_id/start/end) are sessions too, under ids derived from
the model and the sequence id: one store, one batcher, one mechanism."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from rnnserve.engine.batcher import Job
from rnnserve.engine.runner import Runner
from rnnserve.engine.step_collector import PendingStep, StepCollector
from rnnserve.engine.tensors import check_state, require_finite, require_sequence, to_float32
from rnnserve.errors import (
    InvalidInput,
    PayloadTooLarge,
    QuotaExceeded,
    RnnServeError,
    SessionNotFound,
    SessionOnOtherVersion,
)
from rnnserve.state import SessionRecord, StateStore

if TYPE_CHECKING:
    from rnnserve.engine.engine import Engine

SequenceId = int | str


class StepResult(NamedTuple):
    """A step's outputs [time, out], the session's timesteps after it, and its state
    [layers, 1, hidden] (empty for a replayed step). A tuple: made for every streamed step."""

    outputs: np.ndarray
    steps: int
    states: dict[str, np.ndarray]


def new_session_id() -> str:
    """128 random bits, URL-safe: unguessable, so an id is as good as a capability."""
    return secrets.token_urlsafe(16)


def sequence_parameters(params: Mapping[str, object]) -> tuple[SequenceId, bool, bool] | None:
    """(sequence_id, start, end) when a KServe v2 request belongs to a sequence, whatever the
    transport: an id is an unsigned 64-bit integer or a string; 0 and "" mean "no sequence";
    start and end are booleans (absent or null: false)."""
    sequence_id = params.get("sequence_id")
    if sequence_id is None or sequence_id == 0 or sequence_id == "":
        for key in ("sequence_start", "sequence_end"):
            if params.get(key):
                raise InvalidInput(f"{key} is set without a sequence_id")
        return None
    if isinstance(sequence_id, bool) or not isinstance(sequence_id, int | str):
        raise InvalidInput("sequence_id must be an unsigned 64-bit integer or a string, not "
                           f"{type(sequence_id).__name__}")
    if isinstance(sequence_id, int) and not 0 < sequence_id < 2**64:
        raise InvalidInput(f"sequence_id {sequence_id} is out of range: use 1 .. 2^64-1")
    flags = []
    for key in ("sequence_start", "sequence_end"):
        value = params.get(key)
        if value is not None and not isinstance(value, bool):
            raise InvalidInput(f"{key} must be true or false")
        flags.append(bool(value))
    return sequence_id, flags[0], flags[1]


def sequence_session_id(model: str, sequence_id: SequenceId) -> str:
    """The session behind a v2 sequence: per model, and 7 and "7" are different sequences."""
    kind = "s" if isinstance(sequence_id, str) else "n"
    return f"v2.{model}.{kind}.{sequence_id}"


class Sessions:
    """Session lifecycle over the engine's store and batchers. `owner` is the API key's
    identity (empty when keys are off): another owner's session is reported as unknown."""

    def __init__(self, engine: Engine, store: StateStore) -> None:
        self._engine = engine
        self._store = store
        self._collectors: dict[tuple[str, int], StepCollector] = {}

    @property
    def store(self) -> StateStore:
        return self._store

    # -- helpers ---------------------------------------------------------------------------

    async def _owned(self, session_id: str, owner: str) -> SessionRecord:
        record = await self._store.get(session_id)
        if record.owner != owner:
            raise SessionNotFound(f"unknown session {session_id!r}: create one with POST "
                                  "/v1/models/{model}/sessions")
        return record

    def runner_of(self, record: SessionRecord) -> Runner:
        by_version = self._engine.models.versions.get(record.model, {})
        runner = by_version.get(record.version)
        if runner is None:
            raise SessionNotFound(f"session {record.id!r} runs on {record.model!r} version "
                                  f"{record.version}, which is no longer served")
        return runner

    def check_step_input(self, runner: Runner, x: np.ndarray, what: str = "inputs") -> np.ndarray:
        """One or more timesteps [time, features] → [1, time, features], checked."""
        require_sequence(x, runner.signature.input_size, what)
        self._check_step_length(int(x.shape[0]), what)
        require_finite(x, what)
        return x[None]

    def _check_step_length(self, steps: int, what: str) -> None:
        limit = self._engine.settings.max_step_timesteps
        if steps > limit:
            raise PayloadTooLarge(f"{what} has {steps} timesteps; a step takes at most "
                                  f"{limit}: send them in several steps")

    def _new_record(self, runner: Runner, session_id: str, owner: str) -> SessionRecord:
        now = time.time()
        return SessionRecord(id=session_id, model=runner.name, version=runner.version,
                             created=now, last_used=now,
                             ttl_s=self._engine.settings.session_ttl_s, owner=owner)

    # -- the session API -------------------------------------------------------------------

    async def create(
        self, model: str, *, version: str | int | None = None,
        state: Mapping[str, np.ndarray] | None = None, owner: str = "",
    ) -> SessionRecord:
        runner = self._engine.runner(model, version)
        checked = check_state(runner.signature, state, "state")
        await self._check_quota(owner)
        layout = self._engine.batcher(runner).layout
        record = self._new_record(runner, new_session_id(), owner)
        return await self._store.create(layout, record, checked)

    async def _check_quota(self, owner: str) -> None:
        cap = self._engine.settings.max_sessions_per_key
        if cap and owner and await self._store.owned_sessions(owner) >= cap:
            raise QuotaExceeded(f"this API key holds its maximum of {cap} live sessions; "
                                "delete some (DELETE /v1/sessions/{id})", retry_after_s=5)

    async def step(self, session_id: str, x: np.ndarray, *, owner: str = "",
                   step_id: str | None = None) -> StepResult:
        """Apply one or more timesteps. With a `step_id` (the client's idempotency key), a
        retry of the session's latest step, e.g. after a lost reply or a replica that died,
        returns the recorded outputs instead of applying the step twice."""
        record = await self._owned(session_id, owner)
        return await self.step_on(self.runner_of(record), session_id, x, owner=owner,
                                  step_id=step_id)

    async def step_on(self, runner: Runner, session_id: str, x: np.ndarray, *, owner: str,
                      step_id: str | None = None) -> StepResult:
        """A step when the caller already knows the session's model version (a WebSocket
        resolved it when it connected): no lookup first, since the store checks owner and
        version while it gathers the state. It joins the version's StepCollector, like the
        stream's steps, so concurrent REST steps share one job; the collector checks the
        inputs (a bad one gets its own precise error)."""
        answer: asyncio.Future[StepResult | RnnServeError] = (
            asyncio.get_running_loop().create_future())

        def done(outcome: StepResult | RnnServeError) -> None:
            if not answer.done():  # the caller may have gone (cancelled); the step still ran
                answer.set_result(outcome)

        self._add_step(self._collector(runner), session_id, owner, x, step_id, done)
        outcome = await answer
        if isinstance(outcome, RnnServeError):
            raise outcome
        return outcome

    def stepper(self, runner: Runner) -> Callable[
            [str, str, Any, str | None, Callable[[StepResult | RnnServeError], None]], None]:
        """`step_on` for a caller that keeps many steps of one model version in flight
        without a task each (the direct WebSocket stream): returns
        `step(session_id, owner, inputs, step_id, done)`, with `inputs` as they came off the
        wire (nested lists). The step joins the version's StepCollector, which converts and
        checks the steps of one event-loop turn together. `done` gets the result or the
        step's own error (a bad step never fails another), from the event loop; steps of one
        session apply in the order given. A step id is honoured as the step is written: a
        repeat of the session's latest step id is replayed, not applied twice."""
        return partial(self._add_step, self._collector(runner))

    def _add_step(self, collector: StepCollector, session_id: str, owner: str, inputs: Any,
                  step_id: str | None,
                  done: Callable[[StepResult | RnnServeError], None]) -> None:
        self._check_step_id(step_id)
        collector.add(PendingStep(session_id, owner, inputs, step_id, done))

    def _collector(self, runner: Runner) -> StepCollector:
        batcher = self._engine.batcher(runner)
        key = (runner.name, runner.version)
        collector = self._collectors.get(key)
        if collector is None or collector.batcher is not batcher:
            collector = StepCollector(
                runner, batcher, self._engine.settings.max_step_timesteps,
                check_one=lambda value: self.check_step_input(runner,
                                                              to_float32(value, "inputs")),
                make_result=StepResult)
            self._collectors[key] = collector
        return collector

    @staticmethod
    def _check_step_id(step_id: object) -> None:
        if step_id is not None and (not isinstance(step_id, str)
                                    or not 0 < len(step_id) <= 128):
            raise InvalidInput("step_id must be a string of 1 to 128 characters")

    async def _run_step(self, runner: Runner, session_id: str, x3: np.ndarray, owner: str,
                        step_id: str | None = None) -> StepResult:
        """Run checked timesteps [1, time, features] through the session's batcher."""
        self._check_step_id(step_id)
        if step_id is not None:  # a retry answers from the record, without a run
            replayed = await self._store.replay(session_id, step_id, owner)
            if replayed is not None:
                return StepResult(replayed[0], replayed[1], {})
        job = Job(x3, sessions=[session_id], owners=[owner], step_ids=[step_id])
        result = await self._engine.batcher(runner).submit(job)
        assert result.steps is not None and result.errors is not None
        if result.errors[0] is not None:
            raise result.errors[0]
        return StepResult(result.y[0], result.steps[0], result.states)

    async def step_many(
        self, model: str, ids: list[str], inputs: np.ndarray | list[np.ndarray | RnnServeError],
        step_ids: list[str | None], *, owner: str = "",
    ) -> list[StepResult | RnnServeError]:
        """One step for each of many sessions of `model` (a gateway's request). Inputs of one
        shape [sessions, time, features] run as one job, checked at once; the rest (ragged
        inputs, a session listed twice, step ids, sessions on another version of the model)
        take the one-by-one path. Each item succeeds or fails alone; a failed item leaves its
        session unchanged."""
        runner = self._engine.runner(model)  # 404 for an unknown model fails the whole request
        n = len(ids)
        out: list[StepResult | RnnServeError | None] = [None] * n
        slow: list[int] = []
        fast: list[int] = []
        whole = inputs if isinstance(inputs, np.ndarray) else None
        if whole is not None:
            self.check_step_input(runner, whole[0], "steps[0].inputs")  # one shape for all
            finite = np.isfinite(whole).all(axis=(1, 2))
            if finite.all() and not any(step_ids) and len(set(ids)) == n:
                fast = list(range(n))  # the common case: no per-item sorting at all
            else:
                seen: set[str] = set()
                for i, sid in enumerate(ids):
                    if not finite[i]:
                        out[i] = InvalidInput(f"steps[{i}].inputs: values must be finite "
                                              "float32 numbers (no NaN or Infinity)")
                    elif sid in seen or step_ids[i] is not None:
                        slow.append(i)
                    else:
                        seen.add(sid)
                        fast.append(i)
        else:
            slow = list(range(n))
        if fast and whole is not None:
            everyone = len(fast) == n
            job = Job(whole if everyone else whole[fast],
                      sessions=ids if everyone else [ids[i] for i in fast],
                      owners=[owner] * len(fast))
            result = await self._engine.batcher(runner).submit(job)  # split past max_batch
            assert result.steps is not None and result.errors is not None
            y, steps, errors = result.y, result.steps, result.errors
            for k, i in enumerate(fast):
                error = errors[k]
                if error is None:
                    out[i] = StepResult(y[k], steps[k], {})
                elif isinstance(error, SessionOnOtherVersion):
                    slow.append(i)  # a session pinned to another version of this model
                else:
                    out[i] = error

        async def one(i: int) -> StepResult:
            x = inputs[i]
            if isinstance(x, RnnServeError):
                raise x
            record = await self._owned(ids[i], owner)
            if record.model != model:
                raise InvalidInput(f"session {ids[i]!r} belongs to model {record.model!r}, "
                                   f"not {model!r}")
            return await self.step_on(self.runner_of(record), ids[i], x, owner=owner,
                                      step_id=step_ids[i])

        slow_results = await asyncio.gather(*(one(i) for i in slow), return_exceptions=True)
        for i, res in zip(slow, slow_results, strict=True):
            if isinstance(res, BaseException) and not isinstance(res, RnnServeError):
                raise res
            out[i] = res
        return [r if r is not None else InvalidInput("not run") for r in out]

    async def reset(
        self, session_id: str, *, state: Mapping[str, np.ndarray] | None = None, owner: str = ""
    ) -> SessionRecord:
        record = await self._owned(session_id, owner)
        checked = check_state(self.runner_of(record).signature, state, "state")
        return await self._store.reset(session_id, checked)

    async def describe(self, session_id: str, *, owner: str = "") -> SessionRecord:
        return await self._owned(session_id, owner)

    async def read_state(
        self, session_id: str, *, owner: str = ""
    ) -> tuple[SessionRecord, dict[str, np.ndarray]]:
        await self._owned(session_id, owner)
        return await self._store.read(session_id)

    async def delete(self, session_id: str, *, owner: str = "") -> None:
        await self._owned(session_id, owner)
        await self._store.delete(session_id)

    # -- KServe v2 sequences ---------------------------------------------------------------

    async def sequence_step(
        self, model: str, version: str | int | None, sequence_id: SequenceId,
        start: bool, end: bool, tensors: Mapping[str, np.ndarray], *, owner: str = "",
    ) -> tuple[Runner, dict[str, np.ndarray]]:
        """Triton's sequence batcher with implicit state: the state inputs come from the
        server. `start` (re)starts the sequence from zeros; `end` frees it after this step."""
        session_id = sequence_session_id(model, sequence_id)
        if start:
            runner = self._engine.runner(model, version)
        else:
            try:
                record = await self._owned(session_id, owner)
            except SessionNotFound as exc:
                raise InvalidInput(
                    f"sequence {sequence_id!r} of model {model!r} is not active ({exc.message}); "
                    "the first request of a sequence must set sequence_start=true") from None
            runner = self.runner_of(record)
            if version not in (None, "") and str(version) != str(record.version):
                raise InvalidInput(f"sequence {sequence_id!r} runs on version "
                                   f"{record.version}, not {version}")
        sig = runner.signature
        extra = sorted(set(tensors) - {sig.input_name})
        if extra:
            raise InvalidInput(f"input(s) {extra} are not accepted in a sequence: the server "
                               "keeps the state; send only " + repr(sig.input_name))
        x = tensors.get(sig.input_name)
        self._engine.check_tensor_input(runner, x)
        assert x is not None
        if x.shape[0] != 1:
            raise InvalidInput(f"a sequence request carries one sequence: input "
                               f"{sig.input_name!r} must have batch size 1, not {x.shape[0]}")
        self._check_step_length(int(x.shape[1]), sig.input_name)  # the rest checked above
        if start:
            await self._check_quota(owner)
            layout = self._engine.batcher(runner).layout
            await self._store.create(layout, self._new_record(runner, session_id, owner), None,
                                     replace=True)
        result = await self._run_step(runner, session_id, x, owner)
        if end:
            try:
                await self._store.delete(session_id)
            except SessionNotFound:
                pass
        outputs = {sig.output_name: result.outputs[None]}
        outputs.update({s.output: result.states[s.input] for s in sig.states})
        return runner, outputs
