"""The agent's status page at ``/``: every source with its last result, last success and error, the error's
text, its series, and for log sources every file with its offset and lag. blackbox_exporter users get the
reason of a failed probe only from its debug output; here it is one page (and ``/api/v1/sources`` as JSON).

Pure: the runtime's status rows in, one self-contained HTML document out (no script, no external resource;
the page refreshes itself every 10 seconds).
"""

from __future__ import annotations

import html
import time
from typing import Any

REFRESH_SECONDS = 10
_LINKS = ("/metrics", "/-/healthy", "/-/ready", "/api/v1/status", "/api/v1/sources", "/api/v1/remote_write")
_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#1d1d1f}
h1{font-size:1.4em;margin:0 0 .2em} .meta{color:#555;margin-bottom:1em} .meta span{margin-right:1.2em}
table{border-collapse:collapse;width:100%} th,td{text-align:left;padding:.35em .6em;border-bottom:1px solid #ddd;
vertical-align:top} th{background:#f4f4f6;font-weight:600} td.num{text-align:right;font-variant-numeric:tabular-nums}
.ok{color:#0a7d32;font-weight:600} .bad{color:#b3261e;font-weight:600} .none{color:#777}
.error{color:#b3261e;font-family:ui-monospace,monospace;font-size:.9em;max-width:40em;overflow-wrap:anywhere}
.files td{border:0;padding:.1em .6em;font-size:.9em;color:#333} tr.filerow td{border-top:0;padding-top:0}
h2{font-size:1.15em;margin:1.4em 0 .4em}
.banner{background:#fdecea;border:1px solid #f5c2c0;padding:.6em;margin-bottom:1em;white-space:pre-wrap}
"""


def _ago(when: float | None, now: float) -> str:
    if when is None:
        return '<span class="none">never</span>'
    seconds = max(0.0, now - when)
    text = (f"{seconds:.0f}s" if seconds < 120 else f"{seconds / 60:.0f}m" if seconds < 7200
            else f"{seconds / 3600:.0f}h")
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(when))
    return f'<time datetime="{stamp}" title="{stamp}">{text} ago</time>'


def _result(result: str | None) -> str:
    if result is None:
        return '<span class="none">not yet</span>'
    css = "ok" if result == "success" else "bad"
    return f'<span class="{css}">{html.escape(result)}</span>'


def _reads_no_file(source: dict[str, Any]) -> bool:
    """A log source none of whose paths matches a file: most often a typo in a path, so counted as failing."""
    return source.get("files") == []


def _source_result(source: dict[str, Any]) -> str:
    if _reads_no_file(source) and source["last_result"] in (None, "success"):
        return '<span class="bad">no file</span>'
    return _result(source["last_result"])


def _size(value: int | None) -> str:
    return "?" if value is None else f"{value:,}"


def _files(row: dict[str, Any]) -> str:
    """A row under a log source: each file with how far it has been read."""
    files = row.get("files")
    if files is None:
        return ""
    if not files:
        patterns = ", ".join(html.escape(p) for p in row.get("paths", []))
        listing = f'<span class="none">no file matches {patterns}</span>'
    else:
        lines = "".join(
            f"<tr><td>{html.escape(f['path'])}</td><td class=num>read {_size(f['offset'])} of "
            f"{_size(f['size'])} bytes</td><td class=num>lag {_size(f['lag_bytes'])} bytes</td></tr>"
            for f in files)
        listing = f'<table class="files">{lines}</table>'
    return f'<tr class="filerow"><td></td><td colspan="7">{listing}</td></tr>'


def _targets(row: dict[str, Any]) -> str:
    """Rows under a discovering source: target files and endpoints whose last read failed, its failing targets
    with their errors, and refused targets."""
    failing, refusals = row.get("failing_targets"), row.get("refusals", [])
    if failing is None:
        return ""
    lines = "".join(
        f'<tr data-discovery="{html.escape(f["origin"])}"><td colspan="2">{html.escape(f["mechanism"])} discovery '
        f'{html.escape(f["origin"])}</td><td><span class="bad">failing</span> (keeping its last good targets)</td>'
        f'<td class="error">{html.escape(f["error"] or "")}</td></tr>' for f in row.get("discovery_failures", []))
    lines += "".join(
        f'<tr data-target="{html.escape(t["target"])}"><td>{html.escape(t["target"])}</td>'
        f'<td>{html.escape(t.get("url", t.get("address", "")))}</td><td>{_result(t["result"])}</td>'
        f'<td class="error">{html.escape(t["error"] or "")}</td></tr>' for t in failing)
    more = row["failing_targets_total"] - len(failing)
    if more > 0:
        lines += f'<tr><td colspan="4" class="none">and {more:,} more failing targets (see /metrics)</td></tr>'
    lines += "".join(f'<tr><td colspan="4" class="error">refused: {html.escape(text)}</td></tr>' for text in refusals)
    if not lines:
        return ""
    return f'<tr class="filerow"><td></td><td colspan="7"><table class="files">{lines}</table></td></tr>'


def _what(source: dict[str, Any]) -> str:
    """What a source collects from: its URL or target, or how many targets it discovered."""
    targets = source.get("targets")
    if targets is None:
        return html.escape(source.get("url", source.get("target", "")))
    others = ", ".join(f"{count:,} {state.replace('_', ' ')}" for state, count in targets.items()
                       if state != "probed" and count)
    probed = targets.get("probed", 0)
    return f"{probed:,} target{'' if probed == 1 else 's'} probed" + (f" ({others})" if others else "")


def _bytes(value: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:,.0f} {unit}" if unit == "B" else f"{value:,.1f} {unit}"
        value /= 1024
    return ""


def _remote_write(endpoints: list[dict[str, Any]], now: float) -> str:
    """One row per remote_write endpoint: its state, why, and what waits in its buffer."""
    if not endpoints:
        return ""
    rows = []
    for e in endpoints:
        css = {"up to date": "ok", "behind": "none"}.get(e["state"], "bad")
        buffer = (f'{_bytes(e["buffer_bytes"])} of {_bytes(e["buffer_max_bytes"])} on disk' if e["buffer"]
                  else "memory only")
        if e["buffer_problem"]:
            buffer += f' <span class="error">(in memory: {html.escape(e["buffer_problem"])})</span>'
        rows.append(
            f'<tr data-remote="{html.escape(e["name"])}"><td><b>{html.escape(e["name"])}</b>'
            f'<div>{html.escape(e["url"])}</div></td><td><span class="{css}">{html.escape(e["state"])}</span></td>'
            f'<td>{_ago(e["last_success"], now)}</td><td class="error">{html.escape(e["error"] or "")}</td>'
            f'<td class=num>{e["pending_samples"]:,}</td><td>{buffer}</td>'
            f'<td class=num>{e["samples_sent"]:,.0f}</td><td class=num>{e["samples_failed"]:,.0f}</td>'
            f'<td class=num>{e["samples_dropped"]:,.0f}</td></tr>')
    return ("<h2>Remote write</h2><table id=remote_write><thead><tr><th>Endpoint</th><th>State</th>"
            "<th>Last success</th><th>Error</th><th>Pending samples</th><th>Buffer</th><th>Sent</th>"
            f"<th>Refused</th><th>Dropped</th></tr></thead><tbody>{''.join(rows)}</tbody></table>")


def render(agent: dict[str, Any], sources: list[dict[str, Any]], now: float | None = None,
           remote_write: list[dict[str, Any]] | None = None) -> str:
    """``agent``: version, uptime_seconds, config_file, ready, reload_error, page_warning; ``sources``: the
    runtime's rows; ``remote_write``: the endpoints' rows."""
    now = time.time() if now is None else now
    failing = sum(1 for s in sources if s["last_result"] not in (None, "success") or _reads_no_file(s))
    banner = ""
    if agent.get("reload_error"):
        banner = ('<div class="banner"><b>The last reload failed; the previous config keeps running.</b>\n'
                  f'{html.escape(agent["reload_error"])}</div>')
    if agent.get("page_warning"):
        banner += f'<div class="banner" id="page-warning">{html.escape(agent["page_warning"])}</div>'
    rows = []
    for source in sources:
        what = _what(source)
        rows.append(
            f'<tr data-source="{html.escape(source["name"])}"><td><b>{html.escape(source["name"])}</b>'
            f'<div>{what}</div></td><td>{html.escape(source["kind"])}</td><td>{_source_result(source)}</td>'
            f'<td>{_ago(source["last_success"], now)}</td><td>{_ago(source["last_error"], now)}</td>'
            f'<td class="error">{html.escape(source["last_error_text"] or "")}</td>'
            f'<td class=num>{source["series"]:,}</td><td class=num>{source["collections"]:,.0f}</td></tr>'
            + _files(source) + _targets(source))
    links = " ".join(f'<a href="{p}">{p}</a>' for p in _LINKS)
    table = ("<table id=sources><thead><tr><th>Source</th><th>Kind</th><th>Last result</th><th>Last success</th>"
             "<th>Last error</th><th>Error</th><th>Series</th><th>Collections</th></tr></thead>"
             f"<tbody>{''.join(rows)}</tbody></table>") if rows else "<p>No source is configured.</p>"
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}"><link rel="icon" href="data:,">'
        f'<title>kpi-agent status</title>'
        f'<style>{_STYLE}</style></head><body><h1>kpi-agent {html.escape(agent["version"])}</h1>'
        f'<div class="meta"><span>up {agent["uptime_seconds"] / 60:.0f} min</span>'
        f'<span>config {html.escape(agent["config_file"])}</span><span>{len(sources)} sources, '
        f'<b class="{"bad" if failing else "ok"}">{failing} failing</b></span>'
        f'<span>{"ready" if agent["ready"] else "starting"}</span></div>{banner}{table}'
        f'{_remote_write(remote_write or [], now)}'
        f'<p class="meta">{links}</p></body></html>')
