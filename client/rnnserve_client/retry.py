"""How the client retries: exponential backoff with jitter, never sooner than the server's
Retry-After, and for at most `give_up_after_s` in all (then the last error is raised).

Retrying is safe where the client does it: a step carries a step id the client made, so a
step the server applied already is replayed (its recorded outputs), never applied twice; a
create is retried only when the server answered 408, 429 or 503 or the connection was never
made (http_calls: one kind of 503 may leave a session that expires unused)."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    """`initial_s` doubles after each failed try up to `max_s` (each wait is jittered down
    to half, so that many clients do not come back at once); a server's Retry-After is a
    floor. `give_up_after_s` bounds the whole call (0: never retry)."""

    initial_s: float = 0.05
    max_s: float = 2.0
    give_up_after_s: float = 60.0

    def schedule(self) -> Backoff:
        """The waits of one call."""
        return Backoff(self)


NO_RETRY = RetryPolicy(give_up_after_s=0.0)


class Backoff:
    """The waits of one call under a policy."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self.tries = 0
        self._started = time.monotonic()

    def next_wait(self, retry_after_s: float | None = None) -> float | None:
        """How long to wait before the next try, or None when the call must give up."""
        base = min(self.policy.max_s, self.policy.initial_s * 2.0 ** self.tries)
        wait = base * (0.5 + random.random() / 2)
        if retry_after_s is not None:
            wait = max(wait, retry_after_s)
        self.tries += 1
        elapsed = time.monotonic() - self._started
        if elapsed + wait > self.policy.give_up_after_s:
            return None
        return wait
