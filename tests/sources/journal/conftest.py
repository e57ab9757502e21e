"""Journal files written for real: entries in journal export format, turned into a journal file by
systemd-journal-remote (the sandbox has no journald), read back by the real journalctl."""

from __future__ import annotations

import struct
import subprocess
import time
from pathlib import Path

import pytest

from agent.sources.journal import source as journal_source
from tests.tools import require_tool

BOOT_ID = "0123456789abcdef0123456789abcdef"


class Journal:
    """A journal directory; ``write`` appends entries to one of its files."""

    def __init__(self, directory: Path, remote: str):
        self.directory = directory
        self.remote = remote
        self.clock = time.time_ns() // 1000  # microseconds, increasing with every entry

    def write(self, *entries: dict[str, str | bytes], file: str = "system.journal") -> None:
        export = bytearray()
        for fields in entries:
            self.clock += 1
            export += (f"__REALTIME_TIMESTAMP={self.clock}\n__MONOTONIC_TIMESTAMP={self.clock}\n"
                       f"_BOOT_ID={BOOT_ID}\n").encode()
            for name, value in fields.items():
                data = value if isinstance(value, bytes) else value.encode()
                if b"\n" in data or isinstance(value, bytes):  # the binary form: name, 64-bit length, data
                    export += name.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
                else:
                    export += name.encode() + b"=" + data + b"\n"
            export += b"\n"
        result = subprocess.run([self.remote, f"--output={self.directory / file}", "-"], input=bytes(export),
                                capture_output=True, timeout=30)
        assert result.returncode == 0, result.stderr.decode()


def entry(unit: str = "nginx.service", priority: int = 6, message: str = "hello", **fields: str | bytes) -> dict:
    return {"_SYSTEMD_UNIT": unit, "PRIORITY": str(priority), "MESSAGE": message,
            "SYSLOG_IDENTIFIER": unit.split(".")[0], **fields}


@pytest.fixture
def journal(tmp_path) -> Journal:
    require_tool("journalctl")
    directory = tmp_path / "journal"
    directory.mkdir()
    return Journal(directory, require_tool("systemd-journal-remote"))


@pytest.fixture(autouse=True)
def fast_retry(monkeypatch):
    monkeypatch.setattr(journal_source, "RETRY_SECONDS", 0.2)

