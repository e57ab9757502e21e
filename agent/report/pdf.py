"""The PDF of a report: headless Chromium prints the very HTML page the report writes.

Chromium's own ``--print-to-pdf`` is enough: the page has no script and loads nothing, so there is nothing
to wait for and no protocol to speak. The renderer runs without its sandbox (it cannot start as root or in
most containers with it); what it renders is our own page, whose Content-Security-Policy forbids scripts
and every network fetch.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
# No GPU, no QUIC, and none of the background connections (updates, sync, safe browsing) a closed
# network refuses: printing a local file needs none of them.
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--no-pdf-header-footer")
TIMEOUT = 120.0


class PdfError(Exception):
    pass


def find_chromium(explicit: str | None = None) -> str:
    if explicit:
        found = shutil.which(explicit)
        if not found:
            raise PdfError(f"--chromium {explicit!r}: no such executable")
        return found
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    raise PdfError("PDF output needs Chromium: install it (Debian: apt-get install chromium) or pass --chromium")


def pdf_bytes(html: str, chromium: str) -> bytes:
    """``html`` printed to PDF, page size and margins from the page's own @page rule."""
    with tempfile.TemporaryDirectory(prefix="kpi-report-") as directory:
        page = Path(directory) / "report.html"
        page.write_text(html, encoding="utf-8")
        target = Path(directory) / "report.pdf"
        command = [chromium, *FLAGS, f"--user-data-dir={Path(directory) / 'profile'}",
                   f"--print-to-pdf={target}", page.as_uri()]
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT,
                                    env={**os.environ, "HOME": directory})
        except subprocess.TimeoutExpired:
            raise PdfError(f"{chromium} did not print the PDF within {TIMEOUT:g}s") from None
        if result.returncode != 0 or not target.exists() or not target.read_bytes().startswith(b"%PDF-"):
            detail = (result.stderr.strip().splitlines() or ["no output"])[-1]
            raise PdfError(f"{chromium} failed to print the PDF (exit {result.returncode}): {detail}")
        return target.read_bytes()
