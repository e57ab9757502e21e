"""Debian's prometheus-blackbox-exporter probing the same target as our prober, in the same test.

``blackbox(modules)`` (a pytest fixture) starts the exporter on a ``modules:`` block and returns a ``Blackbox``;
``Blackbox.probe(module, target)`` asks its ``/probe`` endpoint and parses the page the way Prometheus reads it.
``compare(ours, theirs)`` holds our page of one target to theirs: the same series names with the same label
names (beyond the labels each side adds by design), so a dashboard or an alert written for blackbox_exporter
reads ours unchanged.
"""

from __future__ import annotations

import subprocess
import urllib.parse
from collections.abc import Iterable, Iterator

import pytest

from tests.helpers import Exposition, fetch, free_port, stop_processes, wait_until
from tests.tools import require_tool

# Labels our series carry and blackbox's /probe page cannot (Prometheus adds instance/job to its series):
# the identity of the source and target, and labels of our own families.
OUR_LABELS = frozenset({"target", "source", "kind"})


class Blackbox:
    """One running blackbox_exporter."""

    def __init__(self, process: subprocess.Popen, port: int):
        self.process = process
        self.base = f"http://127.0.0.1:{port}"

    def probe(self, module: str, target: str, timeout: float = 15.0) -> Exposition:
        """What a scrape of ``/probe?module=...&target=...`` returns, parsed strictly (a family blackbox declares
        with a name ours strips _total from is allowed: ``ours=False``)."""
        query = urllib.parse.urlencode({"module": module, "target": target})
        status, body = fetch(f"{self.base}/probe?{query}", timeout=timeout)
        assert status == 200, (status, body[:300])
        return Exposition(body.encode(), ours=False)

    def debug(self, module: str, target: str, timeout: float = 15.0) -> str:
        """Blackbox's own log of one probe (``debug=true``): its reason for a failure, for assertion messages."""
        query = urllib.parse.urlencode({"module": module, "target": target, "debug": "true"})
        return fetch(f"{self.base}/probe?{query}", timeout=timeout)[1]


@pytest.fixture
def blackbox(tmp_path) -> Iterator:  # noqa: ANN001 - pytest's tmp_path
    """``blackbox(modules_yaml) -> Blackbox``: the exporter started on ``modules:`` (the text under that key),
    stopped after the test."""
    binary = require_tool("prometheus-blackbox-exporter")
    started: list[subprocess.Popen] = []

    def start(modules: str) -> Blackbox:
        config = tmp_path / f"blackbox-{len(started)}.yml"
        config.write_text("modules:\n" + "".join(f"  {line}\n" for line in modules.strip("\n").splitlines()))
        port = free_port()
        process = subprocess.Popen([binary, f"--config.file={config}", f"--web.listen-address=127.0.0.1:{port}"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        started.append(process)
        exporter = Blackbox(process, port)
        try:
            wait_until(lambda: fetch(exporter.base + "/-/healthy")[0] == 200, what="blackbox_exporter up")
        except AssertionError:
            process.terminate()
            raise AssertionError(f"blackbox_exporter did not start: {process.stderr.read().decode()[-2000:]}"
                                 ) from None
        return exporter

    yield start
    stop_processes(started)


def shape(page: Exposition, names: Iterable[str] | None = None, ignore_labels: frozenset[str] = OUR_LABELS,
          ) -> dict[str, set[frozenset[tuple[str, str]]]]:
    """Series name -> the label sets of its series (without ``ignore_labels``), for the names given (default:
    every ``probe_*`` series)."""
    wanted = set(names) if names is not None else None
    found: dict[str, set[frozenset[tuple[str, str]]]] = {}
    for series in page.series:
        if wanted is not None and series.name not in wanted:
            continue
        if wanted is None and not series.name.startswith("probe_"):
            continue
        labels = frozenset((k, v) for k, v in series.labels.items() if k not in ignore_labels)
        found.setdefault(series.name, set()).add(labels)
    return found


def compare(ours: Exposition, theirs: Exposition, ours_only: Iterable[str] = (), values: Iterable[str] = (),
            theirs_only: Iterable[str] = (), newer_labels: frozenset[str] = frozenset()) -> None:
    """Every ``probe_*`` series blackbox wrote for the probe is on our page with the same labels and label values
    (phases, serving statuses), and the series named in ``values`` have the same values. ``ours_only``: our
    families beyond blackbox's (``probes_total``, the latency histogram, ...), which must exist on our side.
    ``theirs_only`` and ``newer_labels``: where Debian's blackbox_exporter 0.23 differs from 0.28, whose series
    we write (0.23 shows a gRPC probe's certificate expiry at 0 without TLS; 0.28 added ``serialnumber``)."""
    their_shape = shape(theirs, ignore_labels=OUR_LABELS | newer_labels)
    for name in theirs_only:
        their_shape.pop(name, None)
    our_shape = shape(ours, ignore_labels=OUR_LABELS | newer_labels)
    missing = {name: sorted(map(sorted, labelsets - our_shape.get(name, set())))
               for name, labelsets in their_shape.items() if labelsets - our_shape.get(name, set())}
    assert not missing, f"blackbox series missing from ours (or with other labels): {missing}\nours: {our_shape}"
    extra = set(our_shape) - set(their_shape) - set(ours_only)
    assert not extra, f"our probe_* series blackbox does not write (declare them in ours_only): {sorted(extra)}"
    for name in values:
        mine = {frozenset((k, v) for k, v in s.labels.items() if k not in OUR_LABELS): s.value
                for s in ours.find(name)}
        theirs_values = {frozenset(s.labels.items()): s.value for s in theirs.find(name)}
        assert mine == theirs_values, f"{name}: ours {mine} != blackbox's {theirs_values}"
