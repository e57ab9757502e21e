"""TCP module config: blackbox_exporter's tcp module keys (``query_response`` steps, ``tls``, ``tls_config``, the
IP protocol and source address), flat in the source, and the families a TCP probe writes."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from agent.config import regex, values
from agent.config.fields import Fields
from agent.config.validation import label_name
from agent.formatting import excerpt
from agent.series.family import FamilySpec, gauge
from agent.sources.base import DeclaredFamily
from agent.sources.probe.client import TlsConfig, parse_tls_config
from agent.sources.probe.families import (
    DNS_LOOKUP,
    FAILED_DUE_TO_BYTES,
    FAILED_DUE_TO_REGEX,
    IP_ADDR_HASH,
    IP_PROTOCOL,
    NET_FAMILIES,
    TLS_FAMILIES,
)
from agent.sources.probe.model import ProbeSettings
from agent.sources.probe.net import IpConfig, parse_ip_config

# probes_total{result} values of TCP probes beyond the common ones
RESULTS = (
    "expect_regex",  # the connection ended before a line matched an expect regexp
    "expect_bytes",  # the bytes read were not expect_bytes
)
TCP_FAMILIES = (FAILED_DUE_TO_REGEX, FAILED_DUE_TO_BYTES, *TLS_FAMILIES, *NET_FAMILIES)
ALWAYS = {FAILED_DUE_TO_REGEX: 0.0, FAILED_DUE_TO_BYTES: 0.0, DNS_LOOKUP: 0.0, IP_PROTOCOL: 0.0, IP_ADDR_HASH: 0.0}
EXPECT_INFO = "probe_expect_info"


@dataclass(frozen=True)
class QueryStep:
    """One step of ``query_response``, done in this order: read lines until one matches ``expect`` (its
    captures expand into ``send`` and into ``labels``), read ``expect_bytes``, write ``send`` and a newline,
    then upgrade the connection to TLS if ``starttls``."""

    expect: str | None = None
    expect_bytes: bytes | None = None
    send: str = ""
    starttls: bool = False
    labels: tuple[tuple[str, str], ...] = ()  # (name, value template), into probe_expect_info


@dataclass(frozen=True)
class TcpModule:
    query_response: tuple[QueryStep, ...] = ()
    tls: bool = False  # TLS from the first byte
    tls_config: TlsConfig = field(default_factory=TlsConfig)
    ip: IpConfig = field(default_factory=IpConfig)

    @property
    def uses_tls(self) -> bool:
        return self.tls or any(step.starttls for step in self.query_response)

    @property
    def expect_labels(self) -> tuple[str, ...]:
        """The label names of probe_expect_info, in the order the steps give them."""
        return tuple(dict.fromkeys(name for step in self.query_response for name, _ in step.labels))


def expect_info(module: TcpModule) -> FamilySpec:
    return gauge(EXPECT_INFO, "What the expect regexps matched (the labels of query_response); the value is 1",
                 module.expect_labels)


def module_families(module: TcpModule, where: tuple[int | None, str]) -> list[DeclaredFamily]:
    return [DeclaredFamily(expect_info(module), *where)] if module.expect_labels else []


def _regex(value: Any) -> str:
    return regex.parse(value).pattern


def _bytes(value: Any) -> bytes:
    text = values.string(value)
    if not text:
        raise ValueError("expected at least one byte")
    return text.encode("utf-8")


def _label_list(reserved: frozenset[str]) -> Any:
    def parse(value: Any) -> tuple[tuple[str, str], ...]:
        if not isinstance(value, list):
            raise ValueError(f"expected a list of {{name: ..., value: ...}}, got {excerpt(value)}")
        labels = []
        for item in value:
            if not isinstance(item, dict) or set(item) != {"name", "value"}:
                raise ValueError(f"expected {{name: ..., value: ...}}, got {excerpt(item)}")
            name = label_name(item["name"])
            if name in reserved:
                raise ValueError(f"label {name!r} is already set by the agent")
            labels.append((name, values.string(item["value"])))
        return tuple(labels)

    return parse


def _parse_step(fields: Fields, reserved: frozenset[str]) -> QueryStep:
    expect = fields.get("expect", _regex, None)
    step = QueryStep(expect, fields.get("expect_bytes", _bytes, None), fields.get("send", values.string, ""),
                     fields.get("starttls", values.boolean, False), fields.get("labels", _label_list(reserved), ()))
    if step.labels and expect is None and "expect" not in fields.invalid:
        fields.error("labels", "takes its values from the captures of expect: add an expect")
    if expect is not None:
        for _, template in step.labels:
            _check_template(fields, "labels", template, expect)
        if step.send:
            _check_template(fields, "send", step.send, expect)
    fields.finish()
    return step


def _check_template(fields: Fields, key: str, template: str, pattern: str) -> None:
    """A $1 / ${name} beyond what the regexp captures expands to nothing in Go; here it is a mistake to say."""
    compiled = regex.compile(pattern)
    for found in re.finditer(r"\$(?:\{([a-zA-Z0-9_]+)\}|([a-zA-Z0-9_]+))", template):
        name = found.group(1) or found.group(2)
        if name.isdigit() and int(name) > compiled.groups or not name.isdigit() and name not in compiled.groupindex:
            fields.error(key, f"${name} is not a group of expect {excerpt(pattern)}")


def parse_module(fields: Fields, settings: ProbeSettings, reserved: frozenset[str]) -> TcpModule:
    steps = [_parse_step(Fields(item, path, fields.report, line), reserved | set(settings.labels))
             for item, path, line in fields.items("query_response")]
    tls = fields.get("tls", values.boolean, False)
    tls_config = parse_tls_config(fields.section("tls_config"))
    return TcpModule(tuple(steps), tls, tls_config, parse_ip_config(fields))
