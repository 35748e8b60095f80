"""User-facing errors: each carries a one-line message that says what to do."""

from __future__ import annotations


class FedlabError(Exception):
    """Base for errors shown to a person (CLI: stderr + exit 2; dashboard: a message box)."""


class ConfigError(FedlabError, ValueError):
    """A setting is out of range or inconsistent with another."""


class DataError(FedlabError):
    """The check-in data cannot be used; names the line and column where that applies."""

    def __init__(self, message: str, *, line: int | None = None, column: str | None = None):
        self.line = line
        self.column = column
        where = []
        if line is not None:
            where.append(f"line {line}")
        if column is not None:
            where.append(f"column {column!r}")
        super().__init__(f"{message} ({', '.join(where)})" if where else message)
