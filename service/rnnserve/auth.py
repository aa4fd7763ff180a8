"""API keys, shared by every transport: which keys are valid and who each key is.

A key's identity (its owner id) is what sessions record, so a session belongs to the key that
created it whichever transport it is used over. The id is a hash: logs and the state store
never hold the key itself."""

from __future__ import annotations

import hashlib
import hmac


def owner_of_key(key: str) -> str:
    """A stable, non-secret identity for a key."""
    return "key-" + hashlib.sha256(key.encode()).hexdigest()[:16]


class ApiKeys:
    """The accepted keys; empty means authentication is off (every caller is owner "")."""

    def __init__(self, keys: frozenset[str]) -> None:
        self._by_owner = {owner_of_key(k): k.encode() for k in keys}

    @property
    def enabled(self) -> bool:
        return bool(self._by_owner)

    def owner(self, given: str) -> str | None:
        """The owner id of a presented key: "" when keys are off, None when it is wrong."""
        if not self._by_owner:
            return ""
        if not given:
            return None
        owner = owner_of_key(given)
        expected = self._by_owner.get(owner)
        if expected is None or not hmac.compare_digest(expected, given.encode()):
            return None
        return owner

    @staticmethod
    def bearer(header: str) -> str:
        """The token of an `Authorization: Bearer <token>` value ("" otherwise)."""
        scheme, _, token = header.partition(" ")
        return token.strip() if scheme.lower() == "bearer" else ""
