"""Turn client data into the float32 arrays ONNX Runtime takes, and check them.

Every check raises InvalidInput (400) or PayloadTooLarge (413) with a message that names the
offending tensor and says how to fix it. The checks are vectorised: no loop over timesteps."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import orjson

from rnnserve.engine.signature import Signature
from rnnserve.errors import InvalidInput

_KIND_NAMES = {"b": "booleans", "U": "strings", "S": "bytes", "O": "non-numeric values"}


def to_float32(value: Any, what: str) -> np.ndarray:
    """Nested lists of numbers → float32 array. Rejects ragged lists, strings, booleans and
    nulls; finiteness is the engine's check (`require_finite`), made once for every transport."""
    if not isinstance(value, np.ndarray):
        fast = _plain_numbers(value)
        if fast is not None:
            return fast
    return _to_float32_checked(value, what)


def _plain_numbers(value: Any) -> np.ndarray | None:
    """The common case at C speed: nested lists of plain JSON numbers straight to float32.
    None sends anything else to the checked path: numpy would read "1.5", true and null as
    numbers, and a number written with an exponent may overflow float32 (a warning unless
    under np.errstate, which costs more than the conversion). orjson writes a float without
    an exponent only below 1e16, and true, false and null all hold an "e" or an "n"."""
    try:
        encoded = orjson.dumps(value)
    except TypeError:
        return None
    if b'"' in encoded or b"e" in encoded or b"n" in encoded:
        return None
    try:
        return np.asarray(value, dtype=np.float32)
    except (ValueError, TypeError):  # ragged
        return None


def _to_float32_checked(value: Any, what: str) -> np.ndarray:
    if isinstance(value, np.ndarray):
        arr = value
    else:
        try:
            arr = np.asarray(value)
        except (ValueError, TypeError):
            raise InvalidInput(
                f"{what} is ragged: every timestep must list the same number of features"
            ) from None
    if arr.dtype.kind in "iuf" and not isinstance(value, np.ndarray) and _holds_booleans(value):
        raise InvalidInput(f"{what} must hold numbers only; found booleans")
    if arr.dtype.kind not in "iuf":
        found = _KIND_NAMES.get(arr.dtype.kind, str(arr.dtype))
        hint = " (or ragged nested lists)" if arr.dtype.kind == "O" else ""
        raise InvalidInput(f"{what} must hold numbers only; found {found}{hint}")
    with np.errstate(over="ignore", invalid="ignore"):
        return arr.astype(np.float32, copy=False)


def holds_non_numbers(encoded: bytes) -> bool:
    """Whether orjson-encoded values hold what numpy would silently read as a number: a
    string ("1.5"), true, false or null. A substring search, no Python loop over values."""
    return any(token in encoded for token in _NON_NUMBER_TOKENS)


_NON_NUMBER_TOKENS = (b'"', b"true", b"false", b"null")


def _holds_booleans(value: Any) -> bool:
    """numpy turns [1, true] into [1, 1] silently; JSON true/false are not readings. A C-speed
    re-encode and substring search finds them without a Python loop over the values."""
    encoded = orjson.dumps(value)
    return b"true" in encoded or b"false" in encoded


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
        checked[spec.input] = arr
    return checked
