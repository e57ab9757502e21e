"""Log output in the two formats Prometheus components use: logfmt (default) and JSON."""

from __future__ import annotations

import json
import logging
import sys
import time

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING, "error": logging.ERROR}
REPEATS_PER_MINUTE = 10  # the same message (logger and text) is written at most this often


class _RepeatLimit(logging.Filter):
    """Drops a record once its message has been written REPEATS_PER_MINUTE times in the current minute, and
    says how many it dropped when the message is next allowed: a flood of one error (500 clients that hang up,
    a target that fails every 10 ms) cannot fill the disk or hide everything else."""

    def __init__(self) -> None:
        super().__init__()
        self.minute = 0
        self.counts: dict[tuple[str, str], int] = {}
        self.dropped: dict[tuple[str, str], int] = {}
        self.total_dropped = 0

    def filter(self, record: logging.LogRecord) -> bool:
        minute = int(record.created // 60)
        if minute != self.minute:
            self.minute, self.counts = minute, {}
        key = (record.name, str(record.msg))
        count = self.counts[key] = self.counts.get(key, 0) + 1
        if count > REPEATS_PER_MINUTE:
            self.dropped[key] = self.dropped.get(key, 0) + 1
            self.total_dropped += 1
            return False
        earlier = self.dropped.pop(key, 0)
        if earlier:
            record.suppressed_before = earlier
        return True


_repeat_limit = _RepeatLimit()


def suppressed_records() -> int:
    """Records dropped by the repeat limit since start (kpi_agent_log_messages_suppressed_total)."""
    return _repeat_limit.total_dropped

# Attributes every LogRecord has; anything else came from `extra=` and is printed as a field.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


def _fields(record: logging.LogRecord) -> dict[str, object]:
    fields: dict[str, object] = {
        "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
        "level": record.levelname.lower().replace("warning", "warn"),
        "logger": record.name,
        "msg": record.getMessage(),
    }
    fields.update((k, v) for k, v in vars(record).items() if k not in _STANDARD)
    if record.exc_info:
        fields["err"] = logging.Formatter().formatException(record.exc_info)
    return fields


def _logfmt_value(value: object) -> str:
    text = str(value)
    if text and not any(c in text for c in ' ="\n\t\\'):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return " ".join(f"{k}={_logfmt_value(v)}" for k, v in _fields(record).items())


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(_fields(record), default=str)


def setup_logging(level: str = "info", fmt: str = "logfmt") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else LogfmtFormatter())
    handler.addFilter(_repeat_limit)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(LEVELS[level])
