"""The head of an HTTP/1.x response: status line and header fields, parsed strictly enough that a server which
does not speak HTTP is named as such, and leniently where Go's client (so blackbox_exporter) is lenient.

``head_end`` finds where a head ends in what has arrived so far; ``parse_head`` reads it. Both work on bytes
and never look past the head's end: whatever follows is the body. Field values are read as ISO-8859-1 (the
bytes HTTP allows in them, one character each), names are compared in lower case.
"""

from __future__ import annotations

import re

from agent.formatting import excerpt

MAX_HEAD_BYTES = 1024 * 1024  # a head longer than this is refused (Go's client allows 10 MiB; aiohttp 8 KiB lines)
MAX_FIELDS = 1000

# HTTP-version SP status-code [SP reason-phrase]: Go accepts a status line without a reason, so do we.
_STATUS_LINE = re.compile(rb"HTTP/(\d)\.(\d) (\d{3})(?: ([^\r\n]*))?")
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BLANKS = b" \t"
# A header block of well-formed CRLF lines, no folding: the common case, checked in one pass and split cheaply
_PLAIN_FIELDS = re.compile(rb"(?:[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[^\x00-\x08\x0a-\x1f\x7f]*\r\n)*\r\n")
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


class InvalidResponse(ValueError):
    """The target answered something that is not an HTTP/1.x response (the words say what)."""


class Head:
    """A parsed response head."""

    __slots__ = ("version", "status", "reason", "fields", "_index")

    def __init__(self, version: tuple[int, int], status: int, reason: str, fields: list[tuple[str, str]]):
        self.version = version
        self.status = status
        self.reason = reason
        self.fields = fields  # (lower-case name, value) in the order received
        self._index: dict[str, list[str]] | None = None

    @property
    def protocol(self) -> str:
        """``HTTP/1.1``, as Go's ``Response.Proto`` (what ``valid_http_versions`` lists)."""
        return f"HTTP/{self.version[0]}.{self.version[1]}"

    def get(self, name: str) -> str | None:
        """The first value of a field (``name`` in lower case)."""
        for key, value in self.fields:
            if key == name:
                return value
        return None

    def values(self, name: str) -> list[str]:
        """Every value of a field (``name`` in lower case), in order."""
        if self._index is None:
            index: dict[str, list[str]] = {}
            for key, value in self.fields:
                index.setdefault(key, []).append(value)
            self._index = index
        return self._index.get(name, [])


def head_end(buffer: bytes | bytearray, start: int = 0) -> int:
    """The index just past the blank line that ends a head in ``buffer`` (CRLF or bare LF line ends, as Go
    reads them), or -1 when it has not arrived yet. ``start``: where to resume a search (bytes before it held
    no end)."""
    position = buffer.find(b"\n", start)
    while position >= 0:
        following = buffer[position + 1:position + 3]
        if following[:1] == b"\n":
            return position + 2
        if following == b"\r\n":
            return position + 3
        if len(following) < 2 and following[:1] in (b"", b"\r"):
            return -1  # the line after this one has not arrived yet
        position = buffer.find(b"\n", position + 1)
    return -1


def parse_head(data: bytes) -> Head:
    """A complete head (status line, fields, the blank line) -> Head; raises InvalidResponse saying what is
    wrong. Continuation lines (obsolete line folding) are joined to the field before them, as Go does."""
    status_end = data.find(b"\r\n")
    if status_end > 0 and _PLAIN_FIELDS.fullmatch(data, status_end + 2):
        matched = _STATUS_LINE.fullmatch(data, 0, status_end)
        if matched is not None and matched.group(1) == b"1" and matched.group(3)[0] != 48:  # "0"
            fields = []
            for line in data[status_end + 2:-4].decode("latin-1").split("\r\n") if len(data) > status_end + 4 else ():
                name, _, value = line.partition(":")
                fields.append((name.lower(), value.strip(" \t")))
            if len(fields) <= MAX_FIELDS:
                _, minor, code, reason = matched.groups()
                return Head((1, minor[0] - 48), int(code), (reason or b"").decode("latin-1"), fields)
    return _parse_head_slowly(data)


def _parse_head_slowly(data: bytes) -> Head:
    """parse_head for heads with bare LF line ends, folded lines, or something wrong (to say what)."""
    lines = data.split(b"\n")
    status_line = lines[0].removesuffix(b"\r")
    matched = _STATUS_LINE.fullmatch(status_line)
    if matched is None:
        raise InvalidResponse(f"not an HTTP response: {_shown(status_line)}")
    major, minor, code, reason = matched.groups()
    if major != b"1":
        raise InvalidResponse(f"HTTP/{major.decode()}.{minor.decode()} is not HTTP/1.x")
    status = int(code)
    if status < 100:
        raise InvalidResponse(f"status {status} is not an HTTP status code")
    fields: list[tuple[str, str]] = []
    for raw in lines[1:]:
        line = raw.removesuffix(b"\r")
        if not line:
            break
        if line[0] in b" \t":
            if not fields:
                raise InvalidResponse(f"a header line starts with white space: {_shown(line)}")
            name, value = fields[-1]
            fields[-1] = (name, (value + " " + _value(line.strip(_BLANKS))).strip())
            continue
        colon = line.find(b":")
        if colon <= 0 or not _TOKEN.fullmatch(line, 0, colon):
            raise InvalidResponse(f"not a header line: {_shown(line)}")
        fields.append((line[:colon].decode("ascii").lower(), _value(line[colon + 1:].strip(_BLANKS))))
        if len(fields) > MAX_FIELDS:
            raise InvalidResponse(f"more than {MAX_FIELDS} header fields")
    return Head((int(major), int(minor)), status, (reason or b"").decode("latin-1"), fields)


def _value(raw: bytes) -> str:
    if _BAD_VALUE.search(raw):
        raise InvalidResponse(f"a header value holds a control character: {_shown(raw)}")
    return raw.decode("latin-1")


def _shown(raw: bytes) -> str:
    return excerpt(raw[:60].decode("latin-1"))
