"""The one error type users see: a clear message and what to do about it."""
from __future__ import annotations


class WorkbenchError(Exception):
    """A problem with the user's input or environment, not a bug.

    The CLI prints it as one line (``error: <message> (<hint>)``) and exits with code 2.

    Args:
        message: what is wrong, naming the file, model or artifact concerned.
        hint: what the user should do about it.
    """

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message
