"""Domain errors. Each knows its HTTP status and gRPC status code, so every protocol adapter
maps them the same way, once. Foreign errors (ONNX Runtime, JSON decoding) are wrapped where
they enter.

    RnnServeError                      500  INTERNAL
    ├── InvalidInput                   400  INVALID_ARGUMENT   bad shape, NaN, wrong type, ...
    │   ├── SequenceNotActive                                  v2 sequence step without a start
    │   ├── NotStreamable                                      a session on a model that cannot step
    │   └── ModelLoadFailed                                    a repository load that did not load
    ├── UnsupportedMediaType           415  INVALID_ARGUMENT   body is not JSON
    ├── PayloadTooLarge                413  RESOURCE_EXHAUSTED over a size limit
    ├── Unauthenticated                401  UNAUTHENTICATED    missing or wrong API key
    ├── NotFound                       404  NOT_FOUND
    │   ├── ModelNotFound                                      unknown model or version
    │   └── SessionNotFound                                    expired, evicted or deleted session
    │       ├── UnknownSession                                 no such session (for this key)
    │       └── SessionOnOtherVersion                          pinned to another model version
    ├── QuotaExceeded                  429  RESOURCE_EXHAUSTED a key's request rate
    │   └── SessionQuotaExceeded                               a key's live sessions
    ├── StreamReplaced                 409  ABORTED            a newer connection holds the session
    ├── ModelControlDisabled           409  FAILED_PRECONDITION load/unload outside explicit mode
    ├── MigrationRefused               409  FAILED_PRECONDITION no kept inputs, other inputs
    ├── VersionRetired                 410  FAILED_PRECONDITION the session's version was retired
    ├── Unavailable                    503  UNAVAILABLE        model not ready, server full
    │   ├── StepConflict                                       another replica stepped the session
    │   ├── SessionChanged                                     stepped while being migrated
    │   ├── SessionMoved                                       migrated while this step ran
    │   ├── StepMayBeApplied                                   the store failed writing a step
    │   ├── WriteMayBeApplied                                  a session write past the limit
    │   ├── StoreUnreachable                                   no connection to the state store
    │   ├── StoreFull                                          Redis at maxmemory refused a write
    │   ├── VersionNotServedYet                                a newer version, not loaded here yet
    │   └── SessionFormatTooNew                                stored by a newer release's format
    ├── RequestTimedOut                504  DEADLINE_EXCEEDED  stopped at its limit, unchanged
    │   └── StepTimedOut                                       a step withdrawn, not applied
    └── InferenceFailed                500  INTERNAL           ONNX Runtime raised on valid input

Messages name the problem in the engine's terms. What the client should do about it depends on
its API (REST creates sessions with POST /v1/..., a KServe v2 client sets sequence_start), so an
error that has a remedy names it by `remedy`, and each transport's error writer appends its own
advice for it (http/errors.py, grpc/errors.py).

A 503 or 504 on a session step tells the truth about the step: before the state write it says
the step was not applied (NOT_APPLIED: retrying is safe); where the store failed while writing
and the server cannot know whether the write landed, StepMayBeApplied says so (retry with the
same step_id, which is never applied twice). A step that was applied is never answered 504."""

from __future__ import annotations


class RnnServeError(Exception):
    """Base of every error a client may see; the message says what is wrong and how to fix it."""

    http_status: int = 500
    grpc_code: str = "INTERNAL"  # a grpc.StatusCode name; grpc is imported only by its adapter
    remedy: str | None = None  # what the client should do, as a key into a transport's advice

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after_s = retry_after_s


class InvalidInput(RnnServeError):
    http_status = 400
    grpc_code = "INVALID_ARGUMENT"


class SequenceNotActive(InvalidInput):
    """A KServe v2 sequence step for a sequence that was never started, has ended or expired."""

    remedy = "start-sequence"


class NotStreamable(InvalidInput):
    """A session or KServe v2 sequence asked of a model that cannot be stepped: its output at
    time t depends on later inputs (a bidirectional or reverse recurrence), or its state
    outputs do not continue the sequence (runner.py checks at load). 400, not 409: nothing
    the client or the server can change makes it work; the request itself does not fit the
    model. Predict (whole sequences) serves the model; the message says so."""


class ModelLoadFailed(InvalidInput):
    """A repository API load (explicit model control) of a model that is not in the
    repository, or of a version whose files cannot be served: 400, as Triton answers. A
    version that served before the failed load serves on; the message says so."""


class UnsupportedMediaType(RnnServeError):
    http_status = 415
    grpc_code = "INVALID_ARGUMENT"


class PayloadTooLarge(RnnServeError):
    http_status = 413
    grpc_code = "RESOURCE_EXHAUSTED"


class Unauthenticated(RnnServeError):
    http_status = 401
    grpc_code = "UNAUTHENTICATED"


class NotFound(RnnServeError):
    http_status = 404
    grpc_code = "NOT_FOUND"


class ModelNotFound(NotFound):
    pass


class SessionNotFound(NotFound):
    pass


class UnknownSession(SessionNotFound):
    """No session of that id (or none that the caller's key owns)."""

    remedy = "create-session"


class SessionOnOtherVersion(SessionNotFound):
    """The session exists but runs on another model (version) than the batch being run."""


class QuotaExceeded(RnnServeError):
    http_status = 429
    grpc_code = "RESOURCE_EXHAUSTED"


class SessionQuotaExceeded(QuotaExceeded):
    """The caller's key holds its maximum of live sessions."""

    remedy = "free-session"


class StreamReplaced(RnnServeError):
    """A step of a WebSocket stream whose session a newer connection has attached since (the
    latest attach wins): the step was not applied, and the old connection is being closed."""

    http_status = 409
    grpc_code = "ABORTED"


