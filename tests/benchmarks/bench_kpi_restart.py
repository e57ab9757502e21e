"""A telescoped window across a real Prometheus restart: the 10m ratio after Prometheus was down mid-window.

Run: .venv/bin/python -m pytest tests/benchmarks/bench_kpi_restart.py -s   (about 12 minutes, mostly waiting)

Prometheus scrapes an exporter (100 requests a second) every second and evaluates the generated rules every
second (`rules generate --interval 1s`), and beside them the 10m rates as the compiler wrote them before this
change (each slice read through Prometheus' 5-minute lookback), recorded as kpi_before:*. Every request fails
for the first minute; Prometheus stops 5m30s after the start and resumes 4m30s later. One minute and a half
after the resume, the window's older slot fell in the gap: printed are the exact 10m ratio from the raw
counters (the failures are older than the window: 100%), today's rules (the missed slot left out) and the
rules before (the slot filled with the 5m rate recorded before the stop, whose slice holds failures).
"""

import re
import subprocess
import sys
import time

import yaml

from agent.kpi.render import to_yaml
from tests.kpi.restart import SPEC, Exporter, Prometheus
from tests.tools import require_tool

KPI = '{kpi="availability"}'


def rules_before(rules: dict) -> dict:
    """The 10m rates read as before: without the reach that leaves a missed slot out."""
    before = []
    for group in rules["groups"]:
        for rule in group["rules"]:
            if rule.get("record") in ("kpi:numerator:rate10m", "kpi:denominator:rate10m"):
                expr = re.sub(r"last_over_time\((kpi:[^\[]+)\[[^\]]+\]( offset [0-9a-z]+)?\)", r"\1\2", rule["expr"])
                before.append({"record": rule["record"].replace("kpi:", "kpi_before:"), "expr": expr})
    return {"groups": [{"name": "before", "interval": "1s", "rules": before}]}


def test_ratio_after_a_restart_mid_window(tmp_path):
    binary = require_tool("prometheus")
    (tmp_path / "shop.yaml").write_text(SPEC)
    subprocess.run([sys.executable, "-m", "agent", "rules", "generate", str(tmp_path / "shop.yaml"), "--out",
                    str(tmp_path / "rules"), "--interval", "1s"], check=True, capture_output=True)
    generated = tmp_path / "rules" / "shop.rules.yml"
    (tmp_path / "before.yml").write_text(to_yaml(rules_before(yaml.safe_load(generated.read_text()))))
    exporter = Exporter()
    exporter.fail(1.0)
    prometheus = Prometheus(binary, tmp_path, exporter.port, [generated, tmp_path / "before.yml"])
    started = time.time()
    prometheus.start()
    try:
        time.sleep(max(0.0, started + 60 - time.time()))
        exporter.fail(0.0)
        time.sleep(max(0.0, started + 330 - time.time()))
        prometheus.stop()
        stopped = time.time()
        time.sleep(270)
        prometheus.start()
        time.sleep(max(0.0, stopped + 360 - time.time()))
        at = time.time() - 2
        exact = prometheus.value('sum(increase(app_requests_total{code="200"}[10m])) / '
                                 "sum(increase(app_requests_total[10m]))", at)
        now = prometheus.value(f"kpi:ratio:rate10m{KPI}", at)
        before = prometheus.value(f"kpi_before:numerator:rate10m{KPI} / kpi_before:denominator:rate10m{KPI}", at)
    finally:
        prometheus.stop()
        exporter.stop()
    print(f"\n10m ratio {at - stopped:.0f}s after a stop, 270s down (failures only in the first minute, "
          f"before the window):\n  exact from raw counters: {exact:.4f}\n  today's rules: {now:.4f}\n"
          f"  rules before: {before:.4f}")
    assert now == 1.0 and before is not None and before < 1.0
