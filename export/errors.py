"""The one error type of export/: bad input a user can fix.

    ExportInputError (ValueError)   unknown cell, missing/empty/NaN data, zero-length windows,
                                    unusable paths or checkpoints

The command line turns it into a one-line message and exit code 2; anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations


class ExportInputError(ValueError):
    """Raised for input the user can fix; the message says what is wrong and how to fix it."""
