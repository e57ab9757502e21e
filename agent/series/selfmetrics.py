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


# remote_write (agent/push): Prometheus's prometheus_remote_storage_* under our prefix, one group per endpoint
# whose series carry remote_name and url (without credentials or query) as Prometheus's do.
REMOTE_SAMPLES = counter("kpi_agent_remote_storage_samples_total", "Samples sent to the remote storage and "
                         "acknowledged")
REMOTE_SAMPLES_IN = counter("kpi_agent_remote_storage_samples_in_total", "Samples (stale markers included) "
                            "taken from the store into the queue")
REMOTE_FAILED = counter("kpi_agent_remote_storage_samples_failed_total", "Samples the remote storage refused for "
                        "good (an HTTP 4xx other than 429): dropped, never retried")
REMOTE_RETRIED = counter("kpi_agent_remote_storage_samples_retried_total", "Samples sent again after a "
                         "recoverable error (5xx, 429, a timeout, no connection)")
REMOTE_DROPPED = counter("kpi_agent_remote_storage_samples_dropped_total", "Samples never sent, by reason: "
                         "write_relabel (dropped by write_relabel_configs), buffer_full (the oldest, when the "
                         "buffer reached its size)", ["reason"])
REMOTE_PENDING = gauge("kpi_agent_remote_storage_samples_pending", "Samples queued and not yet acknowledged")
REMOTE_HIGHEST_IN = gauge("kpi_agent_remote_storage_highest_timestamp_in_seconds", "Timestamp of the newest "
                          "sample queued")
REMOTE_HIGHEST_SENT = gauge("kpi_agent_remote_storage_queue_highest_sent_timestamp_seconds", "Timestamp of the "
                            "newest sample the remote storage acknowledged")
REMOTE_BYTES = counter("kpi_agent_remote_storage_bytes_total", "Bytes of request bodies sent, after compression")
REMOTE_DURATION = histogram("kpi_agent_remote_storage_sent_batch_duration_seconds", "Duration of send calls to "
                            "the remote storage", [], (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30,
                                                       60))
REMOTE_BUFFER_BYTES = gauge("kpi_agent_remote_storage_buffer_bytes", "Bytes of the on-disk buffer (unsent data "
                            "and the segment being written)")
REMOTE_BUFFER_MAX = gauge("kpi_agent_remote_storage_buffer_max_bytes", "Size the on-disk buffer may reach before "
                          "its oldest data is dropped")
REMOTE_BUFFER_ON_DISK = gauge("kpi_agent_remote_storage_buffer_on_disk", "1 while the buffer is on disk; 0 while "
                              "the disk refuses (full, read-only, no directory) and samples wait in memory")
REMOTE_BUFFER_ERRORS = counter("kpi_agent_remote_storage_buffer_errors_total", "Buffer operations that failed, by "
                               "reason: disk (a write or read the disk refused), corrupted (a damaged record: "
                               "the rest of its segment is given up)", ["reason"])
REMOTE_ROUND_DURATION = gauge("kpi_agent_remote_storage_last_round_duration_seconds", "Time the last round took to "
                              "read the store, encode and queue its samples")
REMOTE_ROUNDS_SKIPPED = counter("kpi_agent_remote_storage_rounds_skipped_total", "Rounds not taken because the "
                                "previous one was still running at their time")
PUSH_FAMILIES = (REMOTE_SAMPLES, REMOTE_SAMPLES_IN, REMOTE_FAILED, REMOTE_RETRIED, REMOTE_DROPPED, REMOTE_PENDING,
                 REMOTE_HIGHEST_IN, REMOTE_HIGHEST_SENT, REMOTE_BYTES, REMOTE_DURATION, REMOTE_BUFFER_BYTES,
                 REMOTE_BUFFER_MAX, REMOTE_BUFFER_ON_DISK, REMOTE_BUFFER_ERRORS, REMOTE_ROUND_DURATION,
                 REMOTE_ROUNDS_SKIPPED)

AGENT_FAMILIES = (BUILD_INFO, RELOAD_OK, RELOAD_TIME, RELOADS, CRASHES, SOURCES, PROBE_DELAY, *SERVER_FAMILIES,
                  *PUSH_FAMILIES)
