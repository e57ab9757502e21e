"""Journal source: follows the systemd journal through ``journalctl --output=json --follow`` and feeds its
entries through the log pipeline into the store.

journalctl reads the journal files (the system journal, or ``directory``) and follows them across journald's
file rotations. Each entry carries its ``__CURSOR``; the cursor of the last entry of a batch is recorded in
the positions file once the batch is counted, and a restart (or a journalctl that died) resumes from it, so
nothing is read twice or skipped. It resumes with ``--cursor`` and drops the entry at the cursor itself:
journalctl 252's ``--after-cursor`` also skips the first entry after it when the entry at the cursor does not
match the unit and field filters (as when they changed since). Only the fields the metrics read are requested
(``--output-fields``). Values journalctl gives as arrays become text: bytes that are not UTF-8 (MESSAGE of a
binary payload) are decoded with replacement characters, a field with several values gives its first.
"""

from __future__ import annotations

import asyncio
import logging
import re
import signal
import time
from collections.abc import Callable
from typing import Any

from agent.series.store import Group
from agent.sources.base import Source, SourceContext, SourceStats
from agent.sources.journal.config import JournalSourceConfig
from agent.sources.logs.config import EXPIRED, SKIPPED
from agent.sources.logs.fields import BatchResult, json_objects
from agent.sources.logs.pipeline import EXPIRY_EVERY, LineCounts, Pipeline, drop_too_long
from agent.sources.logs.positions import positions_of

log = logging.getLogger(__name__)

CHUNK_BYTES = 256 * 1024
RETRY_SECONDS = 5.0  # before starting journalctl again after it exited
_JOURNAL_FIELD_RE = re.compile(r"^[A-Z0-9_]+$")


def journalctl_command(config: JournalSourceConfig, fields: tuple[str, ...], cursor: str | None,
                       journalctl: str = "journalctl") -> list[str]:
    """The journalctl command line that follows the entries ``config`` selects, from ``cursor`` if set (the
    entry at the cursor, if it is selected, comes first)."""
    wanted = sorted({name for name in fields if _JOURNAL_FIELD_RE.match(name)} |
                    ({"MESSAGE"} if config.format else set())) or ["_BOOT_ID"]  # _BOOT_ID is always printed
    command = [journalctl, "--output=json", "--follow", "--no-pager", "--quiet",
               f"--output-fields={','.join(wanted)}"]
    if config.directory:
        command.append(f"--directory={config.directory}")
    command += [f"--file={pattern}" for pattern in config.files]
    command += [f"--unit={unit}" for unit in config.units]
    if cursor:
        command.append(f"--cursor={cursor}")
    else:
        command.append("--no-tail" if config.start_at == "beginning" else "--lines=0")
    command += [f"{name}={value}" for name, values in config.matches for value in values]
    return command


def _text(value: Any) -> Any:
    """A field value as journalctl gives it in JSON, as the text it stands for."""
    if value.__class__ is not list:
        return value
    if value and all(item.__class__ is int for item in value):
        return bytes(value).decode("utf-8", "replace")  # not valid UTF-8: an array of bytes
    return _text(value[0]) if value else None  # a field given several times: the first


