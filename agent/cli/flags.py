"""Every flag's parser, in one place, used by every command: a bad value stops the command before anything
starts (no Prometheus asked, no port bound, no file written) with click's usage error naming the flag,
``Error: Invalid value for '--prometheus.url': ...``, exit status 2, never a traceback.

Loaded by ``kpi-agent run`` too: what a parser needs beyond the standard library is imported when it parses.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from agent.formatting import without_credentials
from agent.runtime.logconfig import LEVELS

_DNS_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")  # a Kubernetes namespace (RFC 1123 label)
_GRAFANA_UID_RE = re.compile(r"^[A-Za-z0-9_-]{1,40}$")


class _Flag(click.ParamType):
    """A parser of one kind of value: ``parse`` raises ValueError with the message the user sees."""

    def parse(self, value: str) -> Any:
        raise NotImplementedError

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if not isinstance(value, str):  # a default already parsed
            return value
        try:
            return self.parse(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class Duration(_Flag):
    """A Prometheus duration (30s, 5m, 1h30m, 7d), in seconds, longer than zero."""

    name = "duration"

    def parse(self, value: str) -> float:
        from agent.config.values import duration

        return duration(value)


class Seconds(_Flag):
    """A number of seconds, at least ``minimum`` and finite (click's FloatRange lets nan and inf through)."""

    name = "seconds"

    def __init__(self, minimum: float):
        self.minimum = minimum

    def parse(self, value: str) -> float:
        try:
            seconds = float(value)
        except ValueError:
            raise ValueError(f"{value!r} is not a number of seconds") from None
        if not self.minimum <= seconds < float("inf"):  # false for nan too
            raise ValueError(f"{value!r} is not a number of seconds from {self.minimum:g} up")
        return seconds


class EvaluationInterval(_Flag):
    """How often Prometheus evaluates generated rules: a duration dividing 5m (telescoped windows sum recorded 5m
    rates at 5m offsets); kept as written, for the rule files."""

    name = "duration"

    def parse(self, value: str) -> str:
        from agent.kpi.windows import check_evaluation_interval

        check_evaluation_interval(DURATION.parse(value))
        return value


class PrometheusUrl(_Flag):
    """The base URL of a Prometheus HTTP API: http or https, a host, an optional path prefix (a Prometheus behind
    --web.route-prefix) and user:password for basic auth. Never shown with its user and password."""

    name = "url"

    def parse(self, value: str) -> str:
        shown = without_credentials(value)
        if "://" not in value:
            raise ValueError(f"{shown!r} has no scheme: give http://{shown} (or https://)")
        try:
            parts = urllib.parse.urlsplit(value)
            port = parts.port  # raises for a port that is not a number from 0 to 65535
        except ValueError as exc:
            raise ValueError(f"{shown!r} is not a URL: {exc}") from None
        if parts.scheme not in ("http", "https"):
            raise ValueError(f"{shown!r}: the scheme must be http or https, not {parts.scheme!r}")
        if not parts.hostname:
            raise ValueError(f"{shown!r} has no host")
        if port == 0:
            raise ValueError(f"{shown!r}: port 0 cannot be connected to")
        if parts.query or parts.fragment:
            raise ValueError(f"{shown!r}: give the base URL only, without ?query or #fragment (the API paths are "
                             "added to it)")
        if any(c.isspace() for c in value):
            raise ValueError(f"{shown!r} holds white space")
        return value


class ListenAddressFlag(_Flag):
    """host:port, :port (every interface) or [IPv6]:port, as exporter-toolkit's --web.listen-address."""

    name = "host:port"

    def parse(self, value: str) -> Any:
        from agent.server.listener import ListenAddress

        return ListenAddress.parse(value)


class Moment(_Flag):
    """A point in time as Prometheus's API takes one: RFC 3339 with a zone, or Unix seconds."""

    name = "time"

    def parse(self, value: str) -> float:
        try:
            seconds = float(value)
        except ValueError:
            pass
        else:
            if seconds != seconds or seconds in (float("inf"), float("-inf")):
                raise ValueError(f"{value!r} is not a time")
            return seconds
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"{value!r} is neither RFC 3339 (2026-11-01T00:00:00Z) nor Unix seconds") from None
        if moment.tzinfo is None:
            raise ValueError(f"{value!r} has no time zone: add Z for UTC or an offset like +02:00")
        return moment.timestamp()


