"""Follows one log file path across rotations, handing out complete lines only.

Rotation is recognised by (device, inode) and by the size shrinking below what was read, never by name
alone: rename + create and delete + recreate show a new inode at the path, copytruncate and truncation in
place show a shorter file. A replaced file stays open and is drained to its end, including lines its writer
appends before it reopens, before it is closed.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from agent.sources.logs.positions import Position

DRAIN_GRACE = 2.0  # seconds a replaced file must stay quiet before it is closed


@dataclass
class _OpenFile:
    fd: int
    dev: int
    ino: int
    offset: int  # end of the last complete line handed out
    partial: bytes = b""
    quiet_since: float | None = None

    def read(self, max_bytes: int) -> bytes:
        """Complete lines (ending in newline) from the current offset, at most about ``max_bytes``."""
        data = os.pread(self.fd, max_bytes, self.offset + len(self.partial))
        if not data:
            return b""
        buffer = self.partial + data
        end = buffer.rfind(b"\n") + 1
        self.partial = buffer[end:]
        self.offset += end
        return buffer[:end]

    def size(self) -> int:
        return os.fstat(self.fd).st_size


@dataclass
class FileTail:
    path: str
    current: _OpenFile | None = None
    draining: list[_OpenFile] = field(default_factory=list)
    rotations: int = 0

    @classmethod
    def open(cls, path: str, saved: Position | None, start_at_end: bool) -> tuple[FileTail, str | None]:
        """Start following ``path``; returns the tail and a warning for the log, if any."""
        tail = cls(path)
        warning = None
        try:
            stat = os.stat(path)
        except OSError:
            return tail, None
        if saved is not None and (saved.dev, saved.ino) != (stat.st_dev, stat.st_ino):
            old = _find_inode(path, saved)
            if old is not None:  # rotated while we were down: finish the old file first
                tail.draining.append(old)
            else:
                warning = "file replaced while the agent was down and the old one is gone; reading the new one " \
                          "from the beginning"
            saved = None
        tail.current = _open(path, stat.st_dev, stat.st_ino)
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

    def read(self, max_bytes: int) -> bytes:
        """The next block of complete lines, draining replaced files first; b"" when nothing is new."""
        while self.draining:
            old = self.draining[0]
            data = old.read(max_bytes)
            if data:
                old.quiet_since = None
                return data
            now = time.monotonic()
            if old.quiet_since is None:
                old.quiet_since = now
            if now - old.quiet_since < DRAIN_GRACE:
                break
            self.draining.pop(0)
            os.close(old.fd)
            if old.partial:  # its writer has moved on: the unterminated last line is complete
                return old.partial + b"\n"
        self._check_rotation()
        return self.current.read(max_bytes) if self.current else b""

    def _check_rotation(self) -> None:
        try:
            stat = os.stat(self.path)
        except OSError:
            stat = None
        current = self.current
        if current is None:
            if stat is not None:
                self.current = _open(self.path, stat.st_dev, stat.st_ino)
            return
        if stat is None or (stat.st_dev, stat.st_ino) != (current.dev, current.ino):
            self.draining.append(current)
            self.current = _open(self.path, stat.st_dev, stat.st_ino) if stat else None
            self.rotations += 1
        elif stat.st_size < current.offset + len(current.partial):
            current.offset = 0
            current.partial = b""
            self.rotations += 1

    def position(self) -> Position | None:
        if self.current is None:
            return None
        return Position(self.current.dev, self.current.ino, self.current.offset)

    def lag(self) -> int:
        """Bytes written but not yet handed out, over the current and replaced files."""
        total = 0
        for handle in (*self.draining, *([self.current] if self.current else [])):
            try:
                total += max(0, handle.size() - handle.offset)
            except OSError:
                pass
        return total

    @property
    def watching(self) -> bool:
        return self.current is not None or bool(self.draining)

    def close(self) -> None:
        for handle in (*self.draining, *([self.current] if self.current else [])):
            os.close(handle.fd)
        self.draining.clear()
        self.current = None


def _open(path: str, dev: int, ino: int) -> _OpenFile | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    stat = os.fstat(fd)
    return _OpenFile(fd, stat.st_dev, stat.st_ino, 0)


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


def _find_inode(path: str, saved: Position) -> _OpenFile | None:
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
            handle = _open(candidate, stat.st_dev, stat.st_ino)
            if handle is not None:
                handle.offset = saved.offset
            return handle
    return None
