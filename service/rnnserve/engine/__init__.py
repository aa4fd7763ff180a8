"""The transport-agnostic core, and its one door: protocol adapters (http/, grpc/, console/)
import from `rnnserve.engine` only, never from the modules below it. Nothing in this package
knows about HTTP, JSON or protobuf: transports hand it float32 arrays, or undecoded step inputs
with a StepDecoder of their own."""

from rnnserve.engine.bulk_create import CreateOutcome, NewSession
from rnnserve.engine.deadlines import TimeLimit
from rnnserve.engine.engine import Engine, Prediction
from rnnserve.engine.model_control import check_load_parameters
from rnnserve.engine.model_registry import IndexEntry
from rnnserve.engine.pending import (
    MAX_STEP_ID,
    StepDecoder,
    StepOutcome,
    StepResult,
    StepRows,
)
from rnnserve.engine.providers import DeviceUnavailable
from rnnserve.engine.runner import Runner
from rnnserve.engine.session_ids import new_session_id
from rnnserve.engine.session_stepper import SessionStepper
from rnnserve.engine.sessions import Sessions
from rnnserve.engine.statistics import ModelStats, now_ns
from rnnserve.engine.v2 import (
    DATATYPES,
    EXTENSIONS,
    MAX_REQUEST_ID_CHARS,
    PLATFORM,
    V2_ADVICE,
    ModelMetadata,
    Sequence,
    ServerMetadata,
    V2DataPlane,
    V2Request,
    V2Response,
    answer_of,
    check_datatype,
    check_request_id,
    check_shape,
    sequence_parameters,
    sequence_session_id,
    step_outputs,
)
from rnnserve.engine.v2_extensions import model_config, model_statistics
from rnnserve.state import SessionRecord

__all__ = [
    "DATATYPES",
    "EXTENSIONS",
    "PLATFORM",
    "Sequence",
    "V2_ADVICE",
    "CreateOutcome",
    "DeviceUnavailable",
    "Engine",
    "IndexEntry",
    "ModelMetadata",
    "ModelStats",
    "NewSession",
    "Prediction",
    "Runner",
    "SessionRecord",
    "SessionStepper",
    "ServerMetadata",
    "Sessions",
    "StepDecoder",
    "MAX_REQUEST_ID_CHARS",
    "MAX_STEP_ID",
    "StepOutcome",
    "StepResult",
    "StepRows",
    "TimeLimit",
    "V2DataPlane",
    "V2Request",
    "V2Response",
    "answer_of",
    "step_outputs",
    "check_datatype",
    "check_request_id",
    "check_shape",
    "check_load_parameters",
    "model_config",
    "model_statistics",
    "new_session_id",
    "now_ns",
    "sequence_parameters",
    "sequence_session_id",
]
