"""Reading config files: UTF-8 text, or a clear ``file:line`` problem; a file's stamp, to tell when it changed;
and writing files so that nobody else can redirect them (the ones the agent keeps, positions and delivery state,
nobody else can read either)."""

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


PRIVATE = 0o600  # the agent's own state: offsets and cursors tell what the logs hold
SHARED = 0o666  # files other programs read (rules for Prometheus, dashboards for Grafana): the umask decides
_ATTEMPTS = 16  # names tried for a temporary file before giving up (someone keeps planting files there)


def write_atomically(path: str | Path, data: bytes, mode: int = PRIVATE, sync: bool = True) -> None:
    """Replace ``path`` by a file holding ``data``: a reader sees the old file or the new one, never part of one,
    and whoever can write the directory cannot make the agent (often root) write anywhere else.

    The temporary file beside ``path`` is created exclusively and without following links
    (O_CREAT | O_EXCL | O_NOFOLLOW), so a symlink or file planted at its name is never opened: another name is
    tried. It gets ``mode`` (the owner only by default; the umask can only narrow it), is written and fsynced,
    then renamed over ``path`` (a rename replaces a link at ``path`` itself, never its target), and the directory
    is fsynced so that the rename survives a crash (without ``sync``, for a file that is cheap to lose, nothing
    is fsynced). Raises OSError; the temporary file is removed on failure."""
    path = Path(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    for attempt in range(_ATTEMPTS):
        # this process's name first (one writer per process); a random one when something sits there
        temporary = path.with_name(f".{path.name}.{os.getpid() if attempt == 0 else os.urandom(6).hex()}.tmp")
        try:
            descriptor = os.open(temporary, flags, mode)
            break
        except FileExistsError:
            continue
    else:
        raise FileExistsError(f"cannot create a temporary file beside {path}: {_ATTEMPTS} names taken")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            if sync:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise
    if not sync:
        return
    directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def open_no_follow(path: str, flags: int) -> int:
    """An ``opener`` for open(): a symlink at ``path`` is refused (ELOOP), never followed."""
    return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC)
