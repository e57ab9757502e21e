"""Scheduled reports: the ``--reports.file`` that `kpi-agent ui` runs, and the state that makes each period's
report go out once.

    smtp:                               # Alertmanager's names: smarthost, from, auth_*, require_tls
      smarthost: mail.example.com:587   # port 465: TLS from the first byte; else STARTTLS (require_tls)
      from: KPI reports <kpi@example.com>
      auth_username: kpi
      auth_password_file: /etc/kpi-agent/smtp-password
    state_directory: /var/lib/kpi-agent/reports   # relative to this file's directory
    retry_delay: 30s                    # the first retry of a failed delivery; doubles up to 30m
    reports:
      - name: monthly-review
        schedule: "0 8 1 * *"           # cron: minute hour day-of-month month day-of-week
        time_zone: Europe/Berlin
        period: last-month               # as --period
        history: 12
        services: [shop]                 # default: every spec `ui` was given
        email: {to: [team@example.com]}
        webhook: {url_file: /etc/kpi-agent/slack-webhook}

A schedule fires at its cron times in its time zone (cronsim: daylight-saving gaps and repeats handled as cron
does). Each firing judges the period its ``period`` names at that moment; what was delivered for which period is
kept on disk, so a restart never sends a period twice, and a firing missed while the server was down is caught
up when it starts (firings before the schedule was first seen are not).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from email.headerregistry import Address
from email.utils import getaddresses
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from agent.config import values
from agent.config.fields import Fields
from agent.config.files import write_atomically
from agent.config.problems import FileProblems
from agent.config.yaml import LocatedMap, load_file
from agent.report.periods import PERIOD_HELP, PeriodChoice, parse_period, zone

RETRY_FIRST, RETRY_LAST = 30.0, 1800.0  # seconds: a failed delivery is retried after 30s, doubling to 30m
NAME_CHARACTERS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")


@dataclass(frozen=True)
class Smtp:
    host: str
    port: int
    sender: str
    username: str = ""
    password_file: str = ""
    require_tls: bool = True  # STARTTLS, unless the port is 465 (TLS from the first byte)
    ca_file: str = ""
    hello: str = ""

    @property
    def implicit_tls(self) -> bool:
        return self.port == 465


@dataclass(frozen=True)
class Email:
    to: tuple[str, ...]
    subject: str = "KPI report: {period}"


@dataclass(frozen=True)
class Webhook:
    url: str = ""
    url_file: str = ""  # the URL is a secret (Slack's carries its token): keep it in a file
    link: str = ""  # where the full report can be read (the ui's external URL), put in the message

    def target(self) -> str:
        return Path(self.url_file).read_text().strip() if self.url_file else self.url


@dataclass(frozen=True)
class Scheduled:
    name: str
    schedule: str
    tz: ZoneInfo
    period: PeriodChoice
    history: int
    services: tuple[str, ...] = ()
    email: Email | None = None
    webhook: Webhook | None = None

    @property
    def channels(self) -> tuple[str, ...]:
        return tuple(name for name, channel in (("email", self.email), ("webhook", self.webhook)) if channel)

    def firings(self, after: float, reverse: bool = False) -> Iterator[float]:
        """The schedule's times after (or, reversed, at or before) ``after``."""
        from cronsim import CronSim

        start = datetime.fromtimestamp(after, self.tz)
        for moment in CronSim(self.schedule, start, reverse=reverse):
            yield moment.timestamp()


@dataclass(frozen=True)
class ReportsConfig:
    file: str
    state_directory: Path
    reports: tuple[Scheduled, ...]
    smtp: Smtp | None = None
    retry_delay: float = RETRY_FIRST


def _cron(value: Any) -> str:
    from cronsim import CronSim, CronSimError

    text = values.nonempty_string(value)
    try:
        CronSim(text, datetime(2026, 1, 1, tzinfo=ZoneInfo("UTC")))
    except CronSimError as exc:
        raise ValueError(f"{text!r} is not a cron schedule (minute hour day month weekday, like \"0 8 1 * *\"): "
                         f"{exc}") from None
    return text


def _address(value: Any) -> str:
    text = values.nonempty_string(value)
    parsed = getaddresses([text])
    if len(parsed) != 1 or "@" not in parsed[0][1]:
        raise ValueError(f"{text!r} is not an e-mail address")
    try:
        Address(addr_spec=parsed[0][1])
    except (ValueError, IndexError) as exc:
        raise ValueError(f"{text!r} is not an e-mail address: {exc}") from None
    return text


def _hostport(value: Any) -> tuple[str, int]:
    text = values.nonempty_string(value)
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r} is not host:port (like mail.example.com:587)")
    return host.strip("[]"), int(port)


def _url(value: Any) -> str:
    text = values.nonempty_string(value)
    if not text.startswith(("http://", "https://")):
        raise ValueError(f"{text!r} is not an http:// or https:// URL")
    return text


def _name(value: Any) -> str:
    text = values.nonempty_string(value)
    if not set(text) <= NAME_CHARACTERS:
        raise ValueError(f"{text!r} may only contain letters, digits, '_', '-' and '.' (it names a state file)")
    return text


def _smtp(fields: Fields) -> Smtp | None:
    hostport = fields.get("smarthost", _hostport)
    sender = fields.get("from", _address)
    username = fields.get("auth_username", values.string, "")
    password_file = fields.get("auth_password_file", values.nonempty_string, "")
    require_tls = fields.get("require_tls", values.boolean, True)
    ca_file = fields.get("ca_file", values.nonempty_string, "")
    hello = fields.get("hello", values.nonempty_string, "")
    if fields.raw("auth_password") is not None:
        fields.error("auth_password", "keep the password out of the file: auth_password_file")
    if password_file and not os.path.isfile(password_file):
        fields.error("auth_password_file", f"{password_file}: no such file")
    if bool(username) != bool(password_file):
        fields.error("auth_username", "give both auth_username and auth_password_file, or neither")
    fields.finish()
    if hostport is None or sender is None:
        return None
    return Smtp(hostport[0], hostport[1], sender, username or "", password_file or "",
                True if require_tls is None else require_tls, ca_file or "", hello or "")


