"""Keys that rotate without a restart: the server's key ring follows --api-keys-file.

The file is re-read when it changes (its stat, checked every --api-keys-poll-s: mtime, size,
inode, device, so an edit in place and a new file renamed over it are both seen) and on SIGHUP
(serve.py). The rules an operator can rely on:

* Keys given with --api-keys stay; the file's keys are added to them.
* A key removed from the file stops working on the next request, over every transport; the
  sessions it created stay its own (nobody else can use them) and come back with the key.
* Keys configured at start keep authentication on for good: a file that becomes empty leaves
  no valid key (every request needing one gets 401); it never opens the server.
* A file that vanishes or cannot be read keeps the keys it last had; the error is logged once,
  not every poll, and its recovery once.
* The log says how many keys were added and removed, never which.

A file changed twice within its timestamps' granularity keeps the same stat; so while its mtime
is under two seconds old it is read on every poll (cheap: a keys file is small)."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path

from rnnserve.auth import ApiKeys

log = logging.getLogger("rnnserve.keys")

RACY_NS = 2_000_000_000
"""A file whose mtime is this recent may change again without its stat changing."""


def parse_keys(text: str) -> frozenset[str]:
    """One key per line; `#` starts a comment; blank lines are skipped."""
    keys = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return frozenset(k for k in keys if k)


def flag_keys(value: str) -> frozenset[str]:
    """The comma-separated keys of --api-keys."""
    return frozenset(k.strip() for k in value.split(",") if k.strip())


class KeyFile:
    """Keeps `ring` equal to `fixed` plus the keys in `path`."""

    def __init__(self, ring: ApiKeys, path: Path, fixed: frozenset[str], poll_s: float) -> None:
        self.ring = ring
        self.path = path
        self.fixed = fixed
        self.poll_s = poll_s
        self._keys: frozenset[str] | None = None  # the file's keys as last read
        self._stat: tuple[int, int, int, int] | None = None
        self._failing = ""  # the error last logged, until the file reads again

    def load(self) -> None:
        """The first read, at start: an unreadable file is the caller's error (OSError)."""
        self._keys = self._read()
        self.ring.replace(self.fixed | self._keys)
        if not len(self.ring):
            log.warning("the API keys file %s holds no key: every request that needs one "
                        "gets 401 until keys are added", self.path)

    def reload(self, reason: str) -> None:
        """Read the file now and apply what changed (poll: it changed; SIGHUP: asked to)."""
        try:
            keys = self._read()
        except (OSError, UnicodeDecodeError) as exc:
            self._fail(exc)
            return
        if self._failing:
            log.info("API keys file %s is readable again", self.path)
            self._failing = ""
        if keys == self._keys:
            if reason == "SIGHUP":
                log.info("API keys file %s re-read on SIGHUP: no change (%d keys)", self.path,
                         len(self.ring))
            return
        self._keys = keys
        change = self.ring.replace(self.fixed | keys)
        log.info("API keys reloaded from %s (%s): %d added, %d removed, %d in total",
                 self.path, reason, change.added, change.removed, change.total)
        if change.total == 0:
            log.warning("no API keys are left: every request that needs a key gets 401 until "
                        "keys are added to %s", self.path)

    def poll(self) -> None:
        """Re-read the file if its stat changed (or it is too recent to trust the stat)."""
        try:
            st = os.stat(self.path)
        except OSError as exc:
            self._fail(exc)
            return
        racy = time.time_ns() - st.st_mtime_ns < RACY_NS
        if racy or self._failing or _signature(st) != self._stat:
            self.reload("file changed")

    async def watch(self) -> None:
        """Poll until cancelled (the engine runs this while it is open)."""
        while True:
            await asyncio.sleep(self.poll_s)
            try:
                self.poll()
            except Exception:  # never let the watcher die: keys could then never rotate
                log.exception("checking the API keys file %s failed", self.path)

    def _read(self) -> frozenset[str]:
        with open(self.path, "rb") as f:
            st = os.fstat(f.fileno())
            data = f.read()
        keys = parse_keys(data.decode("utf-8"))
        self._stat = _signature(st)
        return keys

    def _fail(self, exc: OSError | UnicodeDecodeError) -> None:
        """Keep the keys; log the error once (again only when it changes)."""
        if isinstance(exc, UnicodeDecodeError):
            what = "it is not UTF-8 text"  # never the bytes: they may be a key
        else:
            what = exc.strerror or type(exc).__name__
        if what != self._failing:
            self._failing = what
            log.error("cannot read the API keys file %s (%s); keeping the %d keys it had",
                      self.path, what, len(self.ring))


def _signature(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_mtime_ns, st.st_size, st.st_ino, st.st_dev)


def key_ring(api_keys: str, api_keys_file: Path | None, poll_s: float
             ) -> tuple[ApiKeys, KeyFile | None]:
    """The server's key ring from --api-keys and --api-keys-file, and the file's watcher.
    Keys are required when either is given, even if the file holds no key yet."""
    fixed = flag_keys(api_keys)
    ring = ApiKeys(fixed, required=bool(fixed) or api_keys_file is not None)
    if api_keys_file is None:
        return ring, None
    key_file = KeyFile(ring, api_keys_file, fixed, poll_s)
    key_file.load()
    return ring, key_file
