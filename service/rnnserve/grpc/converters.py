"""KServe v2 gRPC messages <-> the engine's v2 data plane (V2Request, V2Response): the only
protobuf code outside the generated stubs. The rules (datatypes, sequences, outputs) are the
data plane's, shared with HTTP, so both transports accept and refuse the same things.

tritonclient.grpc sends every input as `raw_input_contents` (one little-endian entry per
input, in order) and decodes outputs only from `raw_output_contents`, by position; typed
`contents.fp32_contents` are accepted too. rnnserve's models take and give FP32 only."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from rnnserve.engine import (
    MAX_REQUEST_ID_CHARS,
    ModelMetadata,
    Sequence,
    ServerMetadata,
    V2Request,
    check_datatype,
    check_request_id,
    check_shape,
    sequence_parameters,
)
from rnnserve.errors import InvalidInput
from rnnserve.grpc.generated import inference_pb2 as pb

ParameterValue = bool | int | str | float


@dataclass(frozen=True)
class InferCall:
    """A decoded ModelInferRequest: the data plane's request, the id to echo, and the sequence
    it steps (checked by the data plane's rules as the request is decoded)."""

    request: V2Request
    id: str
    sequence: Sequence | None

    @property
    def model(self) -> str:
        return self.request.model

    @property
    def version(self) -> str | None:
        return self.request.version

    @property
    def inputs(self) -> Mapping[str, np.ndarray]:
        return self.request.inputs

    @property
    def outputs(self) -> list[str] | None:
        return self.request.outputs


# -- parameters -------------------------------------------------------------------------------


def parameter_value(parameter: pb.InferParameter) -> ParameterValue | None:
    """The value of whichever member of the oneof is set; None when none is."""
    which = parameter.WhichOneof("parameter_choice")
    if which is None:
        return None
    value: ParameterValue = getattr(parameter, which)
    return value


def parameters(mapping: Mapping[str, pb.InferParameter]) -> dict[str, ParameterValue]:
    """The parameters' values; one with no value set is refused (it is no "absent": a
    sequence_id sent empty must not turn a step into stateless inference)."""
    values: dict[str, ParameterValue] = {}
    for key, parameter in mapping.items():
        value = parameter_value(parameter)
        if value is None:
            raise InvalidInput(f"parameter {key!r} has no value: set one of bool_param, "
                               "int64_param, string_param (or leave the parameter out)")
        values[key] = value
    return values


def sequence_key(request: pb.ModelInferRequest) -> tuple[str, str, ParameterValue] | None:
    """Which sequence a stream message steps, unchecked: messages with the same key must run
    in arrival order (a v2 sequence is a session per model and id; 7 and "7" differ)."""
    if "sequence_id" not in request.parameters:
        return None
    value = parameter_value(request.parameters["sequence_id"])
    if value is None or value == 0 or value == "":
        return None
    return request.model_name, type(value).__name__, value


# -- requests ---------------------------------------------------------------------------------


def _tensor(request: pb.ModelInferRequest, position: int) -> tuple[str, np.ndarray]:
    tensor = request.inputs[position]
    name, datatype = tensor.name, tensor.datatype
    shape = check_shape(list(tensor.shape), f"input {name!r}")
    check_datatype(name, datatype)
    count = math.prod(shape)
    if request.raw_input_contents:
        if tensor.HasField("contents"):
            raise InvalidInput(f"input {name!r} has both contents and raw_input_contents")
        raw = request.raw_input_contents[position]
        if len(raw) != count * 4:
            raise InvalidInput(f"input {name!r}: raw_input_contents[{position}] holds {len(raw)} "
                               f"bytes; shape {shape} of FP32 needs {count * 4}")
        return name, np.frombuffer(raw, dtype="<f4").reshape(shape)
    contents = tensor.contents
    others = [field.name for field, _ in contents.ListFields() if field.name != "fp32_contents"]
    if others:
        raise InvalidInput(f"input {name!r} has {others}: FP32 data goes in fp32_contents "
                           "(or raw_input_contents)")
    values = contents.fp32_contents
    if count and not values:
        raise InvalidInput(f"input {name!r} has no data: give raw_input_contents or "
                           "contents.fp32_contents")
    if len(values) != count:
        raise InvalidInput(f"input {name!r} has {len(values)} values; shape {shape} "
                           f"needs {count}")
    return name, np.asarray(values, dtype=np.float32).reshape(shape)


def decode_inputs(request: pb.ModelInferRequest) -> dict[str, np.ndarray]:
    if not request.inputs:
        raise InvalidInput("the request has no inputs: send the sequence input, FP32 "
                           "[batch, time, features]")
    raw = len(request.raw_input_contents)
    if raw and raw != len(request.inputs):
        raise InvalidInput(f"raw_input_contents has {raw} entries for {len(request.inputs)} "
                           "inputs: give one per input, in the order of inputs")
    inputs: dict[str, np.ndarray] = {}
    for position in range(len(request.inputs)):
        name, array = _tensor(request, position)
        if name in inputs:
            raise InvalidInput(f"input {name!r} appears twice")
        inputs[name] = array
    return inputs


def decode_infer_request(request: pb.ModelInferRequest) -> InferCall:
    check_request_id(request.id)
    params = parameters(request.parameters)
    sequence = sequence_parameters(params)
    outputs = [o.name for o in request.outputs] or None
    call = V2Request(request.model_name, request.model_version or None, decode_inputs(request),
                     params, outputs)
    return InferCall(call, request.id, sequence)


# -- responses --------------------------------------------------------------------------------


def encode_infer_response(
    model: str, version: int, call: InferCall, results: Mapping[str, np.ndarray],
    order: tuple[str, ...],
) -> pb.ModelInferResponse:
    """Outputs as raw little-endian FP32, in the requested order (else `order`)."""
    response = pb.ModelInferResponse(model_name=model, model_version=str(version), id=call.id)
    for name in call.outputs or order:
        array = np.ascontiguousarray(results[name], dtype="<f4")
        response.outputs.add(name=name, datatype="FP32", shape=array.shape)
        response.raw_output_contents.append(array.tobytes())
    return response


def stream_error(request: pb.ModelInferRequest, message: str) -> pb.ModelStreamInferResponse:
    """An in-band stream error; the request's id and model ride along so that clients reading
    the raw stream can tell which request failed (tritonclient reads only the message)."""
    def echoed(text: str) -> str:  # (not a refused one past any size: the reply must go)
        return text if len(text) <= MAX_REQUEST_ID_CHARS else ""

    echo = pb.ModelInferResponse(model_name=echoed(request.model_name),
                                 model_version=echoed(request.model_version),
                                 id=echoed(request.id))
    return pb.ModelStreamInferResponse(error_message=message, infer_response=echo)


def server_metadata(info: ServerMetadata) -> pb.ServerMetadataResponse:
    return pb.ServerMetadataResponse(name=info["name"], version=info["version"],
                                     extensions=info["extensions"])


def model_metadata(meta: ModelMetadata) -> pb.ModelMetadataResponse:
    """From the data plane's model metadata (the same as HTTP v2's)."""
    tensor = pb.ModelMetadataResponse.TensorMetadata
    return pb.ModelMetadataResponse(
        name=meta["name"], platform=meta["platform"], versions=meta["versions"],
        inputs=[tensor(name=t["name"], datatype=t["datatype"], shape=t["shape"])
                for t in meta["inputs"]],
        outputs=[tensor(name=t["name"], datatype=t["datatype"], shape=t["shape"])
                 for t in meta["outputs"]])
