"""Errors raised by the stack manager."""

from __future__ import annotations


class StackError(Exception):
    """A problem the user can act on: the message says what happened, ``hint`` what to do."""

    def __init__(self, message: str, hint: str | None = None, details: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.details = details

    def __str__(self) -> str:
        parts = [self.message]
        if self.details:
            parts.append(self.details.rstrip())
        if self.hint:
            parts.append(f"hint: {self.hint}")
        return "\n".join(parts)
