"""Reading KPI spec files into the model (agent.kpi.model), one small reader per part of the spec:

- ``document``: the file (service, labels, the list of KPIs): ``parse_spec``
- ``kpi``: one KPI (name, window, target, labels, group_by, supporting metrics)
- ``indicator``: what it measures (ratio, latency, bool_gauge or value)
- ``alerting``: how it alerts (burn-rate tiers and their windows, threshold, no-data alerts)
- ``values``: the small value parsers they share (targets, alert names, bucket bounds, alert windows)

Every problem is reported as file:line: field: message, all of a file's at once. Loading files and
directories of specs is agent.kpi.loading.
"""
