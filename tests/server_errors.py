"""The errors a test's server processes logged, added to the report of a test that failed.

A 500 reads "internal error (RuntimeError); see the server log", and in CI that log is gone
with the clone; so a failed test's report carries each of its processes' logged tracebacks:
every distinct one counted, and the last in full (capped): the last unexpected error (what
a 500 logs), else the last of any kind."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

TRACEBACK = "Traceback (most recent call last):"
LAST_IN_FULL_LINES = 60
"""Lines of the last traceback quoted whole (CI shows a part of the output only)."""
SUMMARY_LINES = 20
"""Distinct tracebacks listed at most, the most frequent first."""
_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ ")


def _tracebacks(lines: list[str]) -> list[tuple[str, list[str]]]:
    """Each logged traceback: the log line that introduced it, and its lines up to the next
    log line."""
    found: list[tuple[str, list[str]]] = []
    for i, line in enumerate(lines):
        if not _LOG_LINE.match(line):
            continue
        end = i + 1
        while end < len(lines) and not _LOG_LINE.match(lines[end]):
            end += 1
        body = lines[i + 1:end]
        if body and body[0].startswith(TRACEBACK):
            found.append((line, body))
    return found


def _exception_line(body: list[str]) -> str:
    """The traceback's last exception: its last line that is not indented."""
    return next((ln for ln in reversed(body) if ln and not ln[0].isspace()), body[-1])


def logged_errors(log_path: Path, since: int = 0) -> str:
    """What the log at `log_path` holds of tracebacks past its first `since` bytes (what was
    written before the test began), or "" when none (or no log). Text logs only: a
    `--log-format json` log reads as holding none."""
    if not log_path.exists():
        return ""
    with log_path.open("rb") as log:
        log.seek(since)
        found = _tracebacks(log.read().decode(errors="replace").splitlines())
    if not found:
        return ""
    counts = Counter((_LOG_LINE.sub("", head)[:160], _exception_line(body)[:300])
                     for head, body in found)
    unexpected = [tb for tb in found if "unexpected error" in tb[0]]
    head, body = (unexpected or found)[-1]
    summary = [f"{n} x {message}\n    {exc}"
               for (message, exc), n in counts.most_common(SUMMARY_LINES)]
    return "\n".join([f"{log_path}: {len(found)} tracebacks", *summary,
                      "the last:", head, *body[-LAST_IN_FULL_LINES:]])