def _scheduled(fields: Fields, services: set[str], has_smtp: bool) -> Scheduled | None:
    name = fields.get("name", _name)
    schedule = fields.get("schedule", _cron)
    tz_name = fields.get("time_zone", values.nonempty_string, "UTC")
    try:
        tz = zone(tz_name or "UTC")
    except ValueError as exc:
        fields.error("time_zone", str(exc))
        tz = ZoneInfo("UTC")
    period_text = fields.get("period", values.nonempty_string)
    period = None
    if period_text is not None:
        try:
            period = parse_period(period_text, tz)
        except ValueError as exc:
            fields.error("period", f"{exc}" if "use" in str(exc) else f"{exc}; use {PERIOD_HELP}")
    history = fields.get("history", values.integer, None)
    if history is not None and not 0 <= history <= 60:
        fields.error("history", "must be between 0 and 60")
    wanted = fields.get("services", values.list_of(values.nonempty_string), []) or []
    for unknown in sorted(set(wanted) - services):
        fields.error("services", f"{unknown!r} is not the service of any spec given to ui "
                                 f"(known: {', '.join(sorted(services)) or 'none'})")
    email = webhook = None
    mail = fields.section("email")
    if mail is not None:
        to = mail.get("to", values.list_of(_address), []) or []
        subject = mail.get("subject", values.nonempty_string, "KPI report: {period}")
        mail.finish()
        if not to:
            mail.report.error(mail.line, mail.field("to"), "give at least one recipient")
        elif not has_smtp:
            fields.error("email", "needs the smtp section at the top of the file")
        else:
            email = Email(tuple(to), subject or "KPI report: {period}")
    hook = fields.section("webhook")
    if hook is not None:
        url = hook.get("url", _url, "")
        url_file = hook.get("url_file", values.nonempty_string, "")
        link = hook.get("link", _url, "")
        hook.finish()
        if bool(url) == bool(url_file):
            hook.report.error(hook.line, hook.field("url"), "give url or url_file (for a URL that holds a token)")
        elif url_file and not os.path.isfile(url_file):
            hook.error("url_file", f"{url_file}: no such file")
        else:
            webhook = Webhook(url or "", url_file or "", link or "")
    if mail is None and hook is None:
        fields.report.error(fields.line, fields.path, "give email, webhook or both: where the report goes")
    fields.finish()
    if name is None or schedule is None or period is None:
        return None
    count = history if history is not None else 12 if period.is_calendar else 0
    return Scheduled(name, schedule, tz, period, count, tuple(wanted), email, webhook)


def parse_reports(data: Any, file: str, services: set[str]) -> tuple[ReportsConfig | None, FileProblems]:
    report = FileProblems(file)
    top = Fields(data if data is not None else LocatedMap(), "", report, 1)
    smtp_fields = top.section("smtp")
    smtp = _smtp(smtp_fields) if smtp_fields is not None else None
    directory = top.get("state_directory", values.nonempty_string)
    retry_delay = top.get("retry_delay", values.duration, RETRY_FIRST)
    if retry_delay is not None and not 1 <= retry_delay <= RETRY_LAST:
        top.error("retry_delay", "must be between 1s and 30m")
    scheduled: list[Scheduled] = []
    seen: set[str] = set()
    for item, path, line in top.items("reports"):
        one = _scheduled(Fields(item, path, report, line), services, smtp_fields is not None)
        if one is None:
            continue
        if one.name in seen:
            report.error(line, f"{path}.name", f"{one.name!r} is already the name of another report")
            continue
        seen.add(one.name)
        scheduled.append(one)
    if top.raw("reports") in (None, []):
        report.error(top.line, "reports", "is required: at least one scheduled report")
    top.finish()
    if report.errors or directory is None:
        return None, report
    base = Path(file).parent
    return ReportsConfig(file, base / directory, tuple(scheduled), smtp, retry_delay or RETRY_FIRST), report


def load_reports(path: str, services: set[str]) -> ReportsConfig:
    config, report = parse_reports(load_file(path), path, services)
    report.raise_if_errors()
    assert config is not None
    return config


@dataclass
class Delivered:
    """What went out for one period of one scheduled report: per channel, when (and the mail's Message-ID)."""

    period: str
    due: float
    sent: dict[str, dict[str, Any]] = field(default_factory=dict)
    attempts: int = 0
    last_error: str = ""


@dataclass
class State:
    """A scheduled report's memory, one JSON file: when its schedule was first seen (firings before that are
    not caught up) and what was delivered for each period."""

    path: Path
    since: float
    periods: dict[str, Delivered] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path, now: float) -> State:
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            state = cls(path, now)
            state.save()
            return state
        periods = {key: Delivered(**value) for key, value in data.get("periods", {}).items()}
        return cls(path, float(data["since"]), periods)

    def save(self) -> None:
        """Atomically and privately (``write_atomically``): a crash leaves the old state or the new."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        recent = dict(sorted(self.periods.items(), key=lambda item: item[1].due)[-100:])
        data = {"since": self.since, "periods": {key: vars(value) for key, value in recent.items()}}
        write_atomically(self.path, json.dumps(data, indent=1).encode())