def _entries(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for entry in objects:
        if any(value.__class__ is list for value in entry.values()):
            entry.update({name: _text(value) for name, value in entry.items() if value.__class__ is list})
    return objects


def _die_with_parent() -> Callable[[], None]:
    """For journalctl's process, between fork and exec: be terminated when the agent dies, even by SIGKILL.
    The C function is looked up here, in the agent, so the child only calls it."""
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl
    return lambda: prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


async def _last_bytes(stream: asyncio.StreamReader, keep: int = 4096) -> bytes:
    """Reads a stream to its end (so its writer never blocks on a full pipe), keeping the last bytes."""
    kept = b""
    while data := await stream.read(65536):
        kept = (kept + data)[-keep:]
    return kept


class JournalSource(Source[JournalSourceConfig]):
    kind = "journal"

    def __init__(self, config: JournalSourceConfig, group: Group, stats: SourceStats, context: SourceContext):
        super().__init__(config, group, stats, context)
        own = stats.group
        self.counts = LineCounts(own)
        self.pipeline = Pipeline(config.metrics, group, own.counter(SKIPPED), own.counter(EXPIRED),
                                 fmt=config.format, pattern=config.pattern, max_series=config.max_series_per_metric)
        self.positions = positions_of(context)
        self._counted_cursor: str | None = None  # the entry journalctl starts with when it was counted already

    async def run(self) -> None:
        while True:
            started = time.perf_counter()
            error = await self._follow()
            self.stats.record(started, False, error=error)
            log.warning("journalctl stopped; starting it again", extra={"source": self.name, "error": error,
                                                                        "retry_in_seconds": RETRY_SECONDS})
            await asyncio.sleep(RETRY_SECONDS)

    async def _follow(self) -> str:
        """Run journalctl until it exits (or the source is cancelled); returns why it stopped."""
        import shutil  # with bz2 and lzma: not for an agent without a journal source

        journalctl = shutil.which("journalctl")
        if journalctl is None:
            return "journalctl not found (Debian package systemd)"
        cursor = self._counted_cursor = self.positions.cursor(self.name)
        command = journalctl_command(self.config, self.pipeline.fields, cursor, journalctl)
        try:
            process = await asyncio.create_subprocess_exec(
                *command, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, preexec_fn=_die_with_parent())
        except OSError as exc:
            return f"cannot run journalctl: {exc}"
        assert process.stdout is not None and process.stderr is not None
        stderr = asyncio.create_task(_last_bytes(process.stderr))
        try:
            await self._read(process.stdout)
            code = await process.wait()
            message = (await stderr).decode("utf-8", "replace").strip()
        finally:
            stderr.cancel()
            if process.returncode is None:
                process.terminate()
                try:
                    async with asyncio.timeout(5):
                        await process.wait()
                except TimeoutError:
                    process.kill()
                    await process.wait()
        if cursor and "cursor" in message.lower():  # a cursor journalctl cannot seek to: start as configured
            log.warning("journalctl refused the saved cursor; starting as start_at says",
                        extra={"source": self.name, "error": message[:500]})
            self.positions.set_cursor(self.name, None)
        return f"journalctl exited with status {code}: {message[:500] or 'no message'}"

    async def _read(self, stdout: asyncio.StreamReader) -> None:
        partial = b""
        skipping = False  # inside a line longer than max_line_bytes: drop up to its newline
        limit = self.config.max_line_bytes
        while True:
            # A journal gone quiet still has its label sets expire. Not wait_for(): on Python 3.11 it returns the
            # read's result when the read ends (journalctl killed by the SIGTERM that stops the agent) just as
            # the task is cancelled, and the cancellation is lost: the source restarted journalctl and the agent
            # never stopped. asyncio.timeout() runs the read in this task, so a cancellation always arrives.
            try:
                async with asyncio.timeout(EXPIRY_EVERY):
                    data = await stdout.read(CHUNK_BYTES)
            except TimeoutError:
                self.pipeline.expire(time.monotonic())
                continue
            if not data:
                return
            started = time.perf_counter()
            if skipping:
                newline = data.find(b"\n")
                if newline < 0:
                    continue
                data, skipping = data[newline + 1:], False
            buffer = partial + data
            end = buffer.rfind(b"\n") + 1
            partial = buffer[end:]
            if len(partial) > limit:
                partial, skipping = b"", True
                self.counts.skipped_too_long(1)
            if end:
                self._consume(buffer[:end])
                self.stats.record(started, True)
            self.pipeline.expire(time.monotonic())

    def _consume(self, data: bytes) -> None:
        lines = data.decode("utf-8", "replace").split("\n")
        lines.pop()
        lines, too_long = drop_too_long(lines, self.config.max_line_bytes)
        objects = json_objects(lines, BatchResult())  # the lines that are not objects are counted below
        result = BatchResult()
        if objects and self._counted_cursor is not None:
            if objects[0].get("__CURSOR") == self._counted_cursor:
                del objects[0]
                lines.pop(0)
            self._counted_cursor = None
        if objects:
            result = self.pipeline.process_entries(_entries(objects))
        self.counts.read(len(lines) + too_long, len(data))
        self.counts.parsed(result, malformed=len(lines) - len(objects), too_long=too_long)  # result.lines: objects
        for entry in reversed(objects):
            cursor = entry.get("__CURSOR")
            if isinstance(cursor, str):
                self.positions.set_cursor(self.name, cursor)
                break