class ModelControlDisabled(RnnServeError):
    """A repository API load or unload while --model-control is none or poll, with Triton's
    own message ("explicit model load / unload is not allowed if polling is enabled"). Triton
    answers it 503 / UNAVAILABLE; rnnserve answers 409 / FAILED_PRECONDITION: the server's
    mode, not a passing state, refuses it, so a retry never helps, and a 503 would tell
    clients and load balancers to retry."""

    http_status = 409
    grpc_code = "FAILED_PRECONDITION"


class MigrationRefused(RnnServeError):
    """A session migration that cannot give an exact answer: the session's version keeps no
    inputs (model.json `rewarm_steps` 0), the target version takes other inputs (width or
    feature names), or the kept inputs are incomplete. 409: the server's configuration or the
    models, not a passing state, refuse it; the message says what to change."""

    http_status = 409
    grpc_code = "FAILED_PRECONDITION"


class VersionRetired(RnnServeError):
    """A step (or a new session) on a model version that was retired: unloaded or removed from
    the repository, its live sessions stepped on for at most --retire-grace-s, and that time
    is over (or the session asks a version that takes no new sessions any more). Final: 410,
    gRPC FAILED_PRECONDITION, WebSocket close 4410; no retry helps, the client starts a new
    session (on the model's current version) or migrates it before the grace ends."""

    http_status = 410
    grpc_code = "FAILED_PRECONDITION"
    remedy = "version-retired"


class Unavailable(RnnServeError):
    http_status = 503
    grpc_code = "UNAVAILABLE"


class StepConflict(Unavailable):
    """Another writer (replica) changed the session between this step's read and write; the
    step was not applied and may simply run again."""


class SessionChanged(Unavailable):
    """A migration's write found the session stepped (reset, or moved) since its inputs were
    read: nothing was written; the migration reads again (engine/migration.py)."""


class SessionMoved(Unavailable):
    """The session was migrated to another version of its model while this step ran (or this
    stream was bound to its old version): the step was not applied. Run it again: a REST step
    as it is, a stream after reconnecting with ?session_id= (its close code 1012 says so)."""


class StepMayBeApplied(Unavailable):
    """The state store failed while writing a step (a Redis error during or after sending the
    write): the server cannot tell whether the write landed. A retry with the same step_id is
    safe (a step id among the session's recent ones, its replay window, is replayed, never
    applied twice); a retry without one
    may apply the step twice."""

    remedy = "retry-step-id"


class StepNotReplicated(StepMayBeApplied):
    """The step was applied on the Redis master, but fewer replicas than --redis-wait-replicas
    acknowledged it within --redis-wait-timeout-s (Redis WAIT): a failover now could lose it.
    A retry with the same step_id replays the recorded outputs and waits for the replicas
    again; it never applies the step twice."""


class WriteMayBeApplied(Unavailable):
    """A session write (create, reset, delete, a migration's move) that the state store had
    not finished shortly after its call's time limit (engine/deadlines.py, `writing`): the call
    is answered then rather than held to the store's own time-outs, and cannot know whether
    the write landed. Not counted as an outage: a loaded server can get there too."""


class SessionFormatTooNew(Unavailable):
    """The session's Redis record is in a format newer than this replica reads: a replica of a
    newer release wrote it (a rolling upgrade whose record format was switched on before every
    replica ran that release). Nothing was read or written; another replica may serve it."""


class VersionNotServedYet(Unavailable):
    """A session of a model version newer than any this replica serves: during a rolling
    change another replica loaded it first. 503 with Retry-After (gRPC UNAVAILABLE, WebSocket
    1013), not 404: the session exists and this replica will serve it once it loads the
    version (or another replica answers the retry). Nothing was run or applied."""


class StoreUnreachable(Unavailable):
    """The state store's backend cannot be reached (refused, timed out, dropped the connection,
    still loading): an outage, as opposed to a store that answered no (full, a taken id).
    The engine counts these towards readiness (`--store-unready-after-s`); each request that
    meets one is answered 503 with Retry-After."""


class StoreFull(Unavailable):
    """Redis reached its `maxmemory` and, with `maxmemory-policy noeviction`, refuses writes
    instead of evicting sessions. Redis refuses a script before its first write, so nothing
    was written: a refused step was not applied. Not an outage (readiness stays true: reads,
    deletes and expiry still work, and they are what frees memory)."""


class RequestTimedOut(RnnServeError):
    """The call ran past its time limit (--request-timeout-s, or a gRPC deadline) and was
    stopped before it changed anything."""

    http_status = 504
    grpc_code = "DEADLINE_EXCEEDED"


class StepTimedOut(RequestTimedOut):
    """A session step still waiting (behind its session's earlier steps, or in the queue) at
    its call's deadline, withdrawn before its state write: it was not applied, so a retry is
    safe. A step past that point is never withdrawn: its call gets the real result, late."""


class InferenceFailed(RnnServeError):
    http_status = 500
    grpc_code = "INTERNAL"


NOT_APPLIED = "the step was not applied, so retrying it is safe"
"""The end of every 503/504 message about a step that was stopped before its state write."""


def not_applied(exc: Unavailable) -> Unavailable:
    """`exc` (a 503 met on a step's way to its state write: a store read, a full queue or
    store, a shutdown, a v2 sequence start's session write) saying that the step was not
    applied, unless it says already whether the step was (the queue's, the entrance's,
    StepMayBeApplied). A WriteMayBeApplied's "applied" is its write's, not the step's."""
    if "applied" in exc.message and not isinstance(exc, WriteMayBeApplied):
        return exc
    return type(exc)(f"{exc.message}; {NOT_APPLIED}", retry_after_s=exc.retry_after_s)
