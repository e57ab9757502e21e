"""The error model of every config and spec file: a ``Problem`` is ``file:line: field: message``, a ``FileProblems``
collects them for one file, and ``ConfigError`` carries every problem found, not just the first."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    file: str
    line: int | None
    field: str
    message: str
    warning: bool = False

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        kind = "warning: " if self.warning else ""
        return f"{where}: {kind}{self.field}: {self.message}" if self.field else f"{where}: {kind}{self.message}"


class ConfigError(Exception):
    """Raised with every problem found in one file, not just the first."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class FileProblems:
    """Collects problems for one file."""

    def __init__(self, file: str):
        self.file = file
        self.problems: list[Problem] = []

    def error(self, line: int | None, field: str, message: str) -> None:
        self.problems.append(Problem(self.file, line, field, message))

    def warn(self, line: int | None, field: str, message: str) -> None:
        self.problems.append(Problem(self.file, line, field, message, warning=True))

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if not p.warning]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.warning]

    def raise_if_errors(self) -> None:
        if self.errors:
            raise ConfigError(self.errors)
