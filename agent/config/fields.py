"""``Fields``: reads one YAML mapping field by field into validated values, collecting every problem."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, TypeVar, overload

from agent.config.problems import FileProblems
from agent.config.yaml import LocatedMap
from agent.formatting import kind_of

T = TypeVar("T")

_MISSING: Any = object()


class Fields:
    """Reads one YAML mapping field by field. Every key read is marked known; ``finish`` reports the rest
    as unknown so typos never pass silently. Parse functions raise ValueError with a message for the user."""

    def __init__(self, node: Any, path: str, report: FileProblems, line: int | None = None):
        self.path = path
        self.report = report
        self.ok = isinstance(node, dict)
        if not self.ok:  # reported once, here: its fields are not "required" again one by one
            report.error(line, path or "(top level)", f"expected a mapping, got {kind_of(node)}")
            node = LocatedMap()
        self.node: dict = node
        self.line = getattr(node, "line", 0) or line
        self._seen: set[Any] = set()
        self.invalid: set[str] = set()  # keys whose value was reported as invalid

    def field(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def line_of(self, key: str) -> int | None:
        lines = getattr(self.node, "key_lines", {})
        return lines.get(key, self.line)

    def has(self, key: str) -> bool:
        return key in self.node

    def raw(self, key: str, default: Any = None) -> Any:
        self._seen.add(key)
        return self.node.get(key, default)

    def error(self, key: str, message: str) -> None:
        self.report.error(self.line_of(key), self.field(key), message)

    def warn(self, key: str, message: str) -> None:
        self.report.warn(self.line_of(key), self.field(key), message)

    @overload
    def get(self, key: str, parse: Callable[[Any], T]) -> T | None: ...
    @overload
    def get(self, key: str, parse: Callable[[Any], T], default: None) -> T | None: ...
    @overload
    def get(self, key: str, parse: Callable[[Any], T], default: Any) -> T: ...  # a default of parse's type

    def get(self, key: str, parse: Callable[[Any], Any], default: Any = _MISSING) -> Any:
        """The parsed value, or the default when absent. A required value that is absent or invalid gives None,
        an optional one its default; either way the problem is recorded, so the result is never used."""
        self._seen.add(key)
        if key not in self.node or self.node[key] is None and default is not _MISSING:
            if default is _MISSING:
                if self.ok:
                    self.report.error(self.line, self.field(key), "is required")
                return None
            return default
        try:
            return parse(self.node[key])
        except ValueError as exc:
            self.error(key, str(exc))
            self.invalid.add(key)
            return None if default is _MISSING else default

    def section(self, key: str, required: bool = False) -> Fields | None:
        self._seen.add(key)
        if key not in self.node or self.node[key] is None:
            if required and self.ok:
                self.report.error(self.line, self.field(key), "is required")
            return None
        return Fields(self.node[key], self.field(key), self.report, self.line_of(key))

    def items(self, key: str) -> Iterator[tuple[Any, str, int | None]]:
        """(item, field path, line) for each item of a list field; a non-list is reported."""
        self._seen.add(key)
        value = self.node.get(key)
        if value is None:
            return
        if not isinstance(value, list):
            self.error(key, f"expected a list, got {kind_of(value)}")
            return
        lines = getattr(value, "item_lines", [self.line_of(key)] * len(value))
        for index, item in enumerate(value):
            yield item, f"{self.field(key)}[{index}]", lines[index]

    def finish(self) -> None:
        for key in self.node:
            if key not in self._seen:
                self.report.error(self.line_of(key), self.field(str(key)), "unknown field" + self._suggestion(key))

    def _suggestion(self, key: Any) -> str:
        """"; did you mean 'x'?" when a key this mapping knows (one its reader asked for) is close to ``key``."""
        import difflib  # only for a config with a mistake in it (80 KiB of bytecode a running agent never uses)

        known = sorted(str(k) for k in self._seen if k not in self.node)
        close = difflib.get_close_matches(str(key), known, n=1)
        return f"; did you mean {close[0]!r}?" if close else ""
