"""gRPC source config: blackbox_exporter's grpc module keys, and the families a gRPC health check writes."""

from __future__ import annotations

from dataclasses import dataclass, field

from agent.config import values as config_values
from agent.config.fields import Fields
from agent.formatting import excerpt
from agent.series.family import gauge
from agent.sources.probe.client import TlsConfig, parse_tls_config
from agent.sources.probe.net import IpConfig, parse_ip_config

PHASES = ("resolve", "check")
# grpc.health.v1.HealthCheckResponse.ServingStatus, by value
SERVING_STATUSES = ("UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN")
# probes_total{result} values of a gRPC probe beyond the ones every prober has
RESULTS = (
    "not_serving",  # the server answered the check with a status other than SERVING
    "grpc_status",  # the call failed with a gRPC status (NOT_FOUND: unknown service; UNIMPLEMENTED: no health service)
)

DURATION = gauge("probe_grpc_duration_seconds", "Duration of the gRPC health check by phase", ["phase"])
SSL = gauge("probe_grpc_ssl", "Whether the connection used TLS")
STATUS_CODE = gauge("probe_grpc_status_code", "gRPC status code of the call (0: OK)")
HEALTH = gauge("probe_grpc_healthcheck_response", "1 for the serving status the server answered, 0 for the others",
               ["serving_status"])
FAMILIES = (DURATION, SSL, STATUS_CODE, HEALTH)


@dataclass(frozen=True)
class GrpcModule:
    service: str = ""  # "" asks about the server as a whole
    tls: bool = False
    tls_config: TlsConfig = field(default_factory=TlsConfig)
    metadata: tuple[tuple[str, str], ...] = field(default=(), repr=False)  # may carry credentials
    ip: IpConfig = field(default_factory=IpConfig)


def _metadata(value: object) -> tuple[tuple[str, str], ...]:
    """blackbox's metadata: a map of keys to one value or a list of values (gRPC metadata keys are lowercase
    ASCII; binary ``-bin`` keys are not supported)."""
    if not isinstance(value, dict):
        raise ValueError(f"expected a map of metadata keys to values, got {excerpt(value)}")
    pairs = []
    for key, values in value.items():
        name = config_values.nonempty_string(key).lower()
        if name.endswith("-bin") or name.startswith(":") or not all(c.isalnum() or c in "-_." for c in name):
            raise ValueError(f"{excerpt(key)} is not a gRPC metadata key (letters, digits, - _ .; no -bin keys)")
        for item in values if isinstance(values, list) else [values]:
            text = config_values.string(item)
            if not text.isprintable() or not text.isascii():
                raise ValueError(f"metadata {name!r}: values are printable ASCII")
            pairs.append((name, text))
    return tuple(pairs)


def parse_module(fields: Fields) -> GrpcModule:
    service = fields.get("service", config_values.string, "")
    tls = fields.get("tls", config_values.boolean, False)
    tls_config = parse_tls_config(fields.section("tls_config"))
    if fields.has("tls_config") and not tls and not fields.invalid & {"tls"}:
        fields.warn("tls_config", "is ignored without tls: true (as blackbox_exporter ignores it)")
    metadata = fields.get("metadata", _metadata, ())
    ip = parse_ip_config(fields)
    if ip.source_ip is not None:
        fields.error("source_ip_address", "a gRPC source cannot choose the address it connects from "
                     "(blackbox_exporter's grpc prober has no such setting)")
    return GrpcModule(service, tls, tls_config, metadata, ip)
