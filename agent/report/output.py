"""Writes a collected report to a file in the form asked for: the page, its PDF, or its tables as data."""

from __future__ import annotations

from pathlib import Path

from agent.report.model import Report

EXTENSIONS = {".pdf": "pdf", ".csv": "csv", ".json": "json"}


class OutputError(Exception):
    pass


def output_kind(path: str) -> str:
    """The form a file's name asks for: pdf, csv or json by extension, else html."""
    return EXTENSIONS.get(Path(path).suffix.lower(), "html")


def prepare(kind: str, chromium: str | None) -> str:
    """What writing ``kind`` needs, found before Prometheus is asked anything: Chromium for a PDF."""
    if kind != "pdf":
        return ""
    from agent.report.pdf import PdfError, find_chromium

    try:
        return find_chromium(chromium)
    except PdfError as exc:
        raise OutputError(str(exc)) from None


def render_bytes(report: Report, kind: str, chromium: str = "") -> bytes:
    if kind in ("html", "pdf"):
        from agent.report.render import render

        page = render(report)
        if kind == "html":
            return page.encode()
        from agent.report.pdf import PdfError, pdf_bytes

        try:
            return pdf_bytes(page, chromium)
        except PdfError as exc:
            raise OutputError(str(exc)) from None
    from agent.report.exports import export

    return export(report, kind).encode()


def write(report: Report, path: Path, kind: str, chromium: str = "") -> None:
    data = render_bytes(report, kind, chromium)
    try:
        path.write_bytes(data)
    except OSError as exc:
        raise OutputError(str(exc)) from None
