"""The families the agent exposes about itself (besides each source's ``kpi_agent_source_*``). Declared here,
apart from the runtime, so config checks can refuse a source metric that would take one of these names."""

from __future__ import annotations

from agent.series.family import counter, gauge, histogram

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

# The process families agent.series.exposition writes from /proc (the names and meaning client libraries use): names
# no source may take.
PROCESS_FAMILIES = (
    counter("process_cpu_seconds_total", "Total user and system CPU time spent in seconds."),
    gauge("process_virtual_memory_bytes", "Virtual memory size in bytes."),
    gauge("process_resident_memory_bytes", "Resident memory size in bytes."),
    gauge("process_start_time_seconds", "Start time of the process since unix epoch in seconds."),
    gauge("process_open_fds", "Number of open file descriptors."),
    gauge("process_max_fds", "Maximum number of open file descriptors."),
)

# The agent's own HTTP server and event loop: an SRE sees the agent struggle before targets look down.
HTTP_REQUESTS = counter("kpi_agent_http_requests_total", "Requests to the agent's HTTP server by handler and "
                        "status code", ["handler", "code"])
HTTP_DURATION = histogram("kpi_agent_http_request_duration_seconds", "Time to answer a request, by handler",
                          ["handler"], (0.001, 0.005, 0.025, 0.1, 0.25, 1, 2.5, 10))
HTTP_RESPONSE_SIZE = histogram("kpi_agent_http_response_size_bytes", "Size of responses (before gzip), by "
                               "handler", ["handler"], (1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8))
HTTP_CONNECTIONS = gauge("kpi_agent_http_connections", "Connections open to the agent's HTTP server")
HTTP_CONNECTIONS_LIMIT = gauge("kpi_agent_http_connections_limit", "Most connections the server holds at once "
                               "(--web.max-connections, capped to leave descriptors for probes and files)")
HTTP_CONNECTIONS_CLOSED = counter("kpi_agent_http_connections_closed_total", "Connections the server closed or "
                                  "refused to protect itself, by reason", ["reason"])
WEB_CONFIG_OK = gauge("kpi_agent_web_config_last_reload_successful", "Whether the web config file, last read, "
                      "was valid (an invalid one leaves the previous in force)")
LOOP_LAG = histogram("kpi_agent_event_loop_lag_seconds", "How late a timer set every 100 ms fires: time the event "
                     "loop was busy", [], (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1))
LOOP_LAG_MAX = gauge("kpi_agent_event_loop_lag_max_seconds", "Longest event loop lag in the last minute")
LOG_SUPPRESSED = counter("kpi_agent_log_messages_suppressed_total", "Log records dropped because the same "
                         "message repeated more than 10 times a minute")
SERVER_FAMILIES = (HTTP_REQUESTS, HTTP_DURATION, HTTP_RESPONSE_SIZE, HTTP_CONNECTIONS, HTTP_CONNECTIONS_LIMIT,
                   HTTP_CONNECTIONS_CLOSED, WEB_CONFIG_OK, LOOP_LAG, LOOP_LAG_MAX, LOG_SUPPRESSED)
CLOSE_REASONS = ("limit", "evicted_idle", "evicted_waiting", "header_timeout", "idle_timeout", "tls_handshake",
                 "tls_san")

AGENT_FAMILIES = (BUILD_INFO, RELOAD_OK, RELOAD_TIME, RELOADS, CRASHES, SOURCES, PROBE_DELAY, *SERVER_FAMILIES)
