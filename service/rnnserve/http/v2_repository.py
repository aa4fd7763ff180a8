"""The KServe v2 model repository extension over HTTP, as Triton serves it (so that
`tritonclient.http`'s get_model_repository_index, load_model and unload_model work):

    POST /v2/repository/index                   [{"name", "version", "state", "reason"}, ...]
    POST /v2/repository/models/{m}/load         {} once loaded (400 says why not)
    POST /v2/repository/models/{m}/unload       {} once unloaded

Load and unload work in explicit model control only; otherwise they answer Triton's own
message ("explicit model load / unload is not allowed if polling is enabled"), with 409
(errors.ModelControlDisabled says why not Triton's 503). The rules are the
engine's (model_control.py); this module reads and writes the bodies."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from rnnserve.engine import IndexEntry, check_load_parameters
from rnnserve.errors import InvalidInput
from rnnserve.http.body import only_fields, read_json_object
from rnnserve.http.common import engine_of
from rnnserve.http.responses import FastJSONResponse

router = APIRouter(prefix="/v2/repository", tags=["KServe v2 model repository"])


def index_row(entry: IndexEntry) -> dict[str, Any]:
    """One index row as Triton writes it: the version as a string, absent for a model row."""
    row: dict[str, Any] = {"name": entry.name}
    if entry.version is not None:
        row["version"] = str(entry.version)
    row["state"] = entry.state
    row["reason"] = entry.reason
    return row


def _parameters(body: dict[str, Any], what: str) -> dict[str, Any]:
    only_fields(body, {"parameters"}, what)
    parameters = body.get("parameters", {})
    if not isinstance(parameters, dict):
        raise InvalidInput(f"{what}: parameters must be a JSON object")
    return parameters


@router.post("/index", summary="Every model version in the repository, with its state "
             '(READY, LOADING, UNLOADING, UNAVAILABLE) and why; {"ready": true}: ready ones')
async def repository_index(request: Request) -> FastJSONResponse:
    body = await read_json_object(request, optional=True)
    only_fields(body, {"ready"}, "the repository index")
    ready = body.get("ready", False)
    if not isinstance(ready, bool):
        raise InvalidInput("ready must be true or false")
    rows = await engine_of(request).control.index(ready_only=ready)
    return FastJSONResponse([index_row(row) for row in rows])


@router.post("/models/{model}/load", summary="Load a model's versions from the repository, "
             "or load again those whose files changed (--model-control explicit only)")
async def load_model(request: Request, model: str) -> FastJSONResponse:
    control = engine_of(request).control
    control.require_explicit()
    body = await read_json_object(request, optional=True)
    check_load_parameters(list(_parameters(body, "load")))
    await control.load(model)
    return FastJSONResponse({})


@router.post("/models/{model}/unload", summary="Stop serving every version of a model "
             "(--model-control explicit only)")
async def unload_model(request: Request, model: str) -> FastJSONResponse:
    control = engine_of(request).control
    control.require_explicit()
    body = await read_json_object(request, optional=True)
    parameters = _parameters(body, "unload")
    only_fields(parameters, {"unload_dependents"}, "unload's parameters")
    if not isinstance(parameters.get("unload_dependents", False), bool):
        raise InvalidInput("unload_dependents must be true or false (rnnserve's models have "
                           "no dependents: it changes nothing)")
    await control.unload(model)
    return FastJSONResponse({})
