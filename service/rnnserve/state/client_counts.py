"""The memory store's count of live sessions per client address, for the per-address cap that
holds while API keys are off. Only sessions counted against an address are in it, and an
address is dropped once it holds none, so its memory follows the live sessions, not every
address ever seen. The store calls `check` before a create changes anything, `add` once the
session is stored and `remove` for every way a session ends (deleted, expired, evicted,
replaced), so the count is exact between sweeps."""

from __future__ import annotations

from rnnserve.state.base import SessionRecord, client_quota_exceeded


class ClientCounts:
    """Live sessions per client address; `cap` is --max-sessions-per-client (0: no cap)."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._client_of: dict[str, str] = {}  # session id -> its address (counted ones only)
        self._live: dict[str, int] = {}

    def check(self, record: SessionRecord, replace: bool) -> None:
        """Refuse a session over its address's cap (a sequence restarted by the address that
        holds it replaces its session, so it is not one more). An expired session frees its
        place when the store's sweep ends it; a refusal does not sweep, or every refused
        request would cost a sweep."""
        client = record.client
        if not (self.cap and client):
            return
        held = self._live.get(client, 0)
        if replace and self._client_of.get(record.id) == client:
            held -= 1
        if held >= self.cap:
            raise client_quota_exceeded(client, self.cap)

    def add(self, record: SessionRecord) -> None:
        if record.client:
            self._client_of[record.id] = record.client
            self._live[record.client] = self._live.get(record.client, 0) + 1

    def remove(self, session_id: str) -> None:
        client = self._client_of.pop(session_id, None)
        if client is None:
            return
        left = self._live[client] - 1
        if left:
            self._live[client] = left
        else:
            del self._live[client]

    def client_of(self, session_id: str) -> str:
        return self._client_of.get(session_id, "")

    def count(self, client: str) -> int:
        return self._live.get(client, 0)
