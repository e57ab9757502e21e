"""What `rules check` (and `rules generate`, before it writes) verifies beyond the spec's own validation:
promtool's verdict on every expression and on the compiled rules, and optionally the agent configs' metrics.
The live Prometheus check is agent.kpi.live (it needs aiohttp)."""

from __future__ import annotations

from agent.config.problems import Problem
from agent.kpi.model import ServiceSpec
from agent.kpi.promql import metric_names
from agent.kpi.promtool import check_compiled, check_expressions


def promtool_problems(specs: list[ServiceSpec], problems: list[Problem]) -> list[Problem]:
    """The expressions, then the compiled rules, each checked only while no error was found before them
    (``problems``: what loading the specs found)."""
    found: list[Problem] = []
    if not any(not p.warning for p in problems):
        found += check_expressions(specs)
    if not any(not p.warning for p in [*problems, *found]):
        found += check_compiled(specs)
    return found


def produced_metrics(config_files: tuple[str, ...]) -> set[str]:
    """Names of the series these agent configs produce (histograms as _bucket, _sum and _count)."""
    from agent.config.agent import load_config
    from agent.sources.kinds import exported_samples

    produced: set[str] = set()
    for config_file in config_files:
        config, _ = load_config(config_file)
        produced |= exported_samples(list(config.sources))
    return produced


def check_metric_names(specs: list[ServiceSpec], config_files: tuple[str, ...]) -> list[Problem]:
    """Warnings for metrics a KPI reads (selectors, raw queries, value expressions) that none of the agent
    configs produces."""
    produced = produced_metrics(config_files)
    configs = " or ".join(config_files)
    problems = []
    for spec in specs:
        for kpi in spec.kpis:
            for field, line, text in kpi.indicator_expressions:
                for metric in metric_names(text):
                    if metric not in produced:
                        problems.append(Problem(spec.file, line, field,
                                                f"{metric} is not produced by the agent config {configs} "
                                                "(fine if another exporter provides it)", warning=True))
    return problems
