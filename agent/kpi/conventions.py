"""Every name the generated rules give: the ``kpi:*`` series, their labels, the alerts and the rule groups.

These names are a public contract (README, "Generated series"): dashboards, reports, Alertmanager routes and
users' own queries read them. They are spelled here and nowhere else; the compiler, the dashboards, the
reports and the generated promtool tests ask this module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from agent.formatting import format_duration
from agent.series.exposition import escape_label_value

if TYPE_CHECKING:  # for annotations only
    from agent.kpi.model import Kpi, ServiceSpec

# Labels every kpi:* series and alert carries, and the ones the compiler sets on some
KPI_LABEL = "kpi"
SERVICE_LABEL = "kpi_service"
SEVERITY_LABEL = "kpi_severity"  # page | ticket
TERM_LABEL = "kpi_term"  # tells the terms of a telescoped sum apart while they are summed
RESERVED_LABELS = (KPI_LABEL, SERVICE_LABEL, SEVERITY_LABEL, TERM_LABEL, "alertname")
RESERVED_GROUP_BY = (KPI_LABEL, SERVICE_LABEL, TERM_LABEL, "le")

# The two sides of a ratio, as recorded: good events (bad ones when lower is better) and all events
NUMERATOR, DENOMINATOR = "numerator", "denominator"

TARGET = "kpi:target"
WINDOW_SECONDS = "kpi:window:seconds"
ERROR_BUDGET = "kpi:error_budget:ratio"
INFO = "kpi_info"  # {description, objective, owner, higher_is_better}, always 1
NUMERATOR_LAST_SEEN = "kpi:numerator:last_seen_timestamp_seconds"
RATIO_PERIOD = "kpi:ratio:period"
MEETS_TARGET = "kpi:meets_target"
BUDGET_REMAINING = "kpi:error_budget_remaining:ratio"
VALUE = "kpi:value"
VALUE_PERIOD = "kpi:value:period"
BURN_RATE_NAME_RE = "kpi:burn_rate:rate.+"  # every window's burn rate, for {__name__=~...}

# Alerts
ERROR_BUDGET_BURN_ALERT = "KPIErrorBudgetBurn"
BELOW_TARGET_ALERT = "KPIBelowTarget"
ABOVE_TARGET_ALERT = "KPIAboveTarget"
NO_DATA_ALERT = "KPINoData"  # the default of no_data.alert_name
NO_TRAFFIC_ALERT = "KPINoTraffic"
NUMERATOR_ABSENT_ALERT = "KPINumeratorAbsent"
SELECTOR_CANNOT_MATCH_ALERT = "KPISelectorCannotMatch"
PROBLEM_LABEL = "kpi_problem"  # on KPISelectorCannotMatch: which name of which selector matches nothing


def window_name(seconds: float) -> str:
    """A window as series names and PromQL ranges spell it: 5m, 1h, 2d19h10m."""
    return format_duration(seconds)


def side_rate(side: str, window: float) -> str:
    """``kpi:numerator:rate1h``: events per second of one side of a ratio over ``window``."""
    return f"kpi:{side}:rate{window_name(window)}"


def ratio_rate(window: float) -> str:
    return f"kpi:ratio:rate{window_name(window)}"


def burn_rate(window: float) -> str:
    return f"kpi:burn_rate:rate{window_name(window)}"


def main_alert_name(kpi: Kpi) -> str:
    """The alert a KPI that misses its target fires: the spec's name, else the strategy's default."""
    if kpi.alerting.name:
        return kpi.alerting.name
    if kpi.alerting.strategy == "threshold":
        return BELOW_TARGET_ALERT if kpi.higher_is_better else ABOVE_TARGET_ALERT
    return ERROR_BUDGET_BURN_ALERT


def rule_group(service: str) -> str:
    """The group of a service's rates and alerts (evaluated together: alerts read this evaluation's rates)."""
    return f"kpi-{service}"


def period_rule_group(service: str) -> str:
    return f"kpi-{service}-period"


def labels_selector(labels: dict[str, str]) -> str:
    """``{a="x",b="y"}``, values escaped as PromQL reads them."""
    return "{" + ",".join(f'{k}="{escape_label_value(v)}"' for k, v in labels.items()) + "}"


def identity_labels(spec: ServiceSpec, kpi: Kpi) -> dict[str, str]:
    """The labels that tell one KPI's ``kpi:*`` series and alerts from every other's."""
    return {KPI_LABEL: kpi.name, SERVICE_LABEL: spec.service}


def identity_selector(spec: ServiceSpec, kpi: Kpi) -> str:
    """``{kpi="...",kpi_service="..."}``."""
    return labels_selector(identity_labels(spec, kpi))


def rule_labels(spec: ServiceSpec, kpi: Kpi, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The labels of every rule of a KPI: the spec's, the KPI's, its identity, then ``extra``, each sorted."""
    labels = dict(sorted(spec.labels.items()))
    labels.update(sorted(kpi.labels.items()))
    labels.update(identity_labels(spec, kpi))
    labels.update(sorted((extra or {}).items()))
    return labels
