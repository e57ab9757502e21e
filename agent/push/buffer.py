"""What an endpoint has not yet delivered: records (one request body each) in order, on disk, bounded.

Every record goes through the buffer, sent or not, so one path keeps the order and survives a restart: records
are appended to segment files (``<number>.seg``) and read back by the sender; ``cursor`` says how far the
receiver has acknowledged. A record is one ``write`` of a header (payload length, CRC-32, samples, round
timestamp) and the payload, so a SIGKILL leaves whole records (the kernel finishes a write to the page cache);
a torn tail (power loss, a full disk mid-write) is cut off when the buffer opens. The cursor is replaced
atomically (a new file renamed over the old) when a round is acknowledged, so after a restart at most the last
round is sent again: the same samples with the same timestamps, which receivers accept as duplicates, never as
out of order.

Bounded: past ``max_bytes`` the oldest segment is deleted and its unsent samples counted as dropped. When the
disk refuses (full, read-only, unwritable, no directory configured), records wait in memory instead, at most
``memory_samples`` of them (the oldest dropped, counted); the disk is tried again 30 s later, once the records
in memory (newer than any on disk) are all sent. A
record that fails its CRC is skipped with the rest of its segment (counted): nothing after a torn record can
be trusted to start where its header says.

Blocking: the endpoint calls every method from its own single I/O thread, never from the event loop, so a slow
or hung disk never delays probes or scrapes.
"""

from __future__ import annotations

import contextlib
import errno
import os
import struct
import time
import zlib
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from agent.config.files import open_no_follow, write_atomically

_HEADER = struct.Struct("<IIIq")  # payload length, CRC-32 of the rest of the header and the payload, samples, ms
_SUFFIX = ".seg"
_CURSOR = "cursor"
_CURSOR_FORMAT = struct.Struct("<QQ")  # segment number, offset
MIN_SEGMENT = 1 << 20
MAX_SEGMENT = 64 << 20
DISK_RETRY_SECONDS = 30.0  # after the disk refused, how long records stay in memory before it is tried again


@dataclass(frozen=True)
class Record:
    payload: bytes  # the request body, compressed
    samples: int
    timestamp_ms: int

    @property
    def size(self) -> int:
        return _HEADER.size + len(self.payload)


@dataclass
class Position:
    """Where a record was read from: (segment, offset after it), or a memory record's sequence number."""

    segment: int
    offset: int
    memory: bool = False


@dataclass
class Losses:
    """What the buffer had to give up, by cause (counters the endpoint exposes)."""

    dropped_full: int = 0  # samples of records deleted because the buffer reached its size
    corrupted: int = 0  # torn or damaged records found (the rest of their segment is given up)
    disk_errors: int = 0  # appends or reads the disk refused


@dataclass
class _Segment:
    number: int
    path: Path
    size: int = 0  # end of the last whole record
    samples: int = 0
    records: int = 0
    unread_samples_before: list[int] = field(default_factory=list)


def _crc(header_rest: bytes, payload: bytes) -> int:
    return zlib.crc32(payload, zlib.crc32(header_rest))


def _pack(record: Record) -> bytes:
    rest = struct.pack("<Iq", record.samples, record.timestamp_ms)
    return _HEADER.pack(len(record.payload), _crc(rest, record.payload), record.samples,
                        record.timestamp_ms) + record.payload


class DiskError(OSError):
    """The disk refused an append or a read (full, read-only, gone); the buffer carries on in memory."""


