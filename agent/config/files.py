"""Reading config files: UTF-8 text, or a clear ``file:line`` problem; and a file's stamp, to tell when it
changed."""

from __future__ import annotations

import os
from pathlib import Path
from stat import S_ISREG

from agent.config.problems import ConfigError, Problem


def read_text(path: str | Path) -> str:
    """The file's text; a file that cannot be read or is not UTF-8 is a ConfigError."""
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
