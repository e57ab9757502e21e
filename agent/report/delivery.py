"""Runs the scheduled reports of a ``--reports.file`` beside `kpi-agent ui`, and delivers them.

For each firing: the report of the period its ``period`` names at the firing time is collected and printed to
PDF once, then each channel (e-mail through SMTP, a Slack-compatible webhook) that has not yet had this
period's report gets it. A channel that fails is retried, with a delay doubling from the file's
``retry_delay`` to 30 minutes, until it succeeds or the next firing is due; a channel that succeeded is
recorded on disk before anything else happens, and is never sent this period again, restarts included.
Mails carry a Message-ID made of the report's name and period, so even a mail whose acceptance was lost
with a crash reads as the same message to the receiving side.

Every attempt is counted (``kpi_report_deliveries_total{report, channel, result}`` on the ui's /metrics) and
the state of each scheduled report is shown at the foot of the wallboard.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import smtplib
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, getaddresses
from html import escape
from pathlib import Path

import aiohttp

from agent.kpi.model import ServiceSpec
from agent.kpi.prometheus_api import PrometheusClient
from agent.report.collect import collect
from agent.report.model import Report
from agent.report.periods import local_time_text
from agent.report.schedule import RETRY_LAST, Delivered, ReportsConfig, Scheduled, Smtp, State
from agent.series.family import counter, gauge
from agent.series.store import Group

log = logging.getLogger("agent.report")

SMTP_TIMEOUT = 60.0
DELIVERIES = counter("kpi_report_deliveries_total", "Attempts to deliver a scheduled report, by channel and result.",
                     ("report", "channel", "result"))
LAST_SENT = gauge("kpi_report_last_delivery_timestamp_seconds",
                  "When a scheduled report last reached a channel (Unix seconds).", ("report", "channel"))


class DeliveryError(Exception):
    pass


def message_id(scheduled: Scheduled, period: str, sender: str) -> str:
    """The same for every attempt at one period's mail: receivers see a retry as the same message."""
    domain = getaddresses([sender])[0][1].rpartition("@")[2] or "kpi-agent.invalid"
    digest = hashlib.sha256(f"{scheduled.name}\0{period}".encode()).hexdigest()[:24]
    return f"<kpi-report.{digest}@{domain}>"


def build_mail(smtp: Smtp, scheduled: Scheduled, report: Report, pdf: bytes, period: str) -> EmailMessage:
    from agent.report.digest import html_body, text_body

    mail = EmailMessage()
    mail["Subject"] = scheduled.email.subject.replace("{period}", period) if scheduled.email else period
    mail["From"] = smtp.sender
    mail["To"] = ", ".join(scheduled.email.to if scheduled.email else ())
    mail["Date"] = formatdate(localtime=False)
    mail["Message-ID"] = message_id(scheduled, period, smtp.sender)
    link = scheduled.webhook.link if scheduled.webhook else ""
    mail.set_content(text_body(report, link))
    mail.add_alternative(html_body(report, link), subtype="html")
    filename = f"kpi-report-{scheduled.name}-{period.replace(' ', '-')}.pdf"
    mail.add_attachment(pdf, maintype="application", subtype="pdf", filename=filename)
    return mail


def _send_mail(smtp: Smtp, mail: EmailMessage) -> None:
    """Blocking: runs in a worker thread. STARTTLS unless the port is 465 (TLS from the start); the server's
    certificate is verified against the system's CAs or ``ca_file``."""
    context = ssl.create_default_context(cafile=smtp.ca_file or None)
    password = Path(smtp.password_file).read_text().rstrip("\n") if smtp.password_file else ""
    try:
        if smtp.implicit_tls:
            client: smtplib.SMTP = smtplib.SMTP_SSL(smtp.host, smtp.port, local_hostname=smtp.hello or None,
                                                    timeout=SMTP_TIMEOUT, context=context)
        else:
            client = smtplib.SMTP(smtp.host, smtp.port, local_hostname=smtp.hello or None, timeout=SMTP_TIMEOUT)
        with client:
            client.ehlo()
            if not smtp.implicit_tls:
                if client.has_extn("starttls"):
                    client.starttls(context=context)
                    client.ehlo()
                elif smtp.require_tls:
                    raise DeliveryError(f"{smtp.host}:{smtp.port} does not offer STARTTLS (require_tls is true)")
            if smtp.username:
                client.login(smtp.username, password)
            refused = client.send_message(mail)
            if refused:
                raise DeliveryError(f"recipients refused: {', '.join(sorted(refused))}")
    except (smtplib.SMTPException, OSError, ssl.SSLError) as exc:
        raise DeliveryError(f"SMTP {smtp.host}:{smtp.port}: {exc}") from None


async def _post(session: aiohttp.ClientSession, url: str, payload: dict[str, object]) -> None:
    try:
        async with session.post(url, json=payload, timeout=aiohttp.ClientTimeout(total=30)) as response:
            if response.status >= 300:
                body = (await response.text())[:200]
                raise DeliveryError(f"webhook answered HTTP {response.status}: {body}")
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise DeliveryError(f"webhook: {type(exc).__name__}: {exc}") from None


@dataclass
class Status:
    """What the wallboard says of one scheduled report."""

    name: str
    next_due: float = 0.0
    last_period: str = ""
    last_sent: float = 0.0
    failing: str = ""  # the last error while a delivery is being retried
    attempts: int = 0


