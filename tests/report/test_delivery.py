"""Scheduled reports delivered as people receive them: a real SMTP server (aiosmtpd, STARTTLS and a login
required) that is down when the report is due and comes up later, a webhook receiver, `kpi-agent ui`
restarted; the mail parsed, its PDF opened and its pages read."""

from __future__ import annotations

import email
import io
import json
import subprocess
import sys
import threading
from email import policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.helpers import fetch, free_port, scrape, stop_processes, wait_until

pytestmark = pytest.mark.slow  # fifteen months of history in a real Prometheus, Chromium printing PDFs

AGENT = [sys.executable, "-m", "agent"]
PASSWORD = "s3cret"


class Mailbox:
    """aiosmtpd on a fixed port, STARTTLS and AUTH required: every message it accepts, as bytes."""

    def __init__(self, port: int, certificate: Path, key: Path):
        self.port, self.certificate, self.key = port, certificate, key
        self.messages: list[bytes] = []
        self.logins: list[str] = []
        self._controller = None
        self._lock = threading.Lock()

    def start(self) -> None:
        import ssl

        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import AuthResult

        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.certificate, self.key)
        mailbox = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):  # noqa: N802, ANN001, ANN201 - aiosmtpd's API
                with mailbox._lock:
                    mailbox.messages.append(envelope.original_content or envelope.content)
                return "250 OK"

        def authenticate(server, session, envelope, mechanism, data):  # noqa: ANN001, ANN202
            mailbox.logins.append(data.login.decode())
            return AuthResult(success=data.login == b"kpi" and data.password == PASSWORD.encode())

        self._controller = Controller(Handler(), hostname="127.0.0.1", port=self.port, tls_context=context,
                                      require_starttls=True, authenticator=authenticate, auth_require_tls=True)
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None


@pytest.fixture
def certificate(tmp_path) -> tuple[Path, Path]:
    key, cert = tmp_path / "smtp.key", tmp_path / "smtp.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=mail",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    return cert, key


def deliveries(url: str) -> dict[tuple[str, str], float]:
    page = scrape(f"{url}/metrics", ours=False)
    return {(s.labels["channel"], s.labels["result"]): s.value for s in page.find("kpi_report_deliveries_total")}


def start_ui(history, reports: Path, port: int) -> subprocess.Popen:
    process = subprocess.Popen([*AGENT, "ui", str(history.specs), "--prometheus.url", history.url,
                                "--period", "last-month", "--time-zone", "Europe/Berlin", "--reports.file",
                                str(reports), "--web.listen-address", f"127.0.0.1:{port}"],
                               stderr=subprocess.DEVNULL)
    wait_until(lambda: fetch(f"http://127.0.0.1:{port}/-/healthy")[0] == 200, 30, what="ui listening")
    return process


class _Hook(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 - the http.server API
        self.server.messages.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


def test_a_scheduled_report_reaches_the_mailbox_and_the_webhook_once(history, certificate, tmp_path):
    cert, key = certificate
    smtp_port, ui_port = free_port(), free_port()
    receiver = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    receiver.messages = hooks = []  # type: ignore[attr-defined]
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    hook_port = receiver.server_address[1]
    (tmp_path / "password").write_text(PASSWORD + "\n")
    (tmp_path / "hook-url").write_text(f"http://127.0.0.1:{hook_port}/hook\n")
    reports = tmp_path / "reports.yaml"
    reports.write_text(f"""\
smtp:
  smarthost: 127.0.0.1:{smtp_port}
  from: KPI reports <kpi@shop.example>
  auth_username: kpi
  auth_password_file: {tmp_path / 'password'}
  ca_file: {cert}
state_directory: state
retry_delay: 1s
reports:
  - name: monthly-review
    schedule: "0 8 1 * *"
    time_zone: Europe/Berlin
    period: 2026-11
    history: 12
    services: [store]
    email: {{to: [team@shop.example]}}
    webhook: {{url_file: {tmp_path / 'hook-url'}, link: "https://kpi.shop.example/report"}}
""")
    # the schedule has been running since before its last firing: that firing is due now
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "monthly-review.json").write_text(json.dumps({"since": 0, "periods": {}}))
    mailbox = Mailbox(smtp_port, cert, key)
    ui = [start_ui(history, reports, ui_port)]
    url = f"http://127.0.0.1:{ui_port}"
    try:
        # the mail server is down: the webhook gets its message, the mail is retried, counted and shown
        wait_until(lambda: deliveries(url).get(("email", "failure"), 0) >= 2, 120, what="failed mail attempts")
        assert deliveries(url)[("webhook", "success")] == 1 and len(hooks) == 1
        status, wall = fetch(f"{url}/", timeout=120)
        assert status == 200 and "monthly-review: <span class=\"failed\">not delivered after" in wall
        mailbox.start()
        wait_until(lambda: deliveries(url).get(("email", "success"), 0) == 1, 120, what="the mail delivered")
        assert len(mailbox.messages) == 1 and mailbox.logins[-1] == "kpi"
        status, wall = fetch(f"{url}/", timeout=120)
        assert "monthly-review: November 2026 sent" in wall

        # a restart of both: nothing is sent again for November
        stop_processes(ui)
        mailbox.stop()
        mailbox.start()
        ui.append(start_ui(history, reports, ui_port))
        wait_until(lambda: "monthly-review: November 2026 sent" in fetch(f"{url}/", timeout=120)[1], 120,
                   what="the restarted ui to read its state")
        assert deliveries(url).get(("email", "success"), 0) == 0  # counters are the new process's
        assert len(mailbox.messages) == 1 and len(hooks) == 1
    finally:
        stop_processes(ui)
        mailbox.stop()
        receiver.shutdown()

    mail = email.message_from_bytes(mailbox.messages[0], policy=policy.default)
    assert mail["Subject"] == "KPI report: November 2026"
    assert mail["From"] == "KPI reports <kpi@shop.example>" and mail["To"] == "team@shop.example"
    text = mail.get_body(("plain",)).get_content()
    assert "KPI report: November 2026 (Europe/Berlin)" in text and "4 KPIs: 2 met, 2 missed" in text
    row = next(line for line in text.splitlines() if "store/checkout_errors" in line)
    assert row.split()[:2] == ["MISSED", "store/checkout_errors"] and "▲ +0.90 pts" in row and "11/12" in row
    html = mail.get_body(("html",)).get_content()
    assert "<table" in html and "<style" not in html and "https://kpi.shop.example/report" in html
    attachments = list(mail.iter_attachments())
    assert [a.get_filename() for a in attachments] == ["kpi-report-monthly-review-November-2026.pdf"]
    from pypdf import PdfReader

    pdf = PdfReader(io.BytesIO(attachments[0].get_content()))
    pages = [page.extract_text() for page in pdf.pages]
    assert 2 <= len(pages) <= 10
    assert "KPI report" in pages[0] and "November 2026" in pages[0] and "Compliance history" in "".join(pages)
    assert all(name in "".join(pages) for name in ("availability", "checkout_errors", "conversion", "revenue"))

    message = hooks[0]
    assert message["text"].startswith("*KPI report: November 2026 — 4 KPIs: 2 met, 2 missed*")
    assert "store/checkout_errors" in message["text"] and "https://kpi.shop.example/report" in message["text"]
