"""The KServe v2 model repository extension over gRPC (RepositoryIndex, RepositoryModelLoad,
RepositoryModelUnload), as Triton serves it, so that `tritonclient.grpc`'s
get_model_repository_index, load_model and unload_model work. The rules are the engine's
(model_control.py), the same as over HTTP (http/v2_repository.py): load and unload answer
Triton's "explicit model load / unload is not allowed if polling is enabled" outside explicit
mode (FAILED_PRECONDITION: errors.ModelControlDisabled), and load's `config` and `file:`
parameters are refused by name."""

from __future__ import annotations

from rnnserve.engine import Engine, check_load_parameters
from rnnserve.errors import InvalidInput
from rnnserve.grpc.generated import inference_pb2 as pb


def _one_repository(repository_name: str) -> None:
    if repository_name:
        raise InvalidInput(f"repository_name {repository_name!r}: rnnserve serves one model "
                           "repository (--models); leave repository_name empty")


async def index(engine: Engine, request: pb.RepositoryIndexRequest
                ) -> pb.RepositoryIndexResponse:
    """Every model version with its state and reason; `ready`: only the ready ones."""
    _one_repository(request.repository_name)
    rows = await engine.control.index(ready_only=request.ready)
    return pb.RepositoryIndexResponse(models=[
        pb.RepositoryIndexResponse.ModelIndex(
            name=row.name, version="" if row.version is None else str(row.version),
            state=row.state, reason=row.reason)
        for row in rows])


async def load(engine: Engine, request: pb.RepositoryModelLoadRequest
               ) -> pb.RepositoryModelLoadResponse:
    engine.control.require_explicit()
    _one_repository(request.repository_name)
    check_load_parameters(list(request.parameters))
    await engine.control.load(request.model_name)
    return pb.RepositoryModelLoadResponse()


async def unload(engine: Engine, request: pb.RepositoryModelUnloadRequest
                 ) -> pb.RepositoryModelUnloadResponse:
    engine.control.require_explicit()
    _one_repository(request.repository_name)
    unknown = sorted(set(request.parameters) - {"unload_dependents"})
    if unknown:
        raise InvalidInput(f"unknown unload parameter(s) {unknown}; unload takes "
                           "unload_dependents (rnnserve's models have none: it changes nothing)")
    await engine.control.unload(request.model_name)
    return pb.RepositoryModelUnloadResponse()
