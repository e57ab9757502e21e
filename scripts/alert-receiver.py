#!/usr/bin/env python3
"""Prints what Alertmanager sends: a webhook receiver for trying the shipped files before a real pager.

    python3 scripts/alert-receiver.py [--listen 127.0.0.1:5001]

deploy/alertmanager/alertmanager.yml sends its receivers (page, ticket, default) to http://127.0.0.1:5001/<name>;
each alert of each notification becomes one line on stdout:

    2026-12-06 14:03:12 page FIRING KPIErrorBudgetBurn shop/checkout_availability: KPI checkout_availability ...
      runbook: https://runbooks.example.com/shop/checkout

Python's standard library only: it runs without the agent's venv.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_BODY = 4 * 1024 * 1024  # Alertmanager's notifications are kilobytes


def lines(receiver: str, notification: dict) -> list[str]:
    """One line per alert (and its runbook, if it has one)."""
    out = []
    for alert in notification.get("alerts", []):
        labels, annotations = alert.get("labels", {}), alert.get("annotations", {})
        name = labels.get("alertname", "?")
        what = "/".join(labels[key] for key in ("kpi_service", "kpi") if key in labels)
        summary = annotations.get("summary") or annotations.get("description") or ""
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        out.append(f"{stamp} {receiver} {alert.get('status', '?').upper()} {name}"
                   f"{' ' + what if what else ''}{': ' + summary if summary else ''}")
        if annotations.get("runbook_url"):
            out.append(f"  runbook: {annotations['runbook_url']}")
    return out


class Receiver(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        length = int(self.headers.get("Content-Length") or 0)
        if not 0 < length <= MAX_BODY:
            self.send_error(400, "expected a JSON body of at most 4 MiB")
            return
        try:
            notification = json.loads(self.rfile.read(length))
        except ValueError as exc:
            self.send_error(400, f"not JSON: {exc}")
            return
        receiver = self.path.strip("/") or notification.get("receiver", "?")
        for line in lines(receiver, notification if isinstance(notification, dict) else {}):
            print(line, flush=True)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - http.server's name
        pass  # the alerts are the output, not the requests


def main() -> None:
    parser = argparse.ArgumentParser(description="Print the alerts Alertmanager sends to its webhooks.")
    parser.add_argument("--listen", default="127.0.0.1:5001", help="host:port (default: %(default)s)")
    listen = parser.parse_args().listen
    host, _, port = listen.rpartition(":")
    if not port.isdigit():
        parser.error(f"--listen {listen!r}: expected host:port")
    try:
        server = ThreadingHTTPServer((host or "127.0.0.1", int(port)), Receiver)
    except OSError as exc:
        parser.exit(1, f"alert-receiver: cannot listen on {listen}: {exc.strerror or exc}\n")
    print(f"listening on http://{listen}/ for Alertmanager's webhooks", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
