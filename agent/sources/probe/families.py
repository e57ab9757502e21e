"""The families every prober kind shares, blackbox_exporter's names first: written by the framework
(``agent.sources.probe.target``) for every kind, or by a kind through ``ProbeResult`` (TLS, name resolution)."""

from __future__ import annotations

from agent.series.family import DEFAULT_BUCKETS, counter, gauge, histogram

# Results every kind can give; a kind adds its own (ProberKind.results).
COMMON_RESULTS = (
    "success",
    "timeout",              # no complete answer within the timeout
    "dns_error",            # the host name did not resolve
    "connection_refused",   # nothing listens on the port
    "connection_error",     # other connection failures (reset, unreachable, protocol error)
    "tls_error",            # handshake or certificate verification failed
)

SUCCESS = gauge("probe_success", "Whether the probe succeeded")
DURATION = gauge("probe_duration_seconds", "How long the probe took")
PROBES = counter("probes_total", "Probes by result", ["result"])
LAST_RESULT = gauge("probe_last_result", "1 for the result of the last probe (one series per target)", ["result"])
LATENCY = histogram("probe_latency_seconds", "Probe duration", [], DEFAULT_BUCKETS)
COMMON_FAMILIES = (SUCCESS, DURATION, PROBES, LAST_RESULT, LATENCY)
# With retries only: how many retries the last probe needed, and every attempt by its own result (a failure a
# retry papered over is still counted).
RETRIES = gauge("probe_retries", "Retries the last probe needed: 0 when its first attempt decided it")
ATTEMPTS_TOTAL = counter("probe_attempts_total", "Probe attempts by result: every failed attempt counts, "
                         "retried or not", ["result"])
RETRY_FAMILIES = (RETRIES, ATTEMPTS_TOTAL)
NEVER_OMITTED = frozenset({SUCCESS.name, PROBES.name})

# Name resolution, for kinds that resolve a host themselves (agent.sources.probe.net).
DNS_LOOKUP = gauge("probe_dns_lookup_time_seconds", "How long the name resolution took")
IP_PROTOCOL = gauge("probe_ip_protocol", "IP protocol of the probe: 4 or 6")
IP_ADDR_HASH = gauge("probe_ip_addr_hash", "A hash of the IP address probed, to see when it changes")
NET_FAMILIES = (DNS_LOOKUP, IP_PROTOCOL, IP_ADDR_HASH)

# TLS, for every kind that speaks it (ProbeResult.tls).
CERT_EXPIRY = gauge("probe_ssl_earliest_cert_expiry", "Earliest NotAfter (Unix time) of the certificates the "
                    "server sent")
CHAIN_EXPIRY = gauge("probe_ssl_last_chain_expiry_timestamp_seconds", "Earliest NotAfter (Unix time) of the "
                     "verified chain")
CHAIN_INFO = gauge("probe_ssl_last_chain_info", "The server certificate of the verified chain; the value is 1",
                   ["fingerprint_sha256", "issuer", "subject", "subjectalternative", "serialnumber"])
TLS_VERSION = gauge("probe_tls_version_info", "TLS version of the connection", ["version"])
TLS_CIPHER = gauge("probe_tls_cipher_info", "TLS cipher of the connection", ["cipher"])
TLS_FAMILIES = (CERT_EXPIRY, CHAIN_EXPIRY, CHAIN_INFO, TLS_VERSION, TLS_CIPHER)
TLS_VERSIONS = ("TLS 1.0", "TLS 1.1", "TLS 1.2", "TLS 1.3")  # the probe_tls_version_info values we name

# What decided a probe that reads what the target says (HTTP bodies, TCP lines and bytes).
FAILED_DUE_TO_REGEX = gauge("probe_failed_due_to_regex", "Whether a regexp failed the probe")
FAILED_DUE_TO_BYTES = gauge("probe_failed_due_to_bytes", "Whether expected bytes failed the probe")

PROBES_SKIPPED = counter("kpi_agent_probes_skipped_total", "Probes that could not start in time (every probe slot "
                         "busy, or the agent ran late): the agent's problem, never counted against the target")
