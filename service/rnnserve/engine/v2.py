"""The KServe v2 (Open Inference Protocol) data plane, once for every transport: the rules of
datatypes, requested outputs and sequences, model metadata, and the dispatch of an infer call to
stateless inference or to a sequence step. The HTTP and gRPC adapters only translate their
wire format to a V2Request and a V2Response back.

Sequences follow Triton's sequence batcher with implicit state: `sequence_id` (an unsigned
64-bit integer, or a string of 1 to 256 printable characters), `sequence_start` and
`sequence_end`. The state inputs come from the server: a sequence is a session under an id
derived from the model, the sequence id and the API key's identity (sequence ids are scoped by
key), so a sequence started over gRPC can be continued over HTTP and the other way round, by
the same key only. A sequence step may carry `step_id` (a string of 1 to 128 characters), with
REST's rule: a repeat of one of the sequence's recent step ids (its replay window,
--step-history) returns that step's recorded outputs and is not applied again, so a step
whose answer was lost (a gRPC deadline, a dead connection) can be sent again safely. The state
outputs of a replayed step are the sequence's current state: the state after that step only
when it is the latest."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypedDict

import numpy as np

from rnnserve import __version__
from rnnserve.engine.engine import Engine
from rnnserve.engine.migration import once_more_if_moved
from rnnserve.engine.pending import StepResult, check_step_id
from rnnserve.engine.runner import Runner
from rnnserve.engine.statistics import now_ns
from rnnserve.errors import (
    InvalidInput,
    RnnServeError,
    SequenceNotActive,
    SessionNotFound,
    Unavailable,
    not_applied,
)
from rnnserve.whole_numbers import version_number

DATATYPES = frozenset({"BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32",
                       "INT64", "FP16", "FP32", "FP64", "BYTES", "BF16"})
PLATFORM = "onnxruntime_onnx"
EXTENSIONS = ("sequence", "sequence(string_id)")
"""Extensions every transport has; HTTP adds binary_tensor_data."""

V2_ADVICE = {
    "create-session": "; the first request of a sequence must set sequence_start=true",
    "free-session": "; end some sequences (sequence_end=true)",
    "start-sequence": "; the first request of a sequence must set sequence_start=true",
    "retry-step-id": ": retry with the same step_id parameter (a repeat of one of the "
    "sequence's recent step_ids returns its recorded outputs and is never applied twice); "
    "without a "
    "step_id, a retry may apply the step twice",
    "version-retired": "; start a new sequence (sequence_start=true) without a model version, "
    "or on one the server lists as ready",
}
"""What a KServe v2 client (HTTP or gRPC) is told to do about an error's `remedy`."""

MAX_SEQUENCE_ID_CHARS = 256
"""The longest string sequence_id: it becomes part of a session id (store keys, the
/v1/sessions/{id} path, log lines), so it is bounded like a step_id; an id that needs more is
better hashed by the client."""

SequenceId = int | str
Sequence = tuple[SequenceId, bool, bool]
"""(sequence_id, sequence_start, sequence_end) of a stateful request."""


class TensorMetadata(TypedDict):
    name: str
    datatype: str
    shape: list[int]


class ModelMetadata(TypedDict):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class ServerMetadata(TypedDict):
    name: str
    version: str
    extensions: list[str]


@dataclass(frozen=True)
class V2Request:
    """An infer call, decoded: float32 tensors by name, the request's parameters (plain values)
    and the requested outputs (None: every output, in the model's order)."""

    model: str
    version: str | None
    inputs: Mapping[str, np.ndarray]
    parameters: Mapping[str, object]
    outputs: list[str] | None


@dataclass(frozen=True)
class V2Response:
    """The outputs to send, in the order to send them."""

    model: str
    version: int
    outputs: dict[str, np.ndarray]


def check_datatype(name: str, datatype: object) -> None:
    """rnnserve's models take and give FP32 only; other datatypes are refused clearly."""
    if not isinstance(datatype, str) or datatype not in DATATYPES:
        raise InvalidInput(f"input {name!r}: unknown datatype {datatype!r}")
    if datatype != "FP32":
        raise InvalidInput(f"input {name!r} has datatype {datatype}; this model takes FP32")


