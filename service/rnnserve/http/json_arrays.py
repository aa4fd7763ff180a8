"""JSON numbers → the float32 arrays the engine takes: the wire half of input checking.

A JSON body arrives as nested lists. numpy would read "1.5", true and null as numbers without a
word, so every conversion here refuses strings, booleans and nulls with a message that names the
offending field; the engine then checks shapes, limits and finiteness on the arrays. No loop
over values in Python: orjson re-encodes and a substring search finds what is not a number.

`JSON_STEPS` is the WebSocket stream's StepDecoder: the engine hands it the undecoded inputs of
every step of one event-loop turn at once, so they are converted in one call."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

from rnnserve.errors import InvalidInput

_KIND_NAMES = {"b": "booleans", "U": "strings", "S": "bytes", "O": "non-numeric values"}
_NON_NUMBER_TOKENS = (b'"', b"true", b"false", b"null")


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


def _holds_booleans(value: Any) -> bool:
    """numpy turns [1, true] into [1, 1] silently; JSON true/false are not readings. A C-speed
    re-encode and substring search finds them without a Python loop over the values."""
    encoded = orjson.dumps(value)
    return b"true" in encoded or b"false" in encoded


class JsonStepDecoder:
    """The engine's StepDecoder for step inputs that are decoded JSON (nested lists)."""

    def decode_many(self, items: list[object]) -> tuple[np.ndarray | None, set[int]]:
        """All items as one float32 array [items, ...] in one conversion, and the indexes of
        items that hold strings, booleans or nulls; None (and every index) when the items do
        not convert to one array."""
        try:
            with np.errstate(over="ignore", invalid="ignore"):  # too large → inf → not finite
                x = np.array(items, dtype=np.float32)
        except (ValueError, TypeError, OverflowError):
            return None, set(range(len(items)))
        odd: set[int] = set()
        if holds_non_numbers(orjson.dumps(items)):
            odd.update(i for i, value in enumerate(items)
                       if holds_non_numbers(orjson.dumps(value)))
        return x, odd

    def decode_one(self, item: object, what: str) -> np.ndarray:
        return to_float32(item, what)


JSON_STEPS = JsonStepDecoder()
