"""rnnserve_client: a Python client for rnnserve's native API (numpy in and out).

    from rnnserve_client import Client
    with Client("http://127.0.0.1:8000") as client:
        with client.stream("temperature-lstm") as stream:
            for outputs in stream.feed(readings):   # each reading's outputs, once, in order
                ...

Every step carries a step id the client makes, so retries (a dropped connection, 429 or 503
honouring Retry-After, a dead replica, a restarted server) never apply a step twice; a stream
reconnects, resumes its session and re-sends only the steps it has no reply for. Errors are
types (errors.py). It needs only numpy, httpx and websockets; docs/client.md says more."""

from rnnserve_client.aio import AsyncClient, AsyncSession
from rnnserve_client.errors import (
    BadInput,
    Conflict,
    ConnectionFailed,
    NotFound,
    Overloaded,
    RnnServeClientError,
    ServerError,
    SessionGone,
    SessionReplaced,
    SessionRetired,
    StreamBroken,
    Unauthorized,
)
from rnnserve_client.retry import NO_RETRY, RetryPolicy
from rnnserve_client.stream import AsyncStream
from rnnserve_client.sync import Client, Session, Stream
from rnnserve_client.wire import ModelInfo

__version__ = "0.1.0"

__all__ = [
    "NO_RETRY",
    "AsyncClient",
    "AsyncSession",
    "AsyncStream",
    "BadInput",
    "Client",
    "Conflict",
    "ConnectionFailed",
    "ModelInfo",
    "NotFound",
    "Overloaded",
    "RetryPolicy",
    "RnnServeClientError",
    "ServerError",
    "Session",
    "SessionGone",
    "SessionReplaced",
    "SessionRetired",
    "Stream",
    "StreamBroken",
    "Unauthorized",
]
