"""The kpi:* names are a public contract: agent.kpi.conventions spells each once, the README's table lists
the same ones, and the compiled rules record nothing else. Names here are literals on purpose: renaming a
series in conventions.py must fail a test."""

import re
from pathlib import Path

from agent.kpi import conventions
from agent.kpi.compiler import compile_groups
from tests.kpi.helpers import load_spec

ROOT = Path(__file__).parents[2]


def readme_series() -> set[str]:
    """The series names of the README's "Generated series" table, windows as <W>."""
    section = (ROOT / "README.md").read_text().split("### Generated series")[1]
    table = re.search(r"^\|.*?(?=^[^|])", section, re.MULTILINE | re.DOTALL)
    assert table, "no table under Generated series"
    rows = table.group().splitlines()[2:]
    return {name.split("{")[0] for row in rows for name in re.findall(r"`([^`]+)`", row.split("|")[1])}


def test_conventions_name_the_readme_contract_and_nothing_else():
    windowed = {conventions.side_rate("numerator", 3600), conventions.side_rate("denominator", 3600),
                conventions.ratio_rate(3600), conventions.burn_rate(3600)}
    constants = {conventions.TARGET, conventions.WINDOW_SECONDS, conventions.ERROR_BUDGET, conventions.INFO,
                 conventions.NUMERATOR_LAST_SEEN, conventions.RATIO_PERIOD, conventions.MEETS_TARGET,
                 conventions.BUDGET_REMAINING, conventions.VALUE, conventions.VALUE_PERIOD}
    spelled = {name.replace("rate1h", "rate<W>") for name in windowed} | constants
    listed = {name.replace("rate5m", "rate<W>") for name in readme_series()}
    assert spelled == listed
    assert windowed == {"kpi:numerator:rate1h", "kpi:denominator:rate1h", "kpi:ratio:rate1h", "kpi:burn_rate:rate1h"}


def test_the_example_records_only_contract_series():
    recorded = {rule["record"] for group in compile_groups(load_spec(ROOT / "rules" / "shop.yaml"))
                for rule in group["rules"] if "record" in rule}
    listed = readme_series()
    patterns = [re.escape(name).replace("<W>", "[0-9dhms]+") for name in
                {n.replace("rate5m", "<W>") for n in listed} | listed]
    assert recorded and all(any(re.fullmatch(p, name) for p in patterns) for name in recorded), recorded
    assert {"kpi:ratio:rate5m", "kpi:ratio:rate1h", "kpi:ratio:period", "kpi:value", "kpi_info"} <= recorded


def test_alert_names():
    assert (conventions.ERROR_BUDGET_BURN_ALERT, conventions.BELOW_TARGET_ALERT, conventions.ABOVE_TARGET_ALERT,
            conventions.NO_DATA_ALERT, conventions.NO_TRAFFIC_ALERT, conventions.NUMERATOR_ABSENT_ALERT,
            conventions.SELECTOR_CANNOT_MATCH_ALERT) == (
        "KPIErrorBudgetBurn", "KPIBelowTarget", "KPIAboveTarget", "KPINoData", "KPINoTraffic", "KPINumeratorAbsent",
        "KPISelectorCannotMatch")
