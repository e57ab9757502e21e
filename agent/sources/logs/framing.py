"""The lines of one open file into records, before any ``format`` sees them.

Two stages, both optional:

1. ``container``: each line is in the container runtime's format. CRI (containerd, CRI-O) writes
   ``<time> <stdout|stderr> <P|F> <content>``, where ``P`` marks a piece of a longer line that continues in
   the next line of the same stream; docker's json-file driver writes ``{"log": "...\\n", "stream": ...}``,
   where a piece without the final newline continues. Pieces are joined per stream (stdout and stderr
   interleave) into the line the application wrote.
2. ``multiline``: a line that the ``start`` regex finds begins a record; the lines after it that it does not
   find continue it (a stack trace), per stream, up to ``max_lines``. A record is complete when the next one
   starts, at ``max_lines``, when its file ends (closed after a rotation, or truncated), or when no line has
   come for ``timeout`` (the caller calls ``expire`` only once the file has been read to its end).

Records leave in the order of their first line. Everything from the first record not yet complete onwards is
held back, even complete records of the other stream, so what has been handed out is always a prefix of the
file: ``resume_offset`` (where the held part begins) is the offset to save, and a restart reads the held
records again from their first line, whole, without counting anything twice. A framer belongs to one open
file (one inode), so a record never joins lines of two files across a rotation.
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass, field

from agent.sources.logs.config import DEFAULT_MULTILINE_TIMEOUT, Multiline

# What is held back is cut at this many times max_line_bytes: the head is completed as it is. A head cut off
# while too long (a "P" run with no end) keeps dropping its stream's pieces up to its last: one record, counted
# once as too long.
HOLD_FACTOR = 8
_CRI_STREAMS = ("stdout", "stderr")


@dataclass
class Framed:
    records: list[str] = field(default_factory=list)
    malformed: int = 0  # lines not in the runtime's format, or not UTF-8
    too_long: int = 0  # records that grew past max_line_bytes from partial lines

    def extend(self, other: Framed) -> None:
        self.records += other.records
        self.malformed += other.malformed
        self.too_long += other.too_long


class _Entry:
    """A record being assembled, or complete and waiting for the ones before it."""

    __slots__ = ("begin", "parts", "size", "lines", "done", "bad", "fed_at")

    def __init__(self, begin: int, fed_at: float, bad: str | None = None):
        self.begin = begin  # file offset of its first line
        self.parts: list[str] = []
        self.size = 0  # characters in parts
        self.lines = 0  # lines joined by the multiline stage
        self.done = bad is not None
        self.bad = bad  # None, "malformed" or "too_long"
        self.fed_at = fed_at


def _plain(line: str) -> tuple[str, bool, str] | None:
    return "", True, line


def _cri(line: str) -> tuple[str, bool, str] | None:
    fields = line.split(" ", 3)
    if len(fields) < 3 or fields[1] not in _CRI_STREAMS:
        return None
    tag = fields[2].partition(":")[0]  # tags are ":"-separated; the first says partial or full
    if tag not in ("P", "F"):
        return None
    return fields[1], tag == "F", fields[3] if len(fields) == 4 else ""


def _docker(line: str) -> tuple[str, bool, str] | None:
    try:
        record = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if not isinstance(record, dict) or not isinstance(record.get("log"), str):
        return None
    stream = record.get("stream")
    text: str = record["log"]
    complete = text.endswith("\n")
    return stream if isinstance(stream, str) else "", complete, text[:-1].rstrip("\r") if complete else text


PARSERS = {None: _plain, "cri": _cri, "docker": _docker}


class Framer:
    def __init__(self, container: str | None, multiline: Multiline | None, max_bytes: int):
        self._parse = PARSERS[container]
        self._start = multiline.start.search if multiline else None
        self._max_lines = multiline.max_lines if multiline else 1
        self.timeout = multiline.timeout if multiline else DEFAULT_MULTILINE_TIMEOUT
        self._max_bytes = max_bytes
        self._queue: deque[_Entry] = deque()
        self._pieces: dict[str, _Entry] = {}  # per stream: a line whose pieces are still coming (container)
        self._records: dict[str, _Entry] = {}  # per stream: a multi-line record that may still continue
        self._dropping: set[str] = set()  # streams whose current record was cut off held back: drop its pieces
        self._end = 0  # offset just after the last line fed

    @property
    def resume_offset(self) -> int | None:
        """Where the records held back begin; None when nothing is held."""
        return self._queue[0].begin if self._queue else None

    @property
    def pending(self) -> bool:
        return bool(self._queue)

    def feed(self, lines: list[bytes], start: int, now: float) -> Framed:
        """Complete lines (without their newline) read from ``start`` on."""
        offset = start
        for raw in lines:
            self._line(raw, offset, now)
            offset += len(raw) + 1
        self._end = offset
        return self._release()

    def expire(self, now: float) -> Framed:
        """Complete what has waited ``timeout`` for a next line; call once the file is read to its end."""
        oldest = now - self.timeout
        for waiting in (self._pieces, self._records):
            for stream, entry in list(waiting.items()):
                if entry.fed_at <= oldest:
                    entry.done = True
                    del waiting[stream]
        return self._release()

    def flush(self) -> Framed:
        """Complete everything: the file ends here (closed after a rotation, or truncated)."""
        for entry in self._queue:
            entry.done = True
        self._pieces.clear()
        self._records.clear()
        self._dropping.clear()
        return self._release()

    def _line(self, raw: bytes, begin: int, now: float) -> None:
        try:
            parsed = self._parse(raw.decode("utf-8").rstrip("\r"))
        except UnicodeDecodeError:
            parsed = None
        if parsed is None:
            self._queue.append(_Entry(begin, now, bad="malformed"))
            return
        stream, complete, content = parsed
        if stream in self._dropping:  # the rest of a record already counted as too long
            if complete:
                self._dropping.discard(stream)
            return
        entry = self._pieces.get(stream)
        if entry is None:
            entry = _Entry(begin, now)
            self._queue.append(entry)
        entry.fed_at = now
        if entry.bad is None:
            entry.parts.append(content)
            entry.size += len(content)
            if entry.size > self._max_bytes:  # too long: the rest of its pieces are dropped as they come
                entry.bad, entry.parts = "too_long", []
        if not complete:
            self._pieces[stream] = entry
            return
        self._pieces.pop(stream, None)
        if len(entry.parts) > 1:
            entry.parts = ["".join(entry.parts)]  # one line again: multi-line records join lines with "\n"
        if entry.bad is not None or self._start is None:
            entry.done = True
            return
        self._join(stream, entry)

    def _join(self, stream: str, entry: _Entry) -> None:
        """``entry`` holds one whole line: it starts a record or continues the stream's current one."""
        record = self._records.get(stream)
        line = entry.parts[0]
        if record is not None and self._start is not None and self._start(line) is None \
                and record.size + 1 + len(line) <= self._max_bytes:
            record.parts.append(line)
            record.size += 1 + len(line)
            record.lines += 1
            record.fed_at = entry.fed_at
            if self._queue[-1] is entry:
                self._queue.pop()
            else:
                self._queue.remove(entry)
            if record.lines >= self._max_lines:
                record.done = True
                del self._records[stream]
            return
        if record is not None:
            record.done = True
        entry.lines = 1
        if self._max_lines == 1:
            entry.done = True
            self._records.pop(stream, None)
        else:
            self._records[stream] = entry

    def _release(self) -> Framed:
        framed = Framed()
        queue = self._queue
        while queue:
            head = queue[0]
            if not head.done:
                if self._end - head.begin <= HOLD_FACTOR * self._max_bytes:
                    break
                head.done = True  # a head that never completes must not hold back an unbounded tail
                for stream in [s for s, entry in self._pieces.items() if entry is head]:
                    del self._pieces[stream]
                    if head.bad == "too_long":  # its pieces still to come belong to it: counted once
                        self._dropping.add(stream)
                for stream in [s for s, entry in self._records.items() if entry is head]:
                    del self._records[stream]
            queue.popleft()
            if head.bad == "malformed":
                framed.malformed += 1
            elif head.bad == "too_long":
                framed.too_long += 1
            else:
                framed.records.append("\n".join(head.parts))
        return framed
