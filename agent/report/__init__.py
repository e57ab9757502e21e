"""KPI reports and the live scoreboard: the kpi:* series read back from Prometheus and shown to people.

Only the `report` and `ui` commands import this package's heavy parts (matplotlib), and only when they run:
the agent itself never loads them.
"""
