"""The request limits (--max-sequences, --max-timesteps, --max-total-timesteps,
--max-step-timesteps), checked in one place for stateless calls, raw tensors and session
steps, so that every transport refuses the same requests with the same 413."""

from __future__ import annotations

import numpy as np

from rnnserve.engine.signature import Signature
from rnnserve.engine.tensors import require_finite, require_sequence
from rnnserve.errors import InvalidInput, PayloadTooLarge
from rnnserve.settings import Settings


class Limits:
    """The limits of one engine's settings."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    @property
    def max_step_timesteps(self) -> int:
        return self._settings.max_step_timesteps

    def check_request(self, sequences: int, longest: int, total: int) -> None:
        s = self._settings
        if sequences > s.max_sequences:
            raise PayloadTooLarge(f"{sequences} sequences in one request; the limit is "
                                  f"{s.max_sequences}: split the request")
        if longest > s.max_timesteps:
            raise PayloadTooLarge(f"a sequence of {longest} timesteps; the limit is "
                                  f"{s.max_timesteps}: send it in chunks through a session")
        if total > s.max_total_timesteps:
            raise PayloadTooLarge(f"{total} timesteps in one request; the limit is "
                                  f"{s.max_total_timesteps}: split the request")

    def check_step_length(self, steps: int, what: str) -> None:
        limit = self._settings.max_step_timesteps
        if steps > limit:
            raise PayloadTooLarge(f"{what} has {steps} timesteps; a step takes at most "
                                  f"{limit}: send them in several steps")

    def check_step_input(self, sig: Signature, x: np.ndarray, what: str = "inputs") -> None:
        """One session step's timesteps [time, features]: shaped, within the limit, finite."""
        require_sequence(x, sig.input_size, what)
        self.check_step_length(int(x.shape[0]), what)
        require_finite(x, what)

    def check_tensor_input(self, sig: Signature, x: np.ndarray | None) -> np.ndarray:
        """The sequence input of a raw-tensor call: [batch, time, features], within limits."""
        if x is None:
            raise InvalidInput(f"input {sig.input_name!r} is missing: it carries the sequence "
                               f"[batch, time, {sig.input_size}]")
        if x.ndim != 3 or x.shape[2] != sig.input_size:
            raise InvalidInput(f"input {sig.input_name!r} has shape {list(x.shape)}; expected "
                               f"[batch, time, {sig.input_size}]")
        if x.shape[0] == 0 or x.shape[1] == 0:
            raise InvalidInput(f"input {sig.input_name!r} is empty (shape {list(x.shape)}): "
                               "send at least one sequence of one timestep")
        self.check_request(int(x.shape[0]), int(x.shape[1]), int(x.shape[0] * x.shape[1]))
        require_finite(x, sig.input_name)
        return x