class Buffer:
    """One endpoint's records. ``directory`` None keeps them in memory only."""

    def __init__(self, directory: str | Path | None, max_bytes: int, memory_samples: int,
                 disk_retry_seconds: float = DISK_RETRY_SECONDS):
        self.directory = Path(directory) if directory is not None else None
        self.max_bytes = max_bytes
        self.segment_size = min(MAX_SEGMENT, max(MIN_SEGMENT, max_bytes // 8))
        self.memory_samples = memory_samples
        self.losses = Losses()
        self.disk_problem: str | None = None  # why records are held in memory, if they are
        self._segments: list[_Segment] = []
        self._read: tuple[int, int] = (0, 0)  # next record to read: segment number, offset
        self._acked: tuple[int, int] = (0, 0)  # the receiver has everything before this
        self._write_file: int | None = None  # descriptor of the last segment, open for appending
        self._opened = False
        self._retry_disk_at = 0.0
        self.disk_retry_seconds = disk_retry_seconds
        self._memory: deque[tuple[int, Record]] = deque()
        self._memory_sequence = 0
        self._memory_read = 0  # sequence number of the next memory record to read
        self._memory_samples = 0
        self.pending_samples = 0  # appended, not yet acknowledged (disk and memory)
        self.disk_bytes = 0
        self.newest_timestamp_ms = 0

    # --- opening --------------------------------------------------------------------------------------------

    def open(self) -> None:
        """Find the segments and the cursor left by a previous run; cut a torn tail. Never raises: a directory
        that cannot be used leaves the buffer in memory (``disk_problem`` says why)."""
        if self.directory is None:
            self.disk_problem = "no buffer directory configured"
            return
        self._segments = []
        self._opened = False
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            numbers = sorted(int(p.name[:-len(_SUFFIX)]) for p in self.directory.iterdir()
                             if p.name.endswith(_SUFFIX) and p.name[:-len(_SUFFIX)].isdigit())
            for number in numbers:
                self._segments.append(self._scan(number))
            self._acked = self._read = self._load_cursor()
            self._drop_empty_acked()
            self._recount()
            probe = self.directory / ".writable"
            probe.unlink(missing_ok=True)  # a leftover, or a link planted there: removed, never followed
            os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600))
            probe.unlink()
            self._opened = True
        except OSError as exc:
            self._segments = []
            self._disk_failed(exc)

    def _scan(self, number: int) -> _Segment:
        """A segment's whole records; a torn or corrupt tail is cut off (counted)."""
        segment = _Segment(number, self._path(number))
        with open(segment.path, "rb", opener=open_no_follow) as file:
            data = file.read()
        offset = 0
        while offset + _HEADER.size <= len(data):
            length, crc, samples, timestamp = _HEADER.unpack_from(data, offset)
            end = offset + _HEADER.size + length
            if end > len(data) or _crc(data[offset + 4 + 4:offset + _HEADER.size], data[offset + _HEADER.size:end]) \
                    != crc:
                break
            segment.samples += samples
            segment.records += 1
            self.newest_timestamp_ms = max(self.newest_timestamp_ms, timestamp)
            offset = end
        if offset < len(data):
            self.losses.corrupted += 1
            with open(segment.path, "r+b", opener=open_no_follow) as file:
                file.truncate(offset)
        segment.size = offset
        return segment

    def _load_cursor(self) -> tuple[int, int]:
        assert self.directory is not None
        first = (self._segments[0].number, 0) if self._segments else (0, 0)
        try:
            with open(self.directory / _CURSOR, "rb", opener=open_no_follow) as file:
                data = file.read()
            number, offset = _CURSOR_FORMAT.unpack(data)
        except (OSError, struct.error):
            return first  # no cursor (first run) or a broken one: everything left is sent again
        if not self._segments or number < self._segments[0].number:
            return first
        segment = self._segment(number)
        if segment is None or offset > segment.size:
            return first if segment is None else (number, segment.size)
        return number, offset

    def _recount(self) -> None:
        """pending_samples from the cursor on: the samples of the records not yet acknowledged."""
        pending = 0
        for segment in self._segments:
            if segment.number > self._acked[0]:
                pending += segment.samples
            elif segment.number == self._acked[0]:
                pending += self._samples_after(segment, self._acked[1])
        self.pending_samples = pending + self._memory_samples
        self.disk_bytes = sum(segment.size for segment in self._segments)

    def _samples_after(self, segment: _Segment, offset: int) -> int:
        samples = 0
        with contextlib.suppress(OSError), open(segment.path, "rb", opener=open_no_follow) as file:
            file.seek(offset)
            while offset < segment.size:
                header = file.read(_HEADER.size)
                if len(header) < _HEADER.size:
                    break
                length, _, count, _ = _HEADER.unpack(header)
                samples += count
                offset += _HEADER.size + length
                file.seek(offset)
        return samples

    # --- appending ------------------------------------------------------------------------------------------

    def append(self, record: Record) -> None:
        """Add a record at the end: on disk if it can, else in memory."""
        self.newest_timestamp_ms = max(self.newest_timestamp_ms, record.timestamp_ms)
        if self._disk_usable():
            try:
                if not self._opened:
                    self.open()
                    if not self._opened:
                        raise OSError(self.disk_problem)
                self._append_disk(record)
                self.pending_samples += record.samples
                self.disk_problem = None
                return
            except OSError as exc:
                self._disk_failed(exc)
        self._append_memory(record)

    def _disk_usable(self) -> bool:
        """Whether the next record may go to disk: no problem, or one old enough to try again once the
        records held in memory (newer than any on disk) are all sent."""
        if self.directory is None or self._memory:
            return False
        return self.disk_problem is None or time.monotonic() >= self._retry_disk_at

    def _append_disk(self, record: Record) -> None:
        segment = self._segments[-1] if self._segments else None
        if segment is None or self._write_file is None or segment.size + record.size > self.segment_size and \
                segment.records:
            segment = self._new_segment()
        data = _pack(record)
        assert self._write_file is not None
        try:
            written = os.write(self._write_file, data)
            if written != len(data):  # a full disk takes what fits
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(self._write_file, segment.size)  # never leave half a record
            raise
        segment.size += len(data)
        segment.samples += record.samples
        segment.records += 1
        self.disk_bytes += len(data)
        self._enforce_limit()

    def _new_segment(self) -> _Segment:
        if self._write_file is not None:
            os.close(self._write_file)
            self._write_file = None
        number = self._segments[-1].number + 1 if self._segments else self._acked[0] + 1
        segment = _Segment(number, self._path(number))
        self._write_file = os.open(segment.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW,
                                   0o600)  # a link planted at the next segment's name is refused, never followed
        os.ftruncate(self._write_file, 0)
        self._segments.append(segment)
        return segment

    def _enforce_limit(self) -> None:
        """Delete the oldest segments while the buffer is over its size (never the one being written)."""
        while self.disk_bytes > self.max_bytes and len(self._segments) > 1:
            oldest = self._segments.pop(0)
            start = max(self._acked, self._read)  # records in flight are counted when acknowledged
            if start <= (oldest.number, oldest.size):
                unsent = oldest.samples if start[0] < oldest.number else self._samples_after(oldest, start[1])
                self.losses.dropped_full += unsent
                self.pending_samples -= unsent
            with contextlib.suppress(OSError):
                oldest.path.unlink()
            self.disk_bytes -= oldest.size
            following = (self._segments[0].number, 0)
            self._acked = max(self._acked, following)
            self._read = max(self._read, following)

    def _append_memory(self, record: Record) -> None:
        self._memory_sequence += 1
        self._memory.append((self._memory_sequence, record))
        self._memory_samples += record.samples
        self.pending_samples += record.samples
        while self._memory_samples > self.memory_samples and len(self._memory) > 1:
            # the oldest record not yet read (those in flight are counted when acknowledged)
            unread = next((item for item in self._memory if item[0] >= self._memory_read), None)
            if unread is None or unread[0] == self._memory_sequence:
                break
            self._memory.remove(unread)
            self._memory_samples -= unread[1].samples
            self.pending_samples -= unread[1].samples
            self.losses.dropped_full += unread[1].samples

    def _disk_failed(self, exc: OSError) -> None:
        self.losses.disk_errors += 1
        self.disk_problem = f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else "")
        self._retry_disk_at = time.monotonic() + self.disk_retry_seconds
        if self._write_file is not None:
            with contextlib.suppress(OSError):
                os.close(self._write_file)
            self._write_file = None

    # --- reading --------------------------------------------------------------------------------------------

    def read(self, limit: int) -> list[tuple[Position, Record]]:
        """Up to ``limit`` records after the last one read, disk first, then memory; [] when there are none."""
        out: list[tuple[Position, Record]] = []
        while len(out) < limit:
            found = self._read_disk()
            if found is None:
                break
            out.append(found)
        for sequence, record in self._memory:
            if len(out) >= limit:
                break
            if sequence >= self._memory_read:
                out.append((Position(sequence, 0, memory=True), record))
                self._memory_read = sequence + 1
        return out

    def rewind(self) -> None:
        """Read again from the first record not acknowledged (after sending stopped half way)."""
        self._read = self._acked
        self._memory_read = self._memory[0][0] if self._memory else self._memory_sequence + 1

    def _cut(self, segment: _Segment, offset: int) -> None:
        """Give up a segment from ``offset`` on (a record there failed its check): counted, never read again."""
        self.losses.corrupted += 1
        segment.size = offset
        segment.samples = self._samples_after(segment, 0)
        if segment is self._segments[-1] and self._write_file is not None:
            os.close(self._write_file)  # the next record starts a new segment, after the damage
            self._write_file = None
        self._recount()

    def _read_disk(self) -> tuple[Position, Record] | None:
        while True:
            segment = self._segment(self._read[0])
            if segment is None:
                later = [s for s in self._segments if s.number > self._read[0]]
                if not later:
                    return None
                self._read = (later[0].number, 0)
                continue
            offset = self._read[1]
            if offset >= segment.size:
                if segment is self._segments[-1]:
                    return None
                self._read = (self._segments[self._segments.index(segment) + 1].number, 0)
                continue
            try:
                record = self._record_at(segment, offset)
            except OSError as exc:
                self.losses.disk_errors += 1
                self.disk_problem = self.disk_problem or f"cannot read {segment.path}: {exc.strerror or exc}"
                record = None
            if record is None:  # corrupt: the rest of the segment is lost
                self._cut(segment, offset)
                if segment is self._segments[-1]:
                    return None
                continue
            self._read = (segment.number, offset + record.size)
            return Position(segment.number, offset + record.size), record

    def _record_at(self, segment: _Segment, offset: int) -> Record | None:
        with open(segment.path, "rb", opener=open_no_follow) as file:
            file.seek(offset)
            header = file.read(_HEADER.size)
            if len(header) < _HEADER.size:
                return None
            length, crc, samples, timestamp = _HEADER.unpack(header)
            if offset + _HEADER.size + length > segment.size:
                return None
            payload = file.read(length)
        if len(payload) < length or _crc(header[8:], payload) != crc:
            return None
        return Record(payload, samples, timestamp)

    # --- acknowledging --------------------------------------------------------------------------------------

    def ack(self, done: list[tuple[Position, Record]]) -> None:
        """The receiver took (or refused for good) these records: forget them, persist the cursor, delete
        segments read to the end, and go back to the disk once memory is empty."""
        disk_positions = [(p.segment, p.offset) for p, _ in done if not p.memory]
        memory_sequences = {p.segment for p, _ in done if p.memory}
        self.pending_samples -= sum(record.samples for _, record in done)
        if memory_sequences:
            while self._memory and self._memory[0][0] in memory_sequences:
                _, record = self._memory.popleft()
                self._memory_samples -= record.samples
        if disk_positions:
            self._acked = max(self._acked, max(disk_positions))
            self._save_cursor()
            self._drop_empty_acked()

    def _save_cursor(self) -> None:
        assert self.directory is not None
        try:  # cheap to lose (the records after it are sent again), so not fsynced
            write_atomically(self.directory / _CURSOR, _CURSOR_FORMAT.pack(*self._acked), sync=False)
        except OSError as exc:  # a full disk: the records are sent; a restart sends them again
            self.losses.disk_errors += 1
            self.disk_problem = self.disk_problem or f"cannot save the cursor: {exc.strerror or exc}"

    def _drop_empty_acked(self) -> None:
        """Delete the segments the receiver has taken entirely (never the one being written)."""
        while len(self._segments) > 1 and (self._segments[0].number < self._acked[0] or
                                           self._acked == (self._segments[0].number, self._segments[0].size)):
            done = self._segments.pop(0)
            with contextlib.suppress(OSError):
                done.path.unlink()
            self.disk_bytes -= done.size
            self._acked = max(self._acked, (self._segments[0].number, 0))

    # --- helpers --------------------------------------------------------------------------------------------

    def _segment(self, number: int) -> _Segment | None:
        for segment in self._segments:
            if segment.number == number:
                return segment
        return None

    def _path(self, number: int) -> Path:
        assert self.directory is not None
        return self.directory / f"{number:020d}{_SUFFIX}"

    def close(self) -> None:
        if self._write_file is not None:
            with contextlib.suppress(OSError):
                os.close(self._write_file)
            self._write_file = None
