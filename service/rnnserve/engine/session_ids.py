"""Session ids: what the server makes (unguessable, so an id is as good as a capability), and
the bound on what it will look up."""

from __future__ import annotations

import base64
import secrets

import numpy as np

from rnnserve.errors import UnknownSession

MAX_SESSION_ID_CHARS = 1024
"""Longer than any id the server makes (22 characters; a v2 sequence's id holds the key's
hash, the model name and a sequence id of up to 256 characters): a longer one is unknown, and
its error does not echo it back."""


def too_long(session_id: str) -> UnknownSession:
    return UnknownSession(f"unknown session: its id has {len(session_id)} characters, and no "
                          f"session id has more than {MAX_SESSION_ID_CHARS}")


def new_session_id() -> str:
    """128 random bits, URL-safe: unguessable, so an id is as good as a capability."""
    return secrets.token_urlsafe(16)


def new_session_ids(count: int) -> list[str]:
    """`count` ids like new_session_id's, from one read of the random source and one base64
    pass: each id's 16 bytes padded with two zero bytes encode to 24 characters whose first
    22 are exactly token_urlsafe(16)'s (the last two are "AA")."""
    raw = np.zeros((count, 18), np.uint8)
    raw[:, :16] = np.frombuffer(secrets.token_bytes(16 * count), np.uint8).reshape(count, 16)
    text = base64.urlsafe_b64encode(raw.tobytes()).decode("ascii")
    return [text[at:at + 22] for at in range(0, 24 * count, 24)]
