"""Retirement: a model version unloaded (explicit model control) or removed from the
repository (poll) while it holds live sessions is not cut off. It takes no new sessions (nor
predictions, nor v2 calls) at once, and its sessions step on for at most `--retire-grace-s`;
when the grace ends, or once no session is left, its instances are let go and its sessions'
steps get `VersionRetired` (410, gRPC FAILED_PRECONDITION, WebSocket close 4410).

The retirement and the end of its grace are recorded in the state store (`StateStore.retire`;
the first replica to retire a version fixes the end), and every replica reads the records
each second (`follow`): a replica that still serves a version another replica retired
retires it with the same end, and one that never served it answers its sessions alike. A new
default version alone retires nothing: only an unload or a removal does.

A session of a version this replica knows nothing of, newer than every version it knows of
its model, is a rolling change in progress (another replica loaded it first):
`VersionNotServedYet`, 503 with Retry-After, rather than 404."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from rnnserve.engine.model_registry import ModelRegistry
from rnnserve.engine.runner import Runner
from rnnserve.errors import ModelNotFound, Unavailable, VersionNotServedYet, VersionRetired
from rnnserve.state import StateStore
from rnnserve.whole_numbers import version_number

log = logging.getLogger("rnnserve.model_control")

RETRY_AFTER_S = 5.0
"""Retry-After of a session whose newer version this replica does not serve yet."""


def retired(model: str, version: int, until: float, *, new: bool = False) -> VersionRetired:
    """The retired error; `new`: for a new session or call rather than a session's step."""
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(until))
    if new:
        return VersionRetired(f"model {model!r} version {version} is retired: it takes no new "
                              "sessions or calls")
    return VersionRetired(f"model {model!r} version {version} was retired: its sessions "
                          f"could step until {when} (--retire-grace-s), and that time is over")


class Retirement:
    """What retires, until when, and the errors a retired or not yet served version gets."""

    def __init__(self, registry: ModelRegistry, grace_s: float,
                 store: Callable[[], StateStore | None],
                 clock: Callable[[], float] = time.time) -> None:
        self._registry = registry
        self.grace_s = grace_s
        self._store = store
        self._clock = clock
        self.recorded: dict[tuple[str, int], float] = {}  # the store's records, last read

    # -- lookups (the event loop, on every step that misses or every new call) -------------

    def until(self, model: str, version: int) -> float | None:
        """The end of the version's grace when it is retiring or retired, else None."""
        key = (model, version)
        return self._registry.retiring.get(key, self.recorded.get(key))

    def session_runner(self, model: str, version: int, created: float) -> Runner | None:
        """The instance a session steps on (the registry's), or the error saying why there
        is none: VersionRetired past the grace, VersionNotServedYet for a newer version;
        None (404) otherwise."""
        runner = self._registry.session_runner(model, version, created)
        if runner is not None:
            until = self._registry.retiring.get((model, version)) if self._registry.retiring \
                else None
            if until is not None and self._clock() >= until:
                raise retired(model, version, until)
            return runner
        until = self.until(model, version)
        if until is not None:
            raise retired(model, version, until)
        newest = self._registry.newest_known(model)
        if newest is None or version > newest:
            raise VersionNotServedYet(
                f"model {model!r} version {version} is not served by this replica yet (a "
                "rolling change: another replica serves it): nothing was run or applied; "
                "retry shortly", retry_after_s=RETRY_AFTER_S)
        return None

    def refusal(self, error: ModelNotFound, model: str, version: str | int | None
                ) -> ModelNotFound | VersionRetired:
        """A new session or call asked of a version that is retiring: VersionRetired (410)
        instead of the 404."""
        number = version_number(version)
        until = None if number is None else self.until(model, number)
        return error if until is None or number is None else retired(
            model, number, until, new=True)

    # -- changes (model control, under its lock) -------------------------------------------

    async def begin(self, model: str, version: int, reason: str) -> float | None:
        """Record the version's retirement; the end of its sessions' grace when some are to
        step on (the caller keeps its instances: registry.retire_version), None when it
        holds none or has no grace (let it go now)."""
        now = self._clock()
        store = self._store()
        wanted = now
        try:
            if store is not None and self.grace_s > 0:
                live = (await store.version_sessions(model)).get(version, 0)
                wanted = now + self.grace_s if live else now
            until = wanted if store is None else await store.retire(model, version, wanted)
        except Unavailable as exc:  # the store is down: retire here alone, with the grace
            log.warning("model %s version %d: retirement not recorded in the state store "
                        "(%s); retiring it on this replica only", model, version, exc.message)
            until = now + self.grace_s
        self.recorded[(model, version)] = until
        if until <= now:
            return None
        self._registry.retire_version(model, version, until, f"retiring ({reason}): no new "
                                      f"sessions; its sessions step on until {until:.0f}")
        log.info("model %s version %d retiring (%s): its live sessions step on for %.0f s",
                 model, version, reason, until - now)
        return until

    async def loaded(self, model: str, version: int) -> None:
        """A version (loaded again) serves: forget any retirement of it."""
        self.recorded.pop((model, version), None)
        store = self._store()
        if store is not None:
            try:
                await store.unretire(model, version)
            except Unavailable as exc:
                log.warning("model %s version %d: its old retirement could not be cleared "
                            "from the state store: %s", model, version, exc.message)

    async def follow(self) -> tuple[list[tuple[str, int, float]], list[tuple[str, int]]]:
        """Read the store's records: (versions served here that another replica retired,
        with the end of their grace), (retiring versions whose grace is over or which hold
        no session any more: to let go now)."""
        store = self._store()
        if store is None:
            return [], []
        try:
            self.recorded = await store.retirements()
        except Unavailable:
            pass  # keep the last records; the next second tries again
        served = self._registry.models.versions
        adopt = [(m, v, until) for (m, v), until in self.recorded.items()
                 if v in served.get(m, {})]
        now = self._clock()
        done: list[tuple[str, int]] = []
        for (m, v), until in list(self._registry.retiring.items()):
            if now >= until:
                done.append((m, v))
                continue
            try:
                if not (await store.version_sessions(m)).get(v, 0):
                    done.append((m, v))
            except Unavailable:
                pass
        return adopt, done

    async def sessions_per_version(self) -> dict[str, dict[int, int]] | None:
        """Live sessions per model and version, for the listing (None: the store is down)."""
        store = self._store()
        if store is None:
            return None
        names = set(self._registry.models.versions) | {m for m, _ in self._registry.retiring}
        try:
            return {name: await store.version_sessions(name) for name in sorted(names)}
        except Unavailable:
            return None