class Deliveries:
    def __init__(self, config: ReportsConfig, specs: Sequence[ServiceSpec], prometheus_url: str,
                 session: Callable[[], aiohttp.ClientSession], chromium: str, group: Group):
        self.config = config
        self.specs = tuple(specs)
        self.prometheus_url = prometheus_url
        self.session = session
        self.chromium = chromium
        self.retry_delay = config.retry_delay
        self.status = {s.name: Status(s.name) for s in config.reports}
        self._counts = group.counter(DELIVERIES)
        self._last = group.gauge(LAST_SENT)
        for scheduled in config.reports:
            for channel in scheduled.channels:
                for result in ("success", "failure"):
                    self._counts.ensure((scheduled.name, channel, result))

    async def run(self) -> None:
        await asyncio.gather(*(self._run(scheduled) for scheduled in self.config.reports))

    async def _run(self, scheduled: Scheduled) -> None:
        state = State.load(self.config.state_directory / f"{scheduled.name}.json", time.time())
        last = next(scheduled.firings(time.time(), reverse=True), None)
        if last is not None and last >= state.since:  # missed while down, or cut short by a restart
            await self._deliver(scheduled, state, last)
        while True:
            due = next(scheduled.firings(time.time()))
            self.status[scheduled.name].next_due = due
            await asyncio.sleep(max(0.0, due - time.time()))
            await self._deliver(scheduled, state, due)

    async def _deliver(self, scheduled: Scheduled, state: State, due: float) -> None:
        period = scheduled.period.current(due).label
        record = state.periods.setdefault(period, Delivered(period, due))
        status = self.status[scheduled.name]
        following = next(scheduled.firings(due))
        delay = self.retry_delay
        built: tuple[Report, bytes] | None = None
        while missing := [c for c in scheduled.channels if c not in record.sent]:
            for channel in missing:  # each channel on its own: a mail server down does not hold the webhook
                try:
                    if built is None:
                        built = await self._build(scheduled, due)
                    await self._send(scheduled, channel, built, period)
                except DeliveryError as exc:
                    record.attempts += 1
                    record.last_error = f"{channel}: {exc}"
                    state.save()
                    self._counts.inc((scheduled.name, channel, "failure"))
                    status.failing, status.attempts = record.last_error, record.attempts
                    log.warning("scheduled report not delivered, will retry", extra={
                        "report": scheduled.name, "channel": channel, "period": period, "error": str(exc),
                        "retry_in": delay})
                    continue
                record.sent[channel] = {"at": time.time()}
                state.save()  # before anything else: a channel that got the report never gets it again
                self._counts.inc((scheduled.name, channel, "success"))
                self._last.set((scheduled.name, channel), record.sent[channel]["at"])
                log.info("scheduled report delivered", extra={"report": scheduled.name, "channel": channel,
                                                              "period": period})
            if all(c in record.sent for c in scheduled.channels):
                break
            if time.time() + delay >= following:
                log.error("scheduled report given up: its next firing is due",
                          extra={"report": scheduled.name, "period": period})
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_LAST)
        status.failing, status.attempts = "", 0
        status.last_period, status.last_sent = period, max(v["at"] for v in record.sent.values())

    async def _build(self, scheduled: Scheduled, due: float) -> tuple[Report, bytes]:
        from agent.report.pdf import PdfError, pdf_bytes
        from agent.report.render import render

        specs = [s for s in self.specs if not scheduled.services or s.service in scheduled.services]
        report = await collect(specs, PrometheusClient(self.prometheus_url, self.session()), scheduled.period, due,
                               scheduled.history)
        if report.unreachable:
            raise DeliveryError(f"no report to send: {report.unreachable}")
        pdf = b""
        if scheduled.email is not None:
            try:
                pdf = await asyncio.to_thread(lambda: pdf_bytes(render(report), self.chromium))
            except PdfError as exc:
                raise DeliveryError(str(exc)) from None
        return report, pdf

    async def _send(self, scheduled: Scheduled, channel: str, built: tuple[Report, bytes], period: str) -> None:
        report, pdf = built
        if channel == "email":
            assert self.config.smtp is not None
            mail = build_mail(self.config.smtp, scheduled, report, pdf, period)
            await asyncio.to_thread(_send_mail, self.config.smtp, mail)
        else:
            from agent.report.digest import chat_message

            assert scheduled.webhook is not None
            try:
                url = scheduled.webhook.target()
            except OSError as exc:
                raise DeliveryError(f"webhook url_file: {exc}") from None
            await _post(self.session(), url, chat_message(report, scheduled.webhook.link))

    def status_html(self) -> str:
        """One line per scheduled report for the wallboard's foot."""
        parts = []
        for scheduled in self.config.reports:
            status = self.status[scheduled.name]
            text = f"{escape(scheduled.name)}: "
            if status.failing:
                text += (f'<span class="failed">not delivered after {status.attempts} attempt'
                         f'{"s" if status.attempts > 1 else ""} ({escape(status.failing)}), retrying</span>')
            elif status.last_period:
                text += (f"{escape(status.last_period)} sent "
                         f"{local_time_text(status.last_sent, scheduled.tz)}")
            else:
                text += "nothing sent yet"
            if status.next_due:
                text += f"; next {local_time_text(status.next_due, scheduled.tz)}"
            parts.append(text)
        return f'<div class="deliveries">Scheduled reports: {" · ".join(parts)}</div>' if parts else ""
