"""KServe v2 gRPC messages <-> numpy and plain Python: the only protobuf code outside the
generated stubs. Requests are decoded and checked with the rules (and messages) of the HTTP v2
adapter, so both transports accept and refuse the same things.

tritonclient.grpc sends every input as `raw_input_contents` (one little-endian entry per
input, in order) and decodes outputs only from `raw_output_contents`, by position; typed
`contents.fp32_contents` are accepted too. rnnserve's models take and give FP32 only."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from rnnserve.engine.sessions import SequenceId, sequence_parameters
from rnnserve.errors import InvalidInput
from rnnserve.grpc.generated import inference_pb2 as pb

DATATYPES = {"BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
             "FP16", "FP32", "FP64", "BYTES", "BF16"}
EXTENSIONS = ["sequence", "sequence(string_id)"]
PLATFORM = "onnxruntime_onnx"

ParameterValue = bool | int | str | float
Sequence = tuple[SequenceId, bool, bool]
"""(sequence_id, sequence_start, sequence_end) of a stateful request."""


@dataclass(frozen=True)
class InferCall:
    """A decoded ModelInferRequest: float32 tensors by name and what to answer."""

    model: str
    version: str | None  # None: the default (highest) version
    id: str
    inputs: dict[str, np.ndarray]
    outputs: list[str] | None  # None: every output, in the model's order
    sequence: Sequence | None  # None: stateless


# -- parameters -------------------------------------------------------------------------------


def parameter_value(parameter: pb.InferParameter) -> ParameterValue | None:
    """The value of whichever member of the oneof is set; None when none is."""
    which = parameter.WhichOneof("parameter_choice")
    if which is None:
        return None
    value: ParameterValue = getattr(parameter, which)
    return value


def parameters(mapping: Mapping[str, pb.InferParameter]) -> dict[str, ParameterValue | None]:
    return {key: parameter_value(value) for key, value in mapping.items()}


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
    name, shape, datatype = tensor.name, list(tensor.shape), tensor.datatype
    if any(d < 0 for d in shape):
        raise InvalidInput(f"input {name!r}: shape must be a list of non-negative integers")
    if datatype not in DATATYPES:
        raise InvalidInput(f"input {name!r}: unknown datatype {datatype!r}")
    if datatype != "FP32":
        raise InvalidInput(f"input {name!r} has datatype {datatype}; this model takes FP32")
    count = math.prod(shape)
    if request.raw_input_contents:
        if tensor.HasField("contents"):
            raise InvalidInput(f"input {name!r} has both contents and raw_input_contents")
        raw = request.raw_input_contents[position]
        if len(raw) != count * 4:
            raise InvalidInput(f"input {name!r}: raw_input_contents[{position}] holds {len(raw)} "
                               f"bytes; shape {shape} of FP32 needs {count * 4}")
        return name, np.frombuffer(raw, dtype="<f4").reshape(shape)
    values = tensor.contents.fp32_contents
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
    sequence = sequence_parameters(parameters(request.parameters))  # the engine's rules
    inputs = decode_inputs(request)
    outputs = [o.name for o in request.outputs] or None
    return InferCall(request.model_name, request.model_version or None, request.id, inputs,
                     outputs, sequence)


def check_requested_outputs(call: InferCall, order: tuple[str, ...]) -> None:
    """Refuse an unknown requested output before anything runs (a sequence stays unchanged)."""
    for name in call.outputs or ():
        if name not in order:
            raise InvalidInput(f"unknown output {name!r}; the model gives {list(order)}")


# -- responses --------------------------------------------------------------------------------


def encode_infer_response(
    model: str, version: int, call: InferCall, results: Mapping[str, np.ndarray],
    order: tuple[str, ...],
) -> pb.ModelInferResponse:
    """Outputs as raw little-endian FP32, in the requested order (else the model's)."""
    response = pb.ModelInferResponse(model_name=model, model_version=str(version), id=call.id)
    for name in call.outputs or order:
        if name not in results:
            raise InvalidInput(f"unknown output {name!r}; the model gives {list(order)}")
        array = np.ascontiguousarray(results[name], dtype="<f4")
        response.outputs.add(name=name, datatype="FP32", shape=array.shape)
        response.raw_output_contents.append(array.tobytes())
    return response


def stream_error(request: pb.ModelInferRequest, message: str) -> pb.ModelStreamInferResponse:
    """An in-band stream error; the request's id and model ride along so that clients reading
    the raw stream can tell which request failed (tritonclient reads only the message)."""
    echo = pb.ModelInferResponse(model_name=request.model_name,
                                 model_version=request.model_version, id=request.id)
    return pb.ModelStreamInferResponse(error_message=message, infer_response=echo)


def server_metadata(info: Mapping[str, str]) -> pb.ServerMetadataResponse:
    return pb.ServerMetadataResponse(name=info["name"], version=info["version"],
                                     extensions=EXTENSIONS)


def model_metadata(described: Mapping[str, Any]) -> pb.ModelMetadataResponse:
    """From Engine.describe: the sequence tensor first, then each state pair (as HTTP v2)."""
    tensor = pb.ModelMetadataResponse.TensorMetadata
    seq_in, seq_out = described["inputs"], described["outputs"]
    inputs = [tensor(name=seq_in["name"], datatype="FP32", shape=seq_in["shape"])]
    outputs = [tensor(name=seq_out["name"], datatype="FP32", shape=seq_out["shape"])]
    for state in described["state"]:
        inputs.append(tensor(name=state["input"], datatype="FP32", shape=state["shape"]))
        outputs.append(tensor(name=state["output"], datatype="FP32", shape=state["shape"]))
    return pb.ModelMetadataResponse(name=described["name"], platform=PLATFORM,
                                    versions=[str(v) for v in described["versions"]],
                                    inputs=inputs, outputs=outputs)
