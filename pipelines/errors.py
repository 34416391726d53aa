"""Errors a user can act on. Each one says where (file:line:column and field path) and what was
expected; the CLI prints them and exits 2 before any Ray work starts."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SpecIssue:
    file: str
    line: int | None  # 1-based; None when the value came from --set or a default
    column: int | None
    path: str  # field path such as steps[3].langid.min_score ("" for the whole document)
    message: str

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        return f"{where} {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class SpecError(Exception):
    """One or more problems with a spec, all reported at once."""

    def __init__(self, issues: list[SpecIssue]):
        self.issues = issues
        super().__init__("\n".join(str(i) for i in issues))


class RunError(Exception):
    """A run cannot go on (bad run directory, inconsistent outputs); the message says why."""
