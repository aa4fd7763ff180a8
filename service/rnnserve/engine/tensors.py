"""Checks of the float32 arrays every transport hands the engine.

Every check raises InvalidInput (400) with a message that names the offending tensor and says
how to fix it. The checks are vectorised: no loop over timesteps. Turning wire data into arrays
is each transport's job (http/json_arrays.py, grpc/converters.py); from there on, REST,
WebSocket, KServe v2 and gRPC are checked by the same code."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from rnnserve.engine.signature import Signature
from rnnserve.errors import InvalidInput


def require_finite(arr: np.ndarray, what: str) -> None:
    """NaN and ±Inf (also floats too large for float32) would poison the hidden state."""
    finite = np.isfinite(arr)
    if not finite.all():
        where = tuple(int(i) for i in np.argwhere(~finite)[0])
        raise InvalidInput(
            f"{what}{list(where)} is {arr[where]}: values must be finite float32 numbers "
            "(no NaN or Infinity, |x| < 3.4e38)"
        )


def require_sequence(arr: np.ndarray, input_size: int, what: str) -> None:
    """A sequence is time × features with at least one timestep."""
    if arr.size == 0 and arr.ndim <= 2:
        raise InvalidInput(f"{what} is empty: send at least one timestep")
    if arr.ndim != 2:
        raise InvalidInput(
            f"{what} must be a list of timesteps, each a list of {input_size} numbers "
            f"(time × features); got an array of {arr.ndim} dimension(s) {list(arr.shape)}"
        )
    if arr.shape[1] != input_size:
        raise InvalidInput(
            f"{what} has {arr.shape[1]} feature(s) per timestep; the model takes {input_size}"
        )


def check_state(
    sig: Signature, state: Mapping[str, np.ndarray] | None, what: str
) -> dict[str, np.ndarray] | None:
    """A caller-supplied state of one sequence or session: known names, shaped
    [layers, 1, hidden] (or [layers, hidden]), finite. Missing tensors start from zeros."""
    if state is None:
        return None
    if not isinstance(state, Mapping):
        raise InvalidInput(f"{what} must be an object keyed by state name")
    known = sorted(s.input for s in sig.states)
    checked: dict[str, np.ndarray] = {}
    for name, value in state.items():
        spec = sig.state(name)
        if spec is None:
            raise InvalidInput(f"{what} names unknown state {name!r}; this model's states "
                               f"are {known}")
        arr = value[:, None, :] if value.shape == (spec.layers, spec.hidden) else value
        if arr.shape != spec.shape(1):
            raise InvalidInput(f"{what}.{name} has shape {list(value.shape)}; expected "
                               f"{list(spec.shape(1))} (layers, 1, hidden)")
        require_finite(arr, f"{what}.{name}")
        if spec.input in checked:  # under its input name and its output name: which one?
            raise InvalidInput(f"{what} gives state {spec.input!r} twice (as {spec.input!r} "
                               f"and {spec.output!r}): give it once")
        checked[spec.input] = arr
    return checked
