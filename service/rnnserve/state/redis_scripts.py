"""The Lua scripts of the Redis store, read once at import from redis_*.lua in this package.

Every write is one script, so it is atomic and one round trip. They live in .lua files rather
than Python strings so they read (and lint) as Lua; each file's head says which KEYS and ARGV
it takes and what it returns. redis_now.lua, Redis's clock as `now_ms` and `now`, is the shared
head of every script but delete, prepended here; redis_client_prune.lua (`prune_client`)
follows it in the scripts that count a client address's sessions, and redis_records.lua
(`too_new`, `put_state`: the record formats) in the scripts that read or write a record, and
redis_history.lua (the replay window) in those that read or write it, and redis_vlive.lua
(`prune_version`: a version's live ids) in those that count or prune them."""

from __future__ import annotations

from importlib.resources import files

_HERE = files("rnnserve.state")


def _read(name: str) -> str:
    return (_HERE / f"redis_{name}.lua").read_text(encoding="utf-8")


_NOW = _read("now")
_CLIENTS = _read("client_prune")  # prune_client: for the scripts that count an address's ids
_RECORDS = _read("records")  # too_new, put_state: for the scripts that touch a record
_HISTORY = _read("history")  # history_find, history_push, history_head: the replay window
_VERSIONS = _read("vlive")  # prune_version: a model version's live ids (its max_sessions)

CREATE = _NOW + _CLIENTS + _RECORDS + _VERSIONS + _read("create")
SCATTER = _NOW + _RECORDS + _HISTORY + _read("scatter")
RESET = _NOW + _RECORDS + _read("reset")
MOVE = _NOW + _RECORDS + _VERSIONS + _read("move")
DELETE = _RECORDS + _read("delete")
SWEEP = _NOW + _VERSIONS + _read("sweep")
OWNED = _NOW + _read("owned")
ATTACH = _RECORDS + _HISTORY + _read("attach")
CLIENT_COUNT = _NOW + _CLIENTS + _read("client_count")
CLIENT_SWEEP = _NOW + _CLIENTS + _read("client_sweep")
CREATE_MANY = _NOW + _CLIENTS + _RECORDS + _VERSIONS + _read("create_many")
VERSION_COUNT = _NOW + _read("version_count")
VERSION_IDS = _NOW + _read("version_ids")