MAX_RANK = 8
"""The most dimensions an input's shape may have: every input of an rnnserve model has 3
(the sequence input [batch, time, features], a state [layers, batch, hidden]); the model's
own check words the exact shape it wants, this one only keeps numpy from refusing a shape
with an error of its own."""
MAX_VALUES = 2**31
"""The most values a shape may describe, its zero dimensions left out: numpy refuses a shape
whose other dimensions multiply past its address space even when a 0 makes it empty, and no
request carries 2^31 values (8 GiB of float32)."""


def check_shape(shape: object, what: str) -> list[int]:
    """A tensor's shape from the wire, as a list: non-negative whole numbers, at most MAX_RANK
    of them, whose non-zero ones multiply to at most MAX_VALUES (a 0 makes a shape hold no
    values, so a size check alone would pass [2^40, 2^40, 0] on to numpy, which refuses it).
    `what` names the tensor in the refusal ("input 'x'", "state.h0")."""
    if not isinstance(shape, list | tuple) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise InvalidInput(f"{what}: shape must be a list of non-negative integers")
    if len(shape) > MAX_RANK:
        raise InvalidInput(f"{what}: shape has {len(shape)} dimensions; inputs have 3: "
                           "[batch, time, features] (a state: [layers, batch, hidden])")
    if math.prod(d for d in shape if d) > MAX_VALUES:
        raise InvalidInput(f"{what}: shape {list(shape)} describes more than {MAX_VALUES} "
                           "values; no request carries that many")
    return list(shape)


MAX_REQUEST_ID_CHARS = 1024
"""The longest request `id`. A reply echoes it, and a gRPC reply past the size limit never
leaves the server, although the step it answers was applied."""


def check_request_id(request_id: object) -> None:
    """A request id is a string of at most MAX_REQUEST_ID_CHARS characters (or none); the
    refusal comes before anything runs."""
    if request_id is None:
        return
    if not isinstance(request_id, str):
        raise InvalidInput('"id" must be a string')
    if len(request_id) > MAX_REQUEST_ID_CHARS:
        raise InvalidInput(f"the request id has {len(request_id)} characters; the most is "
                           f"{MAX_REQUEST_ID_CHARS}: send a shorter id")


def sequence_parameters(params: Mapping[str, object]) -> Sequence | None:
    """(sequence_id, start, end) when a request belongs to a sequence: an id is an unsigned
    64-bit integer or a string of 1 to 256 printable characters (no control characters: an
    id ends up in log lines); 0 and "" mean "no sequence"; start and end are booleans (absent
    or null: false)."""
    sequence_id = params.get("sequence_id")
    if isinstance(sequence_id, bool | float):  # (False == 0 and 0.0 == 0: not "no sequence")
        raise InvalidInput("sequence_id must be an unsigned 64-bit integer or a string, not "
                           f"{type(sequence_id).__name__}")
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
    if isinstance(sequence_id, str):
        check_string_sequence_id(sequence_id)
    flags = []
    for key in ("sequence_start", "sequence_end"):
        value = params.get(key)
        if value is not None and not isinstance(value, bool):
            raise InvalidInput(f"{key} must be true or false")
        flags.append(bool(value))
    return sequence_id, flags[0], flags[1]


def check_string_sequence_id(sequence_id: str) -> None:
    """A string sequence_id is 1 to MAX_SEQUENCE_ID_CHARS printable characters (str's
    isprintable: no control, format or separator characters but the space). The refusal
    never echoes the id: it may be 100,000 characters, or hold a line break."""
    if len(sequence_id) > MAX_SEQUENCE_ID_CHARS:
        raise InvalidInput(f"sequence_id has {len(sequence_id)} characters; a string "
                           f"sequence_id has 1 to {MAX_SEQUENCE_ID_CHARS}: send a shorter id "
                           "(a hash of a long one) or an unsigned 64-bit integer")
    if not sequence_id.isprintable():
        raise InvalidInput("sequence_id must be printable characters: no control characters "
                           "(line breaks, tabs, NUL) and no format or separator characters "
                           "other than the space")


