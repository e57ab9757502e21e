"""Follows one log file path across rotations, handing out complete lines only.

Rotation is recognised by (device, inode) and by the size shrinking below what was read, never by name
alone: rename + create and delete + recreate show a new inode at the path, copytruncate and truncation in
place show a shorter file. A replaced file stays open and is drained to its end, including lines its writer
appends before it reopens, before it is closed.

Memory stays bounded whatever is written: an unterminated line longer than ``max_line_bytes`` is dropped as
it grows and the rest of it, up to its newline, is skipped; it is counted once in ``too_long``. Only regular
files are followed: a directory or a FIFO matched by a glob is refused by ``FileTail.open``.

Each open file may carry a framer (``agent.sources.logs.framing``) that holds back lines of records not yet
complete; the position saved for a path is then where the held lines begin, so a restart reads them again.
"""

from __future__ import annotations

import os
import stat as stat_module
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from agent.sources.logs.positions import Position

if TYPE_CHECKING:
    from agent.sources.logs.framing import Framer

DRAIN_GRACE = 2.0  # seconds a replaced file must stay quiet before it is closed
DEFAULT_MAX_LINE = 100 * 1024
_SKIP_READS = 64  # chunks of an over-long line skipped per read() call


class NotAFile(OSError):
    """The path exists but is not a regular file (a directory matched by a glob, a FIFO, a device)."""


@dataclass
class _OpenFile:
    fd: int
    dev: int
    ino: int
    offset: int  # end of the last complete line handed out (or skipped)
    max_line: int = DEFAULT_MAX_LINE
    partial: bytes = b""
    skipping: bool = False  # inside a line already counted as too long: drop up to its newline
    too_long: int = 0  # lines dropped for their length, not yet collected by the tail
    quiet_since: float | None = None
    framer: Framer | None = None  # assembles this file's lines into records, holding back incomplete ones
    truncated: bool = False  # set when the file shrank: what the framer holds is complete
    last_start: int = 0  # offset of the first byte the last read() returned

    def read(self, max_bytes: int) -> bytes:
        """Complete lines (ending in newline) from the current offset, at most about ``max_bytes``; a line longer
        than ``max_line`` never accumulates: it is skipped and counted."""
        data = os.pread(self.fd, max_bytes, self.offset + len(self.partial))
        for _ in range(_SKIP_READS):  # the rest of an over-long line: read past it, but not forever in one call
            if not self.skipping or not data:
                break
            newline = data.find(b"\n")
            if newline < 0:
                self.offset += len(data)
                data = os.pread(self.fd, max_bytes, self.offset)
                continue
            self.offset += newline + 1
            self.skipping = False
            data = data[newline + 1:]
        if not data or self.skipping:
            return b""
        self.last_start = self.offset
        buffer = self.partial + data
        end = buffer.rfind(b"\n") + 1
        self.partial = buffer[end:]
        self.offset += end
        if len(self.partial) > self.max_line:
            self.offset += len(self.partial)
            self.partial = b""
            self.skipping = True
            self.too_long += 1
        return buffer[:end]

    def unterminated(self) -> bytes:
        """The last line of a file its writer left without a newline, unless it was too long."""
        partial, self.partial = self.partial, b""
        return b"" if self.skipping else partial

    def size(self) -> int:
        return os.fstat(self.fd).st_size

    def read_to_end(self) -> bool:
        """Whether nothing is written past what was read (an unterminated last line aside)."""
        return self.size() <= self.offset + len(self.partial)


@dataclass
class Chunk:
    handle: _OpenFile  # the open file the lines come from (and its framer)
    data: bytes  # complete lines, each ending in a newline; may be empty when ``ends``
    start: int  # offset of data's first byte in that file
    ends: bool = False  # nothing read later continues these lines: the file was closed or truncated


