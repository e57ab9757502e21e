"""kpi-agent: collect operational metrics, expose them to Prometheus, compile KPI specs into rules."""

__version__ = "0.1.0"
