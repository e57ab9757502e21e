"""The families the agent exposes about itself (besides each source's ``kpi_agent_source_*``). Declared here,
apart from the runtime, so config checks can refuse a source metric that would take one of these names."""

from __future__ import annotations

from agent.store import counter, gauge, histogram

BUILD_INFO = gauge("kpi_agent_build_info", "Build information; the value is always 1", ["version", "python_version"])
RELOAD_OK = gauge("kpi_agent_config_last_reload_successful", "Whether the last configuration reload attempt was "
                  "successful")
RELOAD_TIME = gauge("kpi_agent_config_last_reload_success_timestamp_seconds",
                    "Timestamp of the last successful configuration reload")
RELOADS = counter("kpi_agent_config_reloads_total", "Configuration reload attempts", ["result"])
CRASHES = counter("kpi_agent_source_crashes_total", "Sources restarted after an unexpected error (a bug: please "
                  "report)", ["source", "kind"])
SOURCES = gauge("kpi_agent_sources", "Sources this agent runs (its shard's, when sharded)", ["kind"])
PROBE_DELAY = histogram("kpi_agent_probe_start_delay_seconds", "How late probes started after they were due (event "
                        "loop lag, waiting for a probe slot)", [],
                        (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0))
AGENT_FAMILIES = (BUILD_INFO, RELOAD_OK, RELOAD_TIME, RELOADS, CRASHES, SOURCES, PROBE_DELAY)

# What prometheus_client's ProcessCollector exposes beside our families: names no source may take.
PROCESS_FAMILIES = (
    counter("process_cpu_seconds_total", "Total user and system CPU time spent in seconds."),
    gauge("process_virtual_memory_bytes", "Virtual memory size in bytes."),
    gauge("process_resident_memory_bytes", "Resident memory size in bytes."),
    gauge("process_start_time_seconds", "Start time of the process since unix epoch in seconds."),
    gauge("process_open_fds", "Number of open file descriptors."),
    gauge("process_max_fds", "Maximum number of open file descriptors."),
)