@dataclass
class FileTail:
    path: str
    max_line: int = DEFAULT_MAX_LINE
    new_framer: Callable[[], Framer] | None = None
    current: _OpenFile | None = None
    draining: list[_OpenFile] = field(default_factory=list)
    rotations: int = 0

    @classmethod
    def open(cls, path: str, saved: Position | None, start_at_end: bool, max_line: int = DEFAULT_MAX_LINE,
             new_framer: Callable[[], Framer] | None = None) -> tuple[FileTail, str | None]:
        """Start following ``path``; returns the tail and a warning for the log, if any. Raises NotAFile for a
        path that is not a regular file."""
        tail = cls(path, max_line, new_framer)
        warning = None
        try:
            stat = os.stat(path)
        except OSError:
            return tail, None
        if not stat_module.S_ISREG(stat.st_mode):
            raise NotAFile(f"{path} is not a regular file")
        if saved is not None and (saved.dev, saved.ino) != (stat.st_dev, stat.st_ino):
            old = _find_inode(path, saved, max_line, new_framer)
            if old is not None:  # rotated while we were down: finish the old file first
                tail.draining.append(old)
            else:
                warning = "file replaced while the agent was down and the old one is gone; reading the new one " \
                          "from the beginning"
            saved = None
        tail.current = _open(path, max_line, new_framer)
        if tail.current is None:
            return tail, None
        if saved is not None:
            if saved.offset > stat.st_size:
                warning = f"saved offset {saved.offset} is past the end ({stat.st_size} bytes): file was " \
                          "truncated while the agent was down; reading from the beginning"
            else:
                tail.current.offset = saved.offset
        elif start_at_end:
            tail.current.offset = _last_line_end(tail.current.fd, stat.st_size)
        return tail, warning

    def read(self, max_bytes: int) -> Chunk | None:
        """The next block of complete lines, draining replaced files first; None when nothing is new."""
        while self.draining:
            old = self.draining[0]
            data = old.read(max_bytes)
            if data:
                old.quiet_since = None
                return Chunk(old, data, old.last_start)
            now = time.monotonic()
            if old.quiet_since is None:
                old.quiet_since = now
            if now - old.quiet_since < DRAIN_GRACE:
                break
            self.draining.pop(0)
            os.close(old.fd)
            start = old.offset
            last = old.unterminated()  # its writer has moved on: an unterminated last line is complete
            return Chunk(old, last + b"\n" if last else b"", start, ends=True)
        self._check_rotation()
        current = self.current
        if current is None:
            return None
        if current.truncated:
            current.truncated = False
            return Chunk(current, b"", 0, ends=True)
        data = current.read(max_bytes)
        return Chunk(current, data, current.last_start) if data else None

    def _check_rotation(self) -> None:
        try:
            stat = os.stat(self.path)
        except OSError:
            stat = None
        current = self.current
        if stat is not None and not stat_module.S_ISREG(stat.st_mode):
            stat = None  # replaced by something that is not a file: as if deleted
        if current is None:
            if stat is not None:
                self.current = _open(self.path, self.max_line, self.new_framer)
            return
        if stat is None or (stat.st_dev, stat.st_ino) != (current.dev, current.ino):
            self.draining.append(current)
            self.current = _open(self.path, self.max_line, self.new_framer) if stat else None
            self.rotations += 1
        elif stat.st_size < current.offset + len(current.partial):
            current.offset = 0
            current.partial = b""
            current.skipping = False
            current.truncated = True
            self.rotations += 1

    def collect_too_long(self) -> int:
        """Lines skipped for their length since the last call."""
        count = 0
        for handle in self.handles():
            count, handle.too_long = count + handle.too_long, 0
        return count

    def position(self) -> Position | None:
        """Where to resume the current file: after the last line counted, before any line held back."""
        current = self.current
        if current is None:
            return None
        held = current.framer.resume_offset if current.framer is not None else None
        return Position(current.dev, current.ino, current.offset if held is None else held)

    def handles(self) -> list[_OpenFile]:
        return [*self.draining, *([self.current] if self.current else [])]

    def lag(self) -> int:
        """Bytes written but not yet handed out, over the current and replaced files."""
        total = 0
        for handle in self.handles():
            try:
                total += max(0, handle.size() - handle.offset)
            except OSError:
                pass
        return total

    @property
    def watching(self) -> bool:
        return self.current is not None or bool(self.draining)

    def close(self) -> None:
        for handle in self.handles():
            os.close(handle.fd)
        self.draining.clear()
        self.current = None


def _open(path: str, max_line: int, new_framer: Callable[[], Framer] | None = None) -> _OpenFile | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)  # NONBLOCK: a FIFO swapped in never hangs
    except OSError:
        return None
    stat = os.fstat(fd)
    if not stat_module.S_ISREG(stat.st_mode):
        os.close(fd)
        return None
    return _OpenFile(fd, stat.st_dev, stat.st_ino, 0, max_line, framer=new_framer() if new_framer else None)


def _last_line_end(fd: int, size: int) -> int:
    """Offset just after the last newline before ``size``: start at the end without half a line."""
    position = size
    while position > 0:
        start = max(0, position - 65536)
        chunk = os.pread(fd, position - start, start)
        index = chunk.rfind(b"\n")
        if index >= 0:
            return start + index + 1
        position = start
    return 0


def _find_inode(path: str, saved: Position, max_line: int,
                new_framer: Callable[[], Framer] | None = None) -> _OpenFile | None:
    """The file that used to be ``path`` (same device and inode), if it still sits in the same directory."""
    directory = os.path.dirname(path) or "."
    try:
        names = os.listdir(directory)
    except OSError:
        return None
    for name in names:
        candidate = os.path.join(directory, name)
        try:
            stat = os.stat(candidate)
        except OSError:
            continue
        if (stat.st_dev, stat.st_ino) == (saved.dev, saved.ino) and stat.st_size >= saved.offset:
            handle = _open(candidate, max_line, new_framer)
            if handle is not None:
                handle.offset = saved.offset
            return handle
    return None
