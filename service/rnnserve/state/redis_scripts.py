"""The Lua scripts of the Redis store, read once at import from redis_*.lua in this package.

Every write is one script, so it is atomic and one round trip. They live in .lua files rather
than Python strings so they read (and lint) as Lua; each file's head says which KEYS and ARGV
it takes and what it returns. redis_now.lua, Redis's clock as `now_ms` and `now`, is the shared
head of every script but delete, prepended here."""

from __future__ import annotations

from importlib.resources import files

_HERE = files("rnnserve.state")


def _read(name: str) -> str:
    return (_HERE / f"redis_{name}.lua").read_text(encoding="utf-8")


_NOW = _read("now")

CREATE = _NOW + _read("create")
SCATTER = _NOW + _read("scatter")
RESET = _NOW + _read("reset")
DELETE = _read("delete")
SWEEP = _NOW + _read("sweep")
OWNED = _NOW + _read("owned")
ATTACH = _read("attach")
