"""How a record's text becomes fields (logfmt, JSON, one chunk of JSON lines at once) and how a field's value
reads as a label or a number. Pure functions, no I/O."""

from __future__ import annotations

import json
import math
import operator
import re
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# key=value, key="quoted \"value\"", or any other run of non-space (skipped). Possessive quantifiers: a token
# with no "=" is consumed once, never re-scanned from each of its positions, so a line parses in linear time.
_LOGFMT_RE = re.compile(r'([^\s="]++)=(?:"((?:[^"\\]++|\\.)*+)"|(\S*+))|\S++')
_ESCAPE_RE = re.compile(r"\\(.)")
# In a chunk of JSON objects joined as [line\n,line...], only a line holding "}" "," "{" (spaces aside) can hold
# two objects at the top level.
_TWO_OBJECTS = re.compile(r"\}[ \t\r]*,[ \t\r]*\{")
_TWO_OBJECTS_BYTES = re.compile(rb"\}[ \t\r]*,[ \t\r]*\{")


@dataclass
class BatchResult:
    lines: int = 0
    unmatched: int = 0
    malformed: int = 0


def parse_logfmt(line: str) -> dict[str, str]:
    """logfmt fields; a later duplicate key wins. Linear in the line's length whatever it holds."""
    fields = {}
    for found in _LOGFMT_RE.finditer(line):
        key = found.group(1)
        if key is None:
            continue
        quoted = found.group(2)
        if quoted is None:
            fields[key] = found.group(3)
        else:
            fields[key] = _ESCAPE_RE.sub(r"\1", quoted) if "\\" in quoted else quoted
    return fields


def parse_value(raw: object) -> float | str:
    """A field's number, or why it is not one (a reason of SKIP_REASONS; ``negative`` is the caller's)."""
    if raw is None:
        return "missing"
    if not isinstance(raw, (str, int, float)):  # a JSON object or list (bool is an int)
        return "not_a_number"
    try:
        value = float(raw)
    except ValueError:
        return "not_a_number"
    except OverflowError:  # an integer beyond float's range
        return "not_finite"
    return value if math.isfinite(value) else "not_finite"


def label_text(value: object) -> str:
    """A field as a label value: JSON scalars as they read in the line, a missing field as empty."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        return str(value)
    return json.dumps(value, separators=(",", ":"), sort_keys=True, default=str)[:1024]


def hashable(value: object) -> object:
    return value if isinstance(value, (str, int, float, bool, type(None))) else label_text(value)


def field_getter(name: str) -> Callable[[dict], Any]:
    """Reads one field of a parsed record: the key ``name``, or for a dotted name that is no key, the nested
    objects along it (``http.status`` is ``{"http": {"status": ...}}``)."""
    if "." not in name:
        return operator.methodcaller("get", name)
    path = name.split(".")

    def nested(record: dict) -> Any:
        value = record.get(name)
        if value is not None:
            return value
        value = record
        for part in path:
            if not isinstance(value, dict):
                return None
            value = value.get(part)
        return value

    return nested


def json_object(line: str) -> dict | None:
    try:
        fields = json.loads(line)
    except (ValueError, RecursionError):
        return None
    return fields if isinstance(fields, dict) else None


def json_objects(lines: list[str], result: BatchResult) -> list[dict]:
    """The JSON object of each line; the others are counted as malformed.

    The chunk is parsed as one document, [line\\n,line...], when that is sure to give each line's own object:
    no string can run across a newline (JSON forbids raw control characters in strings), and a line can only
    hold two top-level objects with "}", "," and "{" in a row, which the chunk is searched for first. Then
    as many objects as lines means every separating comma is at the top level, so each object is exactly one
    line's text."""
    if lines:
        text = "[" + "\n,".join(lines) + "]"
        if _TWO_OBJECTS.search(text) is None:
            document = _document(text, len(lines))
            if document is not None:
                return document
    objects = []
    for line in lines:
        fields = json_object(line)
        if fields is None:
            result.malformed += 1
        else:
            objects.append(fields)
    return objects


def json_chunk(data: bytes) -> list[dict] | None:
    """The JSON object of each line of ``data`` (complete lines, each ending in a newline), parsed as one
    document from the bytes as read (as ``json_objects`` does from text); None when that is not sure to give
    what each line gives alone: the caller then decodes and reads the lines one by one."""
    if not data or _TWO_OBJECTS_BYTES.search(data) is not None:
        return None
    return _document(b"[" + data[:-1].replace(b"\n", b"\n,") + b"]", data.count(b"\n"))


class JsonColumns:
    """The top-level fields ``names`` of every line of a chunk of JSON objects, as columns, read by msgspec into
    records that keep only those fields (the others are skipped, never made into Python objects): a third
    less time than whole dicts on access logs. Values are what json gives; a missing field is None."""

    def __init__(self, names: tuple[str, ...]):
        msgspec = _msgspec()
        attributes = [f"field{index}" for index in range(len(names))]
        record = msgspec.defstruct("Record", [(name, Any, None) for name in attributes],
                                   rename=dict(zip(attributes, names, strict=True)))
        self._decoder = msgspec.json.Decoder(types.GenericAlias(list, (record,)))
        self._error = msgspec.DecodeError
        self._getters = [operator.attrgetter(name) for name in attributes]

    def read(self, data: bytes) -> tuple[list[list], int] | None:
        """The columns of complete lines (bytes, each ending in a newline) and how many lines; None when that
        is not sure to give what each line gives alone (as ``json_chunk``)."""
        if not data or _TWO_OBJECTS_BYTES.search(data) is not None:
            return None
        try:
            records = self._decoder.decode(b"[" + data[:-1].replace(b"\n", b"\n,") + b"]")
        except (self._error, RecursionError):  # not all objects, or what only json reads (NaN...)
            return None
        if len(records) != data.count(b"\n"):
            return None
        return [list(map(get, records)) for get in self._getters], len(records)


def _msgspec() -> types.ModuleType:
    """msgspec, imported by the first source reading JSON, without typing_extensions (240 KiB resident) when
    nothing has imported that yet: msgspec reads type hints through it only to know typing_extensions' own
    TypedDict and Required, and uses typing's without it; the records here are Structs of Any fields."""
    if "msgspec" not in sys.modules and "typing_extensions" not in sys.modules:
        sys.modules["typing_extensions"] = None  # type: ignore[assignment]  # its import raises ImportError
        try:
            import msgspec
        finally:
            del sys.modules["typing_extensions"]
    import msgspec

    return msgspec


def _document(text: str | bytes, lines: int) -> list[dict] | None:
    """``text``, a JSON array, when it holds ``lines`` objects. Read by msgspec (2.2x json's speed here), which
    gives json's values wherever it accepts the text (big integers too); what it refuses that json reads (NaN,
    1e400, lone surrogates) goes to json."""
    msgspec = _msgspec()
    try:
        document = msgspec.json.decode(text)
    except (msgspec.DecodeError, RecursionError):
        try:
            document = json.loads(text)
        except (ValueError, RecursionError):
            return None
    if len(document) == lines and set(map(type, document)) == {dict}:
        return document
    return None


def logfmt_records(lines: list[str], result: BatchResult) -> list[dict]:
    records = []
    for line in lines:
        fields = parse_logfmt(line)
        if fields:
            records.append(fields)
        else:
            result.unmatched += 1
    return records
