"""The on-disk buffer: order, bounds, restarts, torn and damaged files, and a disk that refuses."""

from __future__ import annotations

import os
from pathlib import Path

from agent.push.buffer import Buffer, Record


def rec(n: int, samples: int = 10, size: int = 100) -> Record:
    return Record(bytes([n % 256]) * size, samples, 1_000 * n)


def drain(buffer: Buffer, limit: int = 1000) -> list[int]:
    got = buffer.read(limit)
    buffer.ack(got)
    return [record.timestamp_ms // 1000 for _, record in got]


def test_records_come_back_in_order_and_survive_a_restart(tmp_path: Path):
    buffer = Buffer(tmp_path, 10 << 20, 1000)
    buffer.open()
    for n in range(1, 6):
        buffer.append(rec(n))
    assert buffer.pending_samples == 50
    first = buffer.read(2)
    buffer.ack(first)
    assert [r.timestamp_ms for _, r in first] == [1000, 2000]
    buffer.read(1)  # read, never acknowledged: the process dies here
    buffer.close()
    again = Buffer(tmp_path, 10 << 20, 1000)
    again.open()
    assert again.pending_samples == 30
    assert drain(again) == [3, 4, 5]
    again.append(rec(6))
    assert drain(again) == [6]
    assert again.pending_samples == 0


def test_full_buffer_drops_the_oldest_segments_and_counts_their_samples(tmp_path: Path):
    buffer = Buffer(tmp_path, 1 << 20, 1000)  # segments of 1 MiB
    buffer.open()
    for n in range(1, 41):
        buffer.append(rec(n, samples=7, size=100_000))  # 4 MB in all
    assert buffer.disk_bytes <= 1 << 20 + 200_000
    got = drain(buffer)
    assert got == list(range(41 - len(got), 41))  # the newest, in order
    assert buffer.losses.dropped_full == 7 * (40 - len(got))
    assert buffer.pending_samples == 0
    assert len(list(tmp_path.glob("*.seg"))) == 1


def test_torn_tail_is_cut_and_the_records_before_it_kept(tmp_path: Path):
    buffer = Buffer(tmp_path, 10 << 20, 1000)
    buffer.open()
    for n in range(1, 4):
        buffer.append(rec(n))
    buffer.close()
    segment = next(tmp_path.glob("*.seg"))
    with open(segment, "ab") as file:
        file.write(b"\x50\x00\x00\x00garbage")  # half a record: power lost mid-write
    again = Buffer(tmp_path, 10 << 20, 1000)
    again.open()
    assert drain(again) == [1, 2, 3]
    assert again.losses.corrupted == 1


def test_a_damaged_record_gives_up_the_rest_of_its_segment_only(tmp_path: Path):
    buffer = Buffer(tmp_path, 8 << 20, 1000)  # segments of 1 MiB
    buffer.open()
    for n in range(1, 25):
        buffer.append(rec(n, size=100_000))  # about 10 per segment
    buffer.close()
    first = sorted(tmp_path.glob("*.seg"))[0]
    data = bytearray(first.read_bytes())
    data[300_000] ^= 0xFF  # inside the third record
    first.write_bytes(bytes(data))
    again = Buffer(tmp_path, 10 << 20, 1000)
    again.open()
    got = drain(again)
    assert got[:2] == [1, 2] and got == sorted(got) and got[-1] == 24
    assert 3 not in got
    assert again.losses.corrupted == 1
    assert again.pending_samples == 0


def test_a_broken_cursor_sends_everything_again(tmp_path: Path):
    buffer = Buffer(tmp_path, 10 << 20, 1000)
    buffer.open()
    for n in range(1, 4):
        buffer.append(rec(n))
    drain(buffer)
    buffer.append(rec(4))
    buffer.close()
    (tmp_path / "cursor").write_bytes(b"\x01")
    again = Buffer(tmp_path, 10 << 20, 1000)
    again.open()
    assert drain(again)[-1] == 4


def test_unwritable_directory_keeps_records_in_bounded_memory(read_only_dir: Path):
    buffer = Buffer(read_only_dir / "endpoint", 10 << 20, memory_samples=30)
    buffer.open()
    assert buffer.disk_problem and "Read-only file system" in buffer.disk_problem
    for n in range(1, 6):
        buffer.append(rec(n))
    assert buffer.losses.dropped_full == 20
    assert drain(buffer) == [3, 4, 5]
    buffer.append(rec(6))  # the disk is tried again later, not with every record
    assert buffer.losses.disk_errors == 1 and "Read-only" in (buffer.disk_problem or "")
    assert drain(buffer) == [6]


def test_a_full_disk_keeps_the_newest_in_memory_then_the_disk_again(small_disk: Path):
    buffer = Buffer(small_disk, 10 << 20, memory_samples=1000, disk_retry_seconds=0)
    buffer.open()
    filler = small_disk / "filler"
    filler.write_bytes(b"x" * (small_disk_free(small_disk) - 150_000))
    buffer.append(rec(1, size=100_000))
    buffer.append(rec(2, size=100_000))  # no room: held in memory, the segment left whole
    assert buffer.disk_problem is not None and "No space left" in buffer.disk_problem
    buffer.append(rec(3, size=100_000))
    assert drain(buffer) == [1, 2, 3]  # disk first, then memory: in order
    filler.unlink()
    buffer.append(rec(4, size=100_000))
    assert buffer.disk_problem is None
    buffer.close()
    again = Buffer(small_disk, 10 << 20, memory_samples=1000)
    again.open()
    assert drain(again) == [4]


def small_disk_free(path: Path) -> int:
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize
