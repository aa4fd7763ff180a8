"""The Redis store's replay window: a session's last N step ids with their outputs.

The latest step that carried an id stays where every release looks for it, the hash's
`last_id` and `last_out` fields (redis_format), so a replica of the previous release still
replays it and reads the record unchanged. The N - 1 before it live in a list key of their own,
rnnserve:h:{id}, newest first, which older releases never read: the hash stays a compact
listpack (its values short), and the record formats (redis_records) are untouched. When a
step is written the hash's former latest moves to the list's head, in the same script as the
state (redis_scatter.lua, with redis_history.lua), so the window is exact as of every write.

While replicas of two releases share one Redis the window is smaller: an older replica
overwrites `last_id` without moving the former latest into the list, so that one id is no
longer replayable (a retry of it would apply again, as with the older release alone); and it
neither clears the list on a reset nor deletes it with the session (the list's TTL, the
hash's, ends it; a reset or create of this release clears it), so until then a step id from
before such a reset still replays (docs/deploy.md, "The replay window").

Each element is b"{steps after it} {len(step id)} {step id}{outputs bytes}"."""

from __future__ import annotations

import numpy as np

from rnnserve.state.redis_format import PREFIX, outputs_from

HISTORY = PREFIX + "h:"
"""The window's list key prefix: rnnserve:h:{id}."""


def find(elements: list[bytes], step_id: str) -> tuple[np.ndarray, int] | None:
    """The recorded (outputs, steps after it) of `step_id` among the list's elements."""
    wanted = step_id.encode()
    for element in elements:
        steps, size, rest = element.split(b" ", 2)
        if int(size) == len(wanted) and rest[:len(wanted)] == wanted:
            return outputs_from(rest[len(wanted):]), int(steps)
    return None