class Period(_Flag):
    """A report period (30d, month, last-quarter, 2026-03...); checked here, read in its time zone later."""

    name = "period"

    def parse(self, value: str) -> str:
        from agent.report.periods import parse_period, zone

        parse_period(value, zone("UTC"))
        return value


class TimeZone(_Flag):
    """An IANA time zone name (Europe/Paris, UTC)."""

    name = "zone"

    def parse(self, value: str) -> str:
        from agent.report.periods import zone

        zone(value)
        return value


class OutputDirectory(_Flag):
    """A directory to write into: an existing one we may write, or one that can be made where it is named."""

    name = "directory"

    def parse(self, value: str) -> str:
        if not value:
            raise ValueError("is empty")
        path = Path(value)
        if path.exists():
            if not path.is_dir():
                raise ValueError(f"{value!r} is not a directory")
            if not os.access(path, os.W_OK | os.X_OK):
                raise ValueError(f"{value!r}: no permission to write in it")
            return value
        parent = _existing_ancestor(path)
        if not parent.is_dir():
            raise ValueError(f"{value!r} cannot be made: {parent} is not a directory")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise ValueError(f"{value!r} cannot be made: no permission to write in {parent}")
        return value


class OutputFile(_Flag):
    """A file to write: in an existing directory we may write, and not a directory itself."""

    name = "file"

    def parse(self, value: str) -> str:
        if not value:
            raise ValueError("is empty")
        path = Path(value)
        if path.is_dir():
            raise ValueError(f"{value!r} is a directory; name the file to write")
        parent = path.parent
        if not parent.is_dir():
            raise ValueError(f"{value!r}: {parent} is not a directory" if parent.exists() else
                             f"{value!r}: the directory {parent} does not exist")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise ValueError(f"{value!r}: no permission to write in {parent}")
        return value


class KubernetesName(_Flag):
    """A Kubernetes namespace: an RFC 1123 label (lower case letters, digits and '-', at most 63)."""

    name = "name"

    def parse(self, value: str) -> str:
        if not _DNS_LABEL_RE.match(value):
            raise ValueError(f"{value!r} is not a Kubernetes namespace: lower case letters, digits and '-', "
                             "starting and ending with a letter or digit, at most 63")
        return value


class GrafanaUid(_Flag):
    """A Grafana uid: letters, digits, '-' and '_', at most 40."""

    name = "uid"

    def parse(self, value: str) -> str:
        if not _GRAFANA_UID_RE.match(value):
            raise ValueError(f"{value!r} is not a Grafana uid: letters, digits, '-' and '_', at most 40")
        return value


def _existing_ancestor(path: Path) -> Path:
    for candidate in [path, *path.parents]:
        if candidate.exists():
            return candidate
    return Path(".")


DURATION = Duration()
EVALUATION_INTERVAL = EvaluationInterval()
PROMETHEUS_URL = PrometheusUrl()
LISTEN_ADDRESS = ListenAddressFlag()
MOMENT = Moment()
PERIOD = Period()
TIME_ZONE = TimeZone()
OUTPUT_DIRECTORY = OutputDirectory()
OUTPUT_FILE = OutputFile()
KUBERNETES_NAME = KubernetesName()
GRAFANA_UID = GrafanaUid()
EXISTING_FILE = click.Path(exists=True, dir_okay=False)
SPECS = click.Path(exists=True)  # a spec file, or a directory of them

# Options more than one command takes: the same name, parser and help everywhere.
log_level = click.option("--log.level", "log_level", type=click.Choice(list(LEVELS)), default="info",
                         show_default=True, help="Least severe messages logged.")
log_format = click.option("--log.format", "log_format", type=click.Choice(["logfmt", "json"]), default="logfmt",
                          show_default=True)
web_config_file = click.option("--web.config.file", "web_config_file", type=EXISTING_FILE,
                               help="exporter-toolkit web config: TLS, client certificates, basic auth, headers, "
                                    "rate limit.")
