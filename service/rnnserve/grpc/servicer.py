"""`inference.GRPCInferenceService` over the engine's KServe v2 data plane: each RPC converts,
awaits the data plane and converts back. Stateful requests (the sequence parameters) step the
same sessions as HTTP v2, so a sequence started over gRPC can be continued over HTTP and the
other way round.

ModelInfer runs under a time limit, the least of --request-timeout-s and the client's deadline
(engine.TimeLimit, as HTTP): a call that changed nothing is stopped there with
DEADLINE_EXCEEDED; a sequence step is withdrawn if it has not reached its state write (then
DEADLINE_EXCEEDED says it was not applied), else answered with its real result. A client whose
own deadline passes first sees DEADLINE_EXCEEDED whatever happened: it retries with the same
step_id parameter, which is never applied twice."""

from __future__ import annotations

from collections.abc import AsyncIterable, Awaitable, Callable
from typing import Any
from urllib.parse import unquote

from rnnserve.auth import ApiKeys
from rnnserve.engine import Engine, TimeLimit, V2DataPlane
from rnnserve.errors import NotFound, RequestTimedOut, RnnServeError, Unauthenticated
from rnnserve.grpc import converters, model_admin, repository
from rnnserve.grpc.errors import aborts_on_error, status_of
from rnnserve.grpc.generated import inference_pb2 as pb
from rnnserve.grpc.stream_call import StreamCall
from rnnserve.grpc.undecodable import Undecodable, invalid_argument
from rnnserve.grpc.wire import ReplyWriter
from rnnserve.metrics import OTHER

Method = Callable[..., Awaitable[Any]]


def keyless(method: Method) -> Method:
    """Marks an RPC any caller may call, keys or not (as HTTP's liveness and readiness): it
    calls no `_owner`, and a message of it that does not parse is refused without a key check
    (`refusing_for`). Every other RPC checks the key first."""
    method.keyless = True  # type: ignore[attr-defined]
    return method


