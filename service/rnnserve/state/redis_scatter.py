"""The Redis store's scatter: one batch's state write (redis_scatter.lua), and, when replicas
must acknowledge it, the Redis WAIT after it on the same connection.

Every call carries a fresh write id (redis_format.write_id), stored in each hash it writes.
The client retries a command once on a fresh connection when the pooled one turns out closed
(redis_client), so a script may run twice; the second run finds its own write id and answers
'landed' for those rows: they count as written, once.

WAIT is refused inside Lua and counts the writes of its own connection only, so the script and
WAIT go out as one pipeline (one round trip, one connection). Rows it wrote, or replayed,
become StepNotReplicated (503, retry with the same step_id) when fewer replicas than asked
acknowledged in time: the master has the step, a failover might not."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

from rnnserve.errors import RnnServeError, SessionNotFound, StepNotReplicated
from rnnserve.state import redis_records, redis_scripts
from rnnserve.state.base import Gathered, Written
from rnnserve.state.redis_client import guard
from rnnserve.state.redis_format import (
    GEN,
    LIVE,
    MARKER,
    OWNER,
    SESSION,
    GatherToken,
    not_found,
    outputs_bytes,
    outputs_from,
    text,
    write_id,
)
from rnnserve.state.redis_history import HISTORY
from rnnserve.state.redis_inputs import INPUTS
from rnnserve.state.redis_ttl import Timeouts

APPLIED = ("ok", "landed", "replay")
"""Row statuses whose step is in Redis after the script (and so waits for its replicas)."""


class ScatterWriter:
    """The scatter of one store. `wait_replicas` 0: no WAIT (one EVALSHA, as ever)."""

    def __init__(self, client: aioredis.Redis, where: str, *, timeouts: Timeouts,
                 wait_replicas: int = 0, wait_timeout_s: float = 1.0, record_format: int = 1,
                 history: int = 1) -> None:
        """`history`: how many step ids each session keeps for replays (its window);
        `timeouts`: the store's, which give each batch its version's idle timeout."""
        self._client = client
        self._where = where
        self._script = client.register_script(redis_scripts.SCATTER)
        self._timeouts = timeouts
        self.wait_replicas = wait_replicas
        self._wait_ms = max(1, math.ceil(wait_timeout_s * 1000))
        self.record_format = record_format
        self.history = max(1, history)

    async def scatter(
        self, gathered: Gathered, states: dict[str, np.ndarray], steps: list[int],
        outputs: np.ndarray, step_ids: list[str | None], inputs: np.ndarray | None = None,
    ) -> Written:
        """One script call for the batch: each row is written only if its gen is still the
        gathered one; a changed gen is a conflict (another writer came first: run again), a
        missing hash an error (deleted or expired meanwhile). A row whose step id is already
        the session's last one, or in its replay window (redis_history), is replayed, never
        applied twice; one this call's write id
        wrote already (a resend) counts as written. The state goes out in the store's record
        format (redis_records); a record in the other one is converted by this write."""
        token: GatherToken = gathered.token
        layout = token.layout
        rows = [i for i, error in enumerate(gathered.errors) if error is None]
        n = len(gathered.ids)
        after = [0] * n
        conflict = [False] * n
        errors: list[RnnServeError | None] = list(gathered.errors)
        replayed: list[tuple[np.ndarray, int] | None] = [None] * n
        if not rows:
            return Written(after, conflict, errors, replayed)
        fmt = self.record_format
        fields = redis_records.tensor_fields(layout.tensors)
        keys: list[str] = [GEN, LIVE + layout.model]
        keep = layout.rewarm_steps if inputs is not None else 0
        ttl = self._timeouts.of_layout(layout)  # the version's: every row is of that version
        args: list[Any] = [ttl.ms, ttl.marker_ms, ttl.label, layout.model, redis_records.NEWEST,
                           fmt, len(fields), *fields, OWNER, write_id(), self.history - 1,
                           4 * keep * layout.features, INPUTS, ttl.field]
        kept = inputs.astype("<f4", copy=False) if inputs is not None and keep else None
        per_value = redis_records.stack_rows(states, layout.tensors, fmt)
        for i in rows:
            session_id, before = gathered.ids[i], token.records[i]
            assert before is not None  # gather made a record for every row without error
            keys += [SESSION + session_id, MARKER + session_id,
                     redis_records.STATE + session_id, HISTORY + session_id]
            step_id = step_ids[i] or ""
            args += [session_id, token.gens[i], int(steps[i]), before.owner, step_id,
                     outputs_bytes(outputs[i]) if step_id else b"",
                     *(rows[i].tobytes() for rows in per_value),
                     b"" if kept is None else kept[i].tobytes()]
        out, acked = await self.run(keys, args)
        short = acked is not None and acked < self.wait_replicas
        for j, i in enumerate(rows):
            status, value = text(out[1 + 3 * j]), out[2 + 3 * j]
            if status == "replay":
                replayed[i] = (outputs_from(bytes(out[3 + 3 * j])), int(text(value)))
                after[i] = replayed[i][1]  # type: ignore[index]
            elif status in ("ok", "landed"):
                after[i] = int(text(value))
            elif status == "conflict":
                conflict[i] = True
            elif status == "format":
                errors[i] = redis_records.too_new(gathered.ids[i], value)
            elif value:
                errors[i] = not_found(gathered.ids[i], value)
            else:
                errors[i] = SessionNotFound(f"session {gathered.ids[i]!r} was deleted during "
                                            "its step")
            if short and status in APPLIED:
                errors[i] = self._not_replicated(int(acked or 0))
        return Written(after, conflict, errors, replayed)

    async def run(self, keys: list[str], args: list[Any]) -> tuple[list[Any], int | None]:
        """The script's reply and, with WAIT on, how many replicas acknowledged it."""
        async with guard(self._where):
            if not self.wait_replicas:
                return await self._script(keys=keys, args=args), None
            for _ in range(2):  # a second time after loading a script Redis forgot
                async with self._client.pipeline(transaction=False) as pipe:
                    pipe.evalsha(self._script.sha, len(keys), *keys, *args)
                    pipe.execute_command("WAIT", self.wait_replicas, self._wait_ms)
                    out, acked = await pipe.execute(raise_on_error=False)
                if not isinstance(out, NoScriptError):
                    break
                await self._client.script_load(self._script.script)
            for reply in (out, acked):
                if isinstance(reply, Exception):
                    raise reply
            return out, int(acked)

    def _not_replicated(self, acked: int) -> StepNotReplicated:
        return StepNotReplicated(
            f"the step was applied, not yet replicated: {acked} of the "
            f"{self.wait_replicas} Redis replica(s) asked for acknowledged it within "
            f"{self._wait_ms} ms", retry_after_s=1)