def sequence_session_id(model: str, sequence_id: SequenceId, owner: str = "") -> str:
    """The session behind a v2 sequence: per model, 7 and "7" are different sequences, and
    with API keys per key: key A's sequence 42 and key B's 42 are two sequences, so nothing
    one key does to its sequences (start, step, end) reaches another's. Without keys (owner
    "") the id is what it always was. A model name holds no "@", so the two forms never meet."""
    kind = "s" if isinstance(sequence_id, str) else "n"
    if owner:
        return f"v2@{owner}.{model}.{kind}.{sequence_id}"
    return f"v2.{model}.{kind}.{sequence_id}"


class V2DataPlane:
    """The v2 calls over one engine."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def server_metadata(self, extensions: tuple[str, ...] = EXTENSIONS) -> ServerMetadata:
        return {"name": "rnnserve", "version": __version__, "extensions": list(extensions)}

    def model_ready(self, model: str, version: str | None) -> tuple[str, int]:
        """(name, version) of a servable model version; NotFound otherwise."""
        runner = self._engine.runner(model, version)
        return runner.name, runner.version

    def model_metadata(self, model: str, version: str | None) -> ModelMetadata:
        """The sequence tensor first, then each state pair, as Triton lists them."""
        runner = self._engine.runner(model, version)
        sig = runner.signature
        inputs = [TensorMetadata(name=sig.input_name, datatype="FP32",
                                 shape=[-1, -1, sig.input_size])]
        outputs = [TensorMetadata(name=sig.output_name, datatype="FP32",
                                  shape=[-1, -1, sig.output_size])]
        for s in sig.states:
            shape = [s.layers, -1, s.hidden]
            inputs.append(TensorMetadata(name=s.input, datatype="FP32", shape=shape))
            outputs.append(TensorMetadata(name=s.output, datatype="FP32", shape=shape))
        return {
            "name": runner.name,
            "versions": [str(v) for v in sorted(self._engine.models.versions[runner.name])],
            "platform": PLATFORM,
            "inputs": inputs,
            "outputs": outputs,
        }

    async def infer(self, request: V2Request, owner: str, client: str = "") -> V2Response:
        """Stateless inference, or a sequence step when the parameters name a sequence. An
        unknown requested output is refused before anything runs: a rejected call never
        advances a sequence. `client`: the caller's address as the per-client session cap
        counts it (a sequence's start creates a session). Counted as one request in the
        statistics of the version that answered it (a refused one: of the version asked for)."""
        started = now_ns()
        asked: Runner | None
        try:
            asked = self._engine.runner(request.model, request.version)
        except RnnServeError:
            asked = None  # a retiring version: its sequences' later steps still go on
        try:
            runner, answer = await self._infer(request, asked, owner, client)
        except Exception:
            if asked is not None:
                asked.stats.failed(started)
            raise
        runner.stats.succeeded(started)
        return answer

    async def _infer(self, request: V2Request, asked: Runner | None, owner: str, client: str
                     ) -> tuple[Runner, V2Response]:
        sequence = sequence_parameters(request.parameters)
        if sequence is None or sequence[1]:  # a sequence's later step: once it is resolved
            check_outputs(request, asked or self._engine.runner(request.model,
                                                               request.version))
        step_id = request.parameters.get("step_id")
        check_step_id(step_id)
        if sequence is None:
            if step_id is not None:
                raise InvalidInput("step_id is set without a sequence_id: it names a step of "
                                   "a sequence (stateless inference changes nothing to retry)")
            runner, results = await self._engine.infer(request.model, request.inputs,
                                                       version=request.version)
        else:
            assert step_id is None or isinstance(step_id, str)
            try:
                runner, results = await self._sequence_step(request, *sequence, owner, client,
                                                            step_id)
            except Unavailable as exc:  # a 503 before the step (store, start) or of the step
                raise not_applied(exc) from exc  # itself, which says whether it was applied
        return runner, answer_of(request, runner, results)

    async def _sequence_step(
        self, request: V2Request, sequence_id: SequenceId, start: bool, end: bool, owner: str,
        client: str = "", step_id: str | None = None,
    ) -> tuple[Runner, dict[str, np.ndarray]]:
        """`start` (re)starts the sequence from zeros; `end` frees it after this step. A later
        step caught by a migration of its sequence (not applied) runs once more, on the
        version the sequence moved to, as a REST step does."""
        return await once_more_if_moved(
            lambda: self._sequence_step_once(request, sequence_id, start, end, owner, client,
                                             step_id), again=not start)

    async def _sequence_step_once(
        self, request: V2Request, sequence_id: SequenceId, start: bool, end: bool, owner: str,
        client: str, step_id: str | None,
    ) -> tuple[Runner, dict[str, np.ndarray]]:
        engine, model, version = self._engine, request.model, request.version
        sessions = engine.sessions
        session_id = sequence_session_id(model, sequence_id, owner)
        if start:
            runner = engine.runner(model, version)
        else:
            try:
                record, runner = await sessions.resolve(session_id, owner)
            except SessionNotFound:
                if model not in engine.models.versions:
                    engine.runner(model, version)  # an unknown model: 404, as everywhere
                raise SequenceNotActive(
                    f"sequence {sequence_id!r} of model {model!r} is not active") from None
            if version is not None and version_number(version) != record.version:
                engine.runner(model, version)  # a version the model lacks: 404, as everywhere
                raise InvalidInput(f"sequence {sequence_id!r} runs on version "
                                   f"{record.version}, not {version}")
            check_outputs(request, runner)  # its version may be retiring: no new calls
        x = self.sequence_input(request, runner)
        if start:
            await sessions.open(runner, session_id, owner, replace=True, client=client)
        with_states = wants_states(request, runner)
        result = await sessions.step_checked(runner, session_id, owner, x,
                                             with_states=with_states, step_id=step_id)
        if end:
            await sessions.end(session_id)
        return runner, step_outputs(runner, result, with_states)

    def later_step_input(self, request: V2Request, runner: Runner, step_id: object
                         ) -> tuple[np.ndarray, bool]:
        """A later step's checks on the `runner` of its session (its outputs, input and step
        id): (timesteps, with_states)."""
        check_outputs(request, runner)
        x = self.sequence_input(request, runner)
        check_step_id(step_id)
        return x, wants_states(request, runner)

    def sequence_input(self, request: V2Request, runner: Runner) -> np.ndarray:
        """The checked timesteps [1, time, features] of a sequence step on `runner`: its only
        input (the server keeps the state), one sequence, within the limits, finite."""
        engine, sig = self._engine, runner.signature
        extra = (sorted(set(request.inputs) - {sig.input_name}) if len(request.inputs) != 1
                 or sig.input_name not in request.inputs else None)  # (sorted: on a refusal)
        if extra:
            raise InvalidInput(f"input(s) {extra} are not accepted in a sequence: the server "
                               "keeps the state; send only " + repr(sig.input_name))
        x = engine.limits.check_tensor_input(sig, request.inputs.get(sig.input_name))
        if x.shape[0] != 1:
            raise InvalidInput(f"a sequence request carries one sequence: input "
                               f"{sig.input_name!r} must have batch size 1, not {x.shape[0]}")
        engine.limits.check_step_length(int(x.shape[1]), sig.input_name)
        return x


def wants_states(request: V2Request, runner: Runner) -> bool:
    """Whether a step's answer carries the new states (slicing them costs a dict a step)."""
    return request.outputs is None or request.outputs != [runner.signature.output_name]


def step_outputs(runner: Runner, result: StepResult, with_states: bool) -> dict[str, Any]:
    """A sequence step's outputs by name: [1, time, out], and the states if `with_states`."""
    sig = runner.signature
    outputs = {sig.output_name: result.outputs[None]}
    if with_states:
        outputs.update({s.output: result.states[s.input] for s in sig.states})
    return outputs


def answer_of(request: V2Request, runner: Runner, results: dict[str, Any]) -> V2Response:
    """The v2 answer: the requested outputs (every output when none is named)."""
    names = request.outputs or runner.signature.output_names
    return V2Response(runner.name, runner.version, {name: results[name] for name in names})


def check_outputs(request: V2Request, runner: Runner) -> None:
    """Refuse an unknown or repeated requested output before anything runs."""
    known = runner.signature.output_names
    for name in request.outputs or ():
        if name not in known:
            raise InvalidInput(f"unknown output {name!r}; the model gives {list(known)}")
    if request.outputs and len(set(request.outputs)) != len(request.outputs):
        twice = sorted({n for n in request.outputs if request.outputs.count(n) > 1})
        raise InvalidInput(f"output(s) {twice} requested more than once: name each output "
                           "once")