class InferenceServicer:
    """Registered with `add_GRPCInferenceServiceServicer_to_server`; gRPC calls the methods by
    their RPC names. `context` is a grpc.aio.ServicerContext."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._v2 = V2DataPlane(engine)
        self._keys = engine.keys  # the one key ring: a removed key is refused here at once
        self._proxies = engine.proxies
        self._replies = ReplyWriter()  # ModelStreamInfer's replies, encoded to bytes
        models = engine.models

        def model_label(name: str) -> str:  # bounded metric labels: served names, else OTHER
            return name if name in models.versions else OTHER

        self._model_label = model_label

    def _owner(self, context: Any) -> str:
        """The caller's owner id from `authorization: Bearer <key>` metadata (as HTTP: every
        RPC but the `keyless` ones needs a key when keys are configured)."""
        given = ApiKeys.presented([value for key, value in context.invocation_metadata() or ()
                                   if key == "authorization"],
                                  "authorization metadata entries")
        owner = self._keys.owner(given)
        if owner is None:
            raise Unauthenticated("missing or invalid API key: send metadata "
                                  "'authorization: Bearer <key>'")
        return owner

    def _client(self, context: Any) -> str:
        """The caller's address as the per-client session cap counts it: the peer, or, from a
        trusted proxy (--forwarded-allow-ips), its `x-forwarded-for`; "" for the proxy's own
        calls (as over HTTP)."""
        hops = [value for key, value in context.invocation_metadata() or ()
                if key == "x-forwarded-for"]
        forwarded = ", ".join(hops) or None
        peer = peer_host(context.peer() or "")
        client = self._proxies.client(peer, forwarded)
        return self._proxies.counted(client, forwarded is not None)

    def refusing_for(self, method: str) -> Callable[[Undecodable, Any], Awaitable[None]]:
        """How `method` refuses a message that does not parse: INVALID_ARGUMENT, but the key
        is checked first, as for any request of that method (ServerLive and ServerReady need
        none: `keyless`), so a caller without a key learns nothing about what it sent."""
        needs_key = not getattr(getattr(self, method, None), "keyless", False)

        async def refuse(request: Undecodable, context: Any) -> None:
            try:
                if needs_key:
                    self._owner(context)
            except RnnServeError as exc:  # no key, a wrong one, or several
                await context.abort(*status_of(exc))
            await invalid_argument(request, context)

        return refuse

    @keyless
    @aborts_on_error
    async def ServerLive(self, request: pb.ServerLiveRequest, context: Any
                         ) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    @keyless
    @aborts_on_error
    async def ServerReady(self, request: pb.ServerReadyRequest, context: Any
                          ) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self._engine.ready)

    @aborts_on_error
    async def ModelReady(self, request: pb.ModelReadyRequest, context: Any
                         ) -> pb.ModelReadyResponse:
        """An unknown model or version is not ready (HTTP answers 404, which tritonclient.http
        reports as not ready); tritonclient.grpc expects ready=false, not an error."""
        self._owner(context)
        try:
            self._v2.model_ready(request.name, request.version or None)
        except NotFound:
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=True)

    @aborts_on_error
    async def ServerMetadata(self, request: pb.ServerMetadataRequest, context: Any
                             ) -> pb.ServerMetadataResponse:
        self._owner(context)
        return converters.server_metadata(self._v2.server_metadata())

    @aborts_on_error
    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: Any
                            ) -> pb.ModelMetadataResponse:
        self._owner(context)
        meta = self._v2.model_metadata(request.name, request.version or None)
        return converters.model_metadata(meta)

    @aborts_on_error
    async def ModelInfer(self, request: pb.ModelInferRequest, context: Any
                         ) -> pb.ModelInferResponse:
        owner, client = self._owner(context), self._client(context)
        limit = self._engine.settings.request_timeout_s
        remaining = context.time_remaining()  # None: the client set no deadline
        if remaining is not None:
            limit = max(0.0, min(limit, remaining))
        try:
            async with TimeLimit(limit):
                return await self._infer(request, owner, client)
        except TimeoutError:
            raise RequestTimedOut(f"the call took longer than {limit:g} s (the least of "
                                  "--request-timeout-s and the client's deadline) and was "
                                  "stopped before it changed anything: retrying it is safe"
                                  ) from None

    async def ModelStreamInfer(self, requests: AsyncIterable[pb.ModelInferRequest],
                               context: Any) -> None:
        """One response per request, as each completes; the steps of one sequence in
        arrival order (grpc/stream_call.py). A failed request gets an in-band error and the
        stream goes on. A missing or wrong key ends the stream with UNAUTHENTICATED before
        anything runs; a key removed while the stream is open ends it (UNAUTHENTICATED) at
        its next response, and no message starts running after the removal. Replies are
        written as bytes (server.py registers this method without a response serializer)."""
        try:
            owner = self._owner(context)
        except Unauthenticated as exc:
            await context.abort(*status_of(exc))
        call = StreamCall(self._engine, self._v2, self._keys, self._replies, owner,
                          self._client(context), self._model_label)
        await call.run(requests, context)

    @aborts_on_error
    async def ModelConfig(self, request: pb.ModelConfigRequest, context: Any
                          ) -> pb.ModelConfigResponse:
        self._owner(context)
        return model_admin.config_response(self._engine, request)

    @aborts_on_error
    async def ModelStatistics(self, request: pb.ModelStatisticsRequest, context: Any
                              ) -> pb.ModelStatisticsResponse:
        self._owner(context)
        return model_admin.statistics_response(self._engine, request)

    @aborts_on_error
    async def RepositoryIndex(self, request: pb.RepositoryIndexRequest, context: Any
                              ) -> pb.RepositoryIndexResponse:
        self._owner(context)
        return await repository.index(self._engine, request)

    @aborts_on_error
    async def RepositoryModelLoad(self, request: pb.RepositoryModelLoadRequest, context: Any
                                  ) -> pb.RepositoryModelLoadResponse:
        self._owner(context)
        return await repository.load(self._engine, request)

    @aborts_on_error
    async def RepositoryModelUnload(self, request: pb.RepositoryModelUnloadRequest, context: Any
                                    ) -> pb.RepositoryModelUnloadResponse:
        self._owner(context)
        return await repository.unload(self._engine, request)

    async def _infer(self, request: pb.ModelInferRequest, owner: str, client: str
                     ) -> pb.ModelInferResponse:
        call = converters.decode_infer_request(request)
        answer = await self._v2.infer(call.request, owner, client)
        return converters.encode_infer_response(answer.model, answer.version, call,
                                                answer.outputs, tuple(answer.outputs))


def peer_host(peer: str) -> str:
    """The address in a gRPC peer string: "ipv4:127.0.0.1:5555" -> 127.0.0.1,
    "ipv6:[::1]:5555" -> ::1; "" for any other kind (a unix socket: not counted)."""
    kind, _, rest = unquote(peer).partition(":")
    if kind == "ipv4":
        return rest.rpartition(":")[0]
    if kind == "ipv6":
        return rest.rpartition(":")[0].strip("[]")
    return ""
