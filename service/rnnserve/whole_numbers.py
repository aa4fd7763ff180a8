"""Whole numbers written by someone else (a header, a path, a folder name, a URL), read
without surprises. `str.isdigit` is true for "²" and "٣", which `int` then refuses or reads
as digits the writer did not mean, and `int` refuses more than 4,300 digits: either way a
ValueError where the caller wanted a clear "not a number" (a 4xx, a skipped folder)."""

from __future__ import annotations

import re

_ASCII_DIGITS = re.compile(rb"[0-9]+")


def whole_number(text: str | bytes, max_digits: int = 18) -> int | None:
    """The value of `text` when it is 1 to `max_digits` ASCII digits (18 fit in a signed
    64-bit integer), else None."""
    raw = text.encode("ascii", "replace") if isinstance(text, str) else text
    if not 0 < len(raw) <= max_digits or not _ASCII_DIGITS.fullmatch(raw):
        return None
    return int(raw)


def version_number(version: int | str | None) -> int | None:
    """The model version a caller names: an int as it is, a string by its digits ("01" is
    1), None for anything else."""
    if isinstance(version, int):
        return version
    return whole_number(version) if isinstance(version, str) else None
