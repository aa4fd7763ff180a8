"""The client's exception tree: every error the server answers becomes one of these types, with
the server's own message (which says what is wrong and how to fix it) as its text.

    RnnServeClientError            anything this client raises
      BadInput                     400, 413, 415, 422: the request itself is wrong; never retried
      Unauthorized                 401 (403): a missing or wrong API key
      NotFound                     404 on a model: no such model or version
        SessionGone                404 on a session: unknown, expired, deleted, or another
                                   key's (the server answers these alike, by design)
      SessionRetired               410: the session's model version was retired
      Conflict                     409: the request conflicts with the server's state
        SessionReplaced            another stream attached to the session (final: never
                                   reconnect, the other connection holds it now)
      Overloaded                   429, 503, and 408 (the server had not read the whole body
                                   within its time limit: it was too busy, or the link too
                                   slow): retried for you with backoff; raised only when the
                                   retries ran out (`retry_after_s` as the server said)
      ServerError                  500, 504 and other 5xx
      ConnectionFailed             the server could not be reached, after the retries
      StreamBroken                 a stream can no longer give every output exactly once and
                                   in order (say, a step was refused while later ones landed)
"""

from __future__ import annotations

from typing import Any


class RnnServeClientError(Exception):
    """An error of a call; `status` is the HTTP status (0 when there was none)."""

    def __init__(self, message: str, status: int = 0, retry_after_s: float | None = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.retry_after_s = retry_after_s


class BadInput(RnnServeClientError):
    """The request is wrong (its shape, a field, its size); sending it again will not help."""


class Unauthorized(RnnServeClientError):
    """The API key is missing or not accepted."""


class NotFound(RnnServeClientError):
    """No such model (or version)."""


class SessionGone(NotFound):
    """The session does not exist for this key: unknown, expired, deleted, or another key's.
    Its state is lost; create a new session."""


class SessionRetired(RnnServeClientError):
    """The session's model version was retired; migrate it or create a new session."""


class Conflict(RnnServeClientError):
    """The request conflicts with the session's or the server's state."""


class SessionReplaced(Conflict):
    """Another connection attached to the session; this stream has let go of it for good."""


class Overloaded(RnnServeClientError):
    """The server is busy or not ready (429, 503) and stayed so through every retry."""


class ServerError(RnnServeClientError):
    """The server failed (5xx other than 503)."""


class ConnectionFailed(RnnServeClientError):
    """The server could not be reached (refused, reset, timed out), after every retry."""


class StreamBroken(RnnServeClientError):
    """A stream cannot go on giving each output exactly once and in order."""


RETRYABLE = (408, 429, 502, 503, 504)
"""Statuses that say "not done, or done and safe to ask again with the same step id"."""


def error_for(status: int, body: Any, *, session: bool = False,
              retry_after_s: float | None = None) -> RnnServeClientError:
    """The typed error of a server answer: its status, its body's "error" message (or the
    body itself) and whether the call was about a session (a 404 then says the session is
    gone, else the model is not there)."""
    message = body.get("error") if isinstance(body, dict) else None
    if not isinstance(message, str):
        message = str(body)[:500] if body else f"HTTP {status}"
    if retry_after_s is None and isinstance(body, dict):
        given = body.get("retry_after_s")
        retry_after_s = float(given) if isinstance(given, int | float) else None
    kind: type[RnnServeClientError]
    if status in (400, 413, 415, 422):
        kind = BadInput
    elif status in (401, 403):
        kind = Unauthorized
    elif status == 404:
        kind = SessionGone if session else NotFound
    elif status == 410:
        kind = SessionRetired
    elif status == 409:
        kind = SessionReplaced if "newer connection" in message else Conflict
    elif status in (408, 429, 503):
        kind = Overloaded
    elif status >= 500:
        kind = ServerError
    else:
        kind = RnnServeClientError
    return kind(message, status, retry_after_s)
