"""YAML loading that remembers where every value came from, and a small reader that turns mappings into
validated fields while collecting every problem as ``file:line: field: message``.

Both the agent config and the KPI specs are read through this module, so every error a user sees has the
same shape and points at the same kind of place.
"""

from __future__ import annotations

import math
import os
import re
import reprlib
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from pathlib import Path
from stat import S_ISREG
from typing import Any, TypeVar, overload

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.resolver import Resolver

T = TypeVar("T")

MAX_DEPTH = 64  # nesting of mappings and sequences; real configs use fewer than 10
MAX_VALUES = 200_000  # values in a document once aliases are expanded (a "billion laughs" has 10^9)
MAX_DURATION = 10 * 365 * 86400.0
MAX_SIZE = 1024**4

_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict, _REPR.maxtuple = 2, 4, 4, 4
_REPR.maxstring, _REPR.maxother, _REPR.maxlong = 60, 60, 40


def cut(text: str, limit: int = 200) -> str:
    """A message (not a value) cut to ``limit`` characters."""
    return text if len(text) <= limit else text[:limit] + "..."


def excerpt(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to about ``limit`` characters, in bounded time whatever the value: error messages
    quote user input, and input can be a 10 MB string or a structure that aliases expand a billion times."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        return f"<an integer of about {value.bit_length() * 3 // 10} digits>"
    if isinstance(value, str):
        text = repr(value[: limit + 1])
        return text if len(value) <= limit else text[:limit] + "...'"
    _REPR.maxstring = _REPR.maxother = limit
    return _REPR.repr(value)


class LocatedMap(dict):
    """A mapping from YAML that knows the line of itself and of each key (1-based)."""

    line: int = 0
    key_lines: dict[Any, int]


class LocatedList(list):
    """A sequence from YAML that knows the line of itself and of each item (1-based)."""

    line: int = 0
    item_lines: list[int]


def _event_parser() -> Any:
    """libyaml's parser when PyYAML has it (it scans and parses about four times faster: a config of ten
    thousand targets loads in 0.3 s), else PyYAML's own."""
    try:
        from yaml._yaml import CParser
    except ImportError:
        from yaml.parser import Parser
        from yaml.reader import Reader
        from yaml.scanner import Scanner

        class PythonParser(Reader, Scanner, Parser):
            def __init__(self, stream: str) -> None:
                Reader.__init__(self, stream)
                Scanner.__init__(self)
                Parser.__init__(self)

        return PythonParser
    return CParser


_Parser: Any = _event_parser()


class _Loader(Composer, _Parser, SafeConstructor, Resolver):
    """A safe loader with bounds: nesting depth, values after alias expansion, and clear errors (with a line)
    for what SafeLoader would raise as a bare Python exception. Events come from the parser (libyaml's when
    PyYAML has it); nodes are composed here, in Python, so every bound applies to either parser."""

    _depth = 0

    def __init__(self, stream: str) -> None:
        _Parser.__init__(self, stream)
        Composer.__init__(self)
        SafeConstructor.__init__(self)
        Resolver.__init__(self)

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise yaml.composer.ComposerError(None, None, f"nested more than {MAX_DEPTH} levels deep",
                                                  self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def get_single_node(self) -> Any:
        node = super().get_single_node()
        if node is not None:
            sizes: dict[int, int] = {}
            if _expanded_size(node, sizes) > MAX_VALUES:
                raise yaml.composer.ComposerError(None, None, f"holds more than {MAX_VALUES} values once its "
                                                  "aliases are expanded", node.start_mark)
        return node

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        try:
            return super().construct_yaml_int(node)
        except ValueError:
            raise yaml.constructor.ConstructorError(None, None, "integer with too many digits",
                                                    node.start_mark) from None

    def construct_yaml_str(self, node: yaml.ScalarNode) -> str:
        value = self.construct_scalar(node)
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise yaml.constructor.ConstructorError(None, None, "a string holds a lone surrogate (an escape such as "
                                                    "\\ud800), which is not text", node.start_mark) from None
        return value


def _expanded_size(node: yaml.Node, sizes: dict[int, int]) -> int:
    """Values under ``node``, counting an aliased node each time it is referenced (computed once per node)."""
    known = sizes.get(id(node))
    if known is not None:
        return known
    sizes[id(node)] = 1  # a node reached again while being sized: recursive aliases count once
    if isinstance(node, yaml.SequenceNode):
        size = 1 + sum(_expanded_size(child, sizes) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        size = 1 + sum(_expanded_size(k, sizes) + _expanded_size(v, sizes) for k, v in node.value)
    else:
        size = 1
    sizes[id(node)] = size
    return size


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> LocatedMap:
    loader.flatten_mapping(node)
    result = LocatedMap()
    result.line = node.start_mark.line + 1
    result.key_lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, Hashable):
            raise yaml.constructor.ConstructorError(None, None, "a key must be a plain value, not a list or a "
                                                    "mapping", key_node.start_mark)
        if key in result.key_lines:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {excerpt(key)} (first on line {result.key_lines[key]})",
                key_node.start_mark
            )
        result[key] = loader.construct_object(value_node, deep=True)
        result.key_lines[key] = key_node.start_mark.line + 1
    return result


def _construct_sequence(loader: _Loader, node: yaml.SequenceNode) -> LocatedList:
    result = LocatedList(loader.construct_object(child, deep=True) for child in node.value)
    result.line = node.start_mark.line + 1
    result.item_lines = [child.start_mark.line + 1 for child in node.value]
    return result


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)
_Loader.add_constructor("tag:yaml.org,2002:int", _Loader.construct_yaml_int)
_Loader.add_constructor("tag:yaml.org,2002:str", _Loader.construct_yaml_str)


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


class Report:
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


def load_text(text: str, file: str) -> Any:
    """Parse YAML text into Located containers; every failure becomes a ConfigError, with the line if known."""
    return _parsed(text, file, lambda loader: loader.get_single_data())


def load_file(path: str | Path) -> Any:
    return load_text(_read(path), str(path))


def load_file_documents(path: str | Path) -> list[Any]:
    """Every document of a multi-document YAML file (``---`` separated, as Kubernetes manifests are)."""
    def every(loader: _Loader) -> list[Any]:
        documents = []
        while loader.check_data():
            documents.append(loader.get_data())
        return documents

    return [document for document in _parsed(_read(path), str(path), every) if document is not None]


def _parsed(text: str, file: str, parse: Callable[[_Loader], T]) -> T:
    loader = None
    try:
        loader = _Loader(text)
        return parse(loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        problem = _LIBYAML_PROBLEMS.get(exc.problem or "", exc.problem or str(exc))
        raise ConfigError([Problem(file, line, "", f"invalid YAML: {cut(problem)}")]) from None
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow: it has a position, not a line
        line = text.count("\n", 0, exc.position) + 1
        code = ord(exc.character) if isinstance(exc.character, str) else exc.character
        raise ConfigError([Problem(file, line, "", f"invalid YAML: character U+{code:04X} is not allowed")]) from None
    except UnicodeEncodeError as exc:  # libyaml reads UTF-8: text holding a lone surrogate cannot become that
        line = text.count("\n", 0, exc.start) + 1
        code = ord(text[exc.start])
        raise ConfigError([Problem(file, line, "", f"invalid YAML: character U+{code:04X} is not text")]) from None
    except (yaml.YAMLError, ValueError, TypeError, RecursionError) as exc:
        raise ConfigError([Problem(file, None, "", f"invalid YAML: {cut(str(exc))}")]) from None
    finally:
        if loader is not None:
            loader.dispose()


# libyaml refuses these itself, before the composer's bounds see them: the same bound, the same words.
_LIBYAML_PROBLEMS = {
    "exceeded maximum nesting depth": f"nested more than {MAX_DEPTH} levels deep",
    "found invalid Unicode character escape code": "a string holds a lone surrogate (an escape such as \\ud800) "
                                                   "or another invalid escape",
}


def _read(path: str | Path) -> str:
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError([Problem(str(path), None, "", f"cannot read: {exc.strerror or exc}")]) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError([Problem(str(path), line, "", "not UTF-8 text")]) from None


def file_stamp(path: str | None, regular_only: bool = False) -> tuple[int, int, int, int] | None:
    """Which version of a file this is (device, inode, size, modification time), None if it cannot be read
    (or, with ``regular_only``, is not a regular file): one stat."""
    if path is None:
        return None
    try:
        stat = os.stat(path)
    except OSError:
        return None
    if regular_only and not S_ISREG(stat.st_mode):
        return None
    return stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns


_MISSING: Any = object()


class Fields:
    """Reads one YAML mapping field by field. Every key read is marked known; ``finish`` reports the rest
    as unknown so typos never pass silently. Parse functions raise ValueError with a message for the user."""

    def __init__(self, node: Any, path: str, report: Report, line: int | None = None):
        self.path = path
        self.report = report
        self.ok = isinstance(node, dict)
        if not self.ok:  # reported once, here: its fields are not "required" again one by one
            report.error(line, path or "(top level)", f"expected a mapping, got {_kind(node)}")
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
            self.error(key, f"expected a list, got {_kind(value)}")
            return
        lines = getattr(value, "item_lines", [self.line_of(key)] * len(value))
        for index, item in enumerate(value):
            yield item, f"{self.field(key)}[{index}]", lines[index]

    def finish(self) -> None:
        for key in self.node:
            if key not in self._seen:
                self.report.error(self.line_of(key), self.field(str(key)), "unknown field")


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    for types, name in ((bool, "a boolean"), (dict, "a mapping"), (list, "a list"), (str, "a string"),
                        ((int, float), "a number")):
        if isinstance(value, types):
            return name
    return type(value).__name__


# Parsers: each takes a raw YAML value and returns the parsed one or raises ValueError for the user.

_DURATION_RE = re.compile(r"^(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?$")
_DURATION_UNITS = (365 * 86400, 7 * 86400, 86400, 3600, 60, 1, 0.001)


def duration(value: Any) -> float:
    """Prometheus duration (``15s``, ``1h30m``, ``500ms``) in seconds."""
    text = str(value).strip() if isinstance(value, (str, int)) and not isinstance(value, bool) else None
    match = _DURATION_RE.match(text) if text else None
    if not match or not any(match.groups()):
        raise ValueError(f"{excerpt(value)} is not a duration (use Prometheus style: 30s, 5m, 1h, 7d)")
    seconds = sum(int(g) * unit for g, unit in zip(match.groups(), _DURATION_UNITS, strict=True) if g)
    if seconds <= 0:
        raise ValueError(f"{excerpt(value)} must be longer than zero")
    if seconds > MAX_DURATION:
        raise ValueError(f"{excerpt(value)} is longer than ten years")
    return seconds


def duration_or_zero(value: Any) -> float:
    """A duration where 0 (or ``0s``) means "off"."""
    if value == 0 or (isinstance(value, str) and value.strip() in ("0", "0s")):
        return 0.0
    return duration(value)


def format_duration(seconds: float) -> str:
    """A Prometheus duration string for a whole number of milliseconds, in days at most (30d, not 4w2d)."""
    ms = round(seconds * 1000)
    if ms <= 0:
        return "0s"
    parts = []
    for unit, size in (("d", 86400000), ("h", 3600000), ("m", 60000), ("s", 1000), ("ms", 1)):
        if ms >= size:
            parts.append(f"{ms // size}{unit}")
            ms %= size
    return "".join(parts)


_SIZE_RE = re.compile(r"^(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|KiB|MiB|GiB)?$")
_SIZE_UNITS = {None: 1, "B": 1, "KB": 1000, "MB": 1000**2, "GB": 1000**3, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3}


def size(value: Any) -> int:
    """A byte size: ``1048576``, ``512KiB``, ``10MiB``, ``1GB``."""
    match = _SIZE_RE.match(str(value).strip()) if not isinstance(value, bool) else None
    if not match:
        raise ValueError(f"{excerpt(value)} is not a size (use bytes or a unit: 512KiB, 10MiB, 1GB)")
    result = float(match.group(1)) * _SIZE_UNITS[match.group(2)]
    if not result <= MAX_SIZE:
        raise ValueError(f"{excerpt(value)} is larger than 1TiB")
    return int(result)


def string(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {_kind(value)}")
    return value


def nonempty_string(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("expected a non-empty string")
    return value


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {excerpt(value)}")
    return value


def number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"expected a number, got {excerpt(value)}")
    try:
        result = float(value)
    except OverflowError:
        result = math.inf
    if not math.isfinite(result):
        raise ValueError(f"expected a finite number, got {excerpt(value)}")
    return result


def integer(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected a whole number, got {excerpt(value)}")
    return value


def positive_integer(value: Any) -> int:
    result = integer(value)
    if result <= 0:
        raise ValueError(f"must be greater than zero, got {excerpt(value)}")
    return result


def one_of(*choices: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if value not in choices:
            raise ValueError(f"{excerpt(value)} is not one of: {', '.join(choices)}")
        return value

    return parse


def regex(value: Any) -> re.Pattern[str]:
    if not isinstance(value, str):
        raise ValueError(f"expected a regular expression string, got {_kind(value)}")
    try:
        return re.compile(value)
    except re.error as exc:
        raise ValueError(f"regular expression {excerpt(value)} does not compile: {exc}") from None


def list_of(parse: Callable[[Any], T]) -> Callable[[Any], list[T]]:
    def parse_list(value: Any) -> list[T]:
        if not isinstance(value, list):
            raise ValueError(f"expected a list, got {_kind(value)}")
        result = []
        for index, item in enumerate(value):
            try:
                result.append(parse(item))
            except ValueError as exc:
                raise ValueError(f"item {index}: {exc}") from None
        return result

    return parse_list


METRIC_NAME_RE = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
LABEL_NAME_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def metric_name(value: Any) -> str:
    if not isinstance(value, str) or not METRIC_NAME_RE.match(value):
        raise ValueError(f"{excerpt(value)} is not a valid Prometheus metric name")
    return value


def is_label_name(value: Any) -> bool:
    """A label name a user may set (the ``__`` prefix is Prometheus's own)."""
    return isinstance(value, str) and LABEL_NAME_RE.match(value) is not None and not value.startswith("__")


def label_name(value: Any) -> str:
    if not is_label_name(value):
        raise ValueError(f"{excerpt(value)} is not a valid Prometheus label name")
    return value


def label_map(value: Any) -> dict[str, str]:
    """A mapping of label name to a string value (numbers and booleans are accepted and stringified)."""
    if not isinstance(value, dict):
        raise ValueError(f"expected a mapping of label names to values, got {_kind(value)}")
    result = {}
    for key, item in value.items():
        label_name(key)
        if isinstance(item, (dict, list)) or item is None:
            raise ValueError(f"label {excerpt(key)}: expected a value, got {_kind(item)}")
        result[key] = str(item).lower() if isinstance(item, bool) else str(item)
    return result


def string_map(value: Any) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(v, (str, int, float)) for v in value.values()):
        raise ValueError("expected a mapping of names to string values")
    return {str(k): str(v) for k, v in value.items()}
