"""A telescoped window after Prometheus was down: the slot whose evaluation was missed is left out; it is
never filled with an older sample found by Prometheus' 5-minute lookback, whose slice lies elsewhere.

A real Prometheus resumes on the data of one that recorded the KPI while every request failed and stopped
6 minutes ago (written with promtool tsdb create-blocks-from, so the test need not wait out the gap);
tests/benchmarks/bench_kpi_restart.py does the same in real time: stop, 4.5 minutes down, resume."""

import subprocess
import sys
import time

import pytest

from tests.helpers import wait_until
from tests.kpi.restart import SPEC, Exporter, Prometheus

pytestmark = pytest.mark.slow  # a real Prometheus


def recorded_while_failing(start: float, end: float) -> str:
    """OpenMetrics of the 5m rates a Prometheus recorded every second from ``start`` to ``end`` while all 100
    requests a second failed."""
    lines = []
    for name, value in (("kpi:denominator:rate5m", 100), ("kpi:numerator:rate5m", 0)):
        lines.append(f"# TYPE {name} gauge")
        lines += [f'{name}{{kpi="availability",kpi_service="shop"}} {value} {t}' for t in range(int(start), int(end))]
    return "\n".join(lines) + "\n# EOF\n"


def test_a_slot_missed_while_prometheus_was_down_is_left_out(promtool, prometheus_bin, tmp_path):
    (tmp_path / "shop.yaml").write_text(SPEC)
    generated = subprocess.run([sys.executable, "-m", "agent", "rules", "generate", str(tmp_path / "shop.yaml"),
                                "--out", str(tmp_path / "rules"), "--interval", "1s"], capture_output=True, text=True)
    assert generated.returncode == 0, generated.stderr
    stopped = time.time() - 360
    (tmp_path / "before.om").write_text(recorded_while_failing(stopped - 300, stopped))
    backfill = subprocess.run([promtool, "tsdb", "create-blocks-from", "openmetrics", str(tmp_path / "before.om"),
                               str(tmp_path / "data")], capture_output=True, text=True)
    assert backfill.returncode == 0, backfill.stdout + backfill.stderr
    exporter = Exporter()  # since the restart, nothing fails
    prometheus = Prometheus(prometheus_bin, tmp_path, exporter.port, [tmp_path / "rules" / "shop.rules.yml"])
    prometheus.start()
    try:
        kpi = '{kpi="availability"}'
        wait_until(lambda: prometheus.value(f"kpi:ratio:rate10m{kpi}"), timeout=60, interval=0.5,
                   what="the 10m ratio to be recorded")
        time.sleep(3)
        at = time.time() - 2  # evaluations before this instant are complete
        # the trap: 5 minutes ago there is no sample, and the lookback finds the one of 6 minutes ago
        assert prometheus.value(f"kpi:denominator:rate5m{kpi} offset 5m", at) == 100
        assert prometheus.value(f"last_over_time(kpi:denominator:rate5m{kpi}[999ms] offset 5m)", at) is None
        # one of the window's two slots has its sample: the 10m rate counts it alone (half the 5m rate, as
        # with no traffic in the other slot), so the ratio is the current slot's: nothing failed
        assert prometheus.value(f"kpi:denominator:rate10m{kpi} / kpi:denominator:rate5m{kpi}", at) == 0.5
        assert prometheus.value(f"kpi:ratio:rate10m{kpi}", at) == 1.0
    finally:
        prometheus.stop()
        exporter.stop()
