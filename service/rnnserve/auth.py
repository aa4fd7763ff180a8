"""API keys, shared by every transport: which keys are valid and who each key is.

A key's identity (its owner id) is what sessions record, so a session belongs to the key that
created it whichever transport it is used over. The id is a hash: logs and the state store
never hold the key itself.

`ApiKeys` is the one key ring of a server (the engine holds it; HTTP and gRPC ask it). Its
keys can be replaced while serving (keyfile.py re-reads --api-keys-file); whether keys are
required at all is fixed when it is made, so a keys file that becomes empty never opens the
server: every request then needs a key, and none is valid."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from rnnserve.errors import InvalidInput


def owner_of_key(key: str) -> str:
    """A stable, non-secret identity for a key."""
    return "key-" + hashlib.sha256(key.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class KeyChange:
    """What one `replace` changed: counts for the log line, removed owners for whoever must
    end their open streams. Never the keys."""

    added: int
    removed: int
    total: int
    removed_owners: frozenset[str]


OnRemoved = Callable[[frozenset[str]], None]


class ApiKeys:
    """The accepted keys. `required` (default: whether any key is given) says whether callers
    need a key at all; when it is false every caller is owner ""."""

    def __init__(self, keys: Iterable[str] = (), *, required: bool | None = None) -> None:
        self._by_owner = {owner_of_key(k): k.encode() for k in keys}
        self.enabled = bool(self._by_owner) if required is None else required
        self._on_removed: list[OnRemoved] = []

    def __len__(self) -> int:
        return len(self._by_owner)

    def owner(self, given: str) -> str | None:
        """The owner id of a presented key: "" when keys are off, None when it is wrong."""
        if not self.enabled:
            return ""
        if not given:
            return None
        owner = owner_of_key(given)
        expected = self._by_owner.get(owner)
        if expected is None or not hmac.compare_digest(expected, given.encode()):
            return None
        return owner

    def holds(self, owner: str) -> bool:
        """Whether an owner id found valid earlier still is (a long-lived stream asks)."""
        return not self.enabled or owner in self._by_owner

    def replace(self, keys: Iterable[str]) -> KeyChange:
        """Make `keys` the accepted set at once (one assignment: a request sees the old set
        or the new one, never a mix) and tell the listeners which owners lost their key."""
        new = {owner_of_key(k): k.encode() for k in keys}
        old, self._by_owner = self._by_owner, new
        removed = frozenset(old.keys() - new.keys())
        if removed:
            for listener in list(self._on_removed):
                listener(removed)
        return KeyChange(len(new.keys() - old.keys()), len(removed), len(new), removed)

    def on_removed(self, listener: OnRemoved) -> Callable[[], None]:
        """Call `listener(owners)` whenever keys are removed; returns the way to stop."""
        self._on_removed.append(listener)
        return lambda: self._on_removed.remove(listener)

    @staticmethod
    def bearer(header: str) -> str:
        """The token of an `Authorization: Bearer <token>` value ("" otherwise)."""
        scheme, _, token = header.partition(" ")
        return token.strip() if scheme.lower() == "bearer" else ""

    @staticmethod
    def presented(authorizations: list[str], what: str) -> str:
        """The key a call presents in its authorization values ("" for none); several are
        refused (InvalidInput) over every transport: which one is meant is not guessed.
        `what` names the values in the refusal (HTTP headers, gRPC metadata entries)."""
        if len(authorizations) > 1:
            raise InvalidInput(f"the call has {len(authorizations)} {what}: send one (which "
                               "key is meant is not for the server to guess)")
        return ApiKeys.bearer(authorizations[0]) if authorizations else ""
