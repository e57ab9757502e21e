"""TLS for probers: shared SSL contexts, and every TLS series of a handshake (blackbox_exporter's names).

Loading the system CA bundle costs about 16 ms; done per source, ten thousand sources took minutes to start.
A context depends only on the ``tls_config`` and the files it names, so sources with the same settings share
one, keyed by the config and the files' identity and modification time (a CA file replaced on disk gives a new
context to the sources built after it). A kind builds the contexts a reload needs in a worker thread
(``prepare``) before its sources are built, which only look them up. A context lives as long as a source uses
it.
"""

from __future__ import annotations

import hashlib
import ssl
import threading
import weakref
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from agent.config.files import file_stamp
from agent.sources.probe.client import TlsConfig, make_ssl_context
from agent.sources.probe.families import CERT_EXPIRY, CHAIN_EXPIRY, CHAIN_INFO, TLS_CIPHER, TLS_VERSION, TLS_VERSIONS

if TYPE_CHECKING:
    from agent.sources.probe.result import ProbeResult

TLS_NAMES = dict(zip(("TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"), TLS_VERSIONS, strict=True))


class TlsContexts:
    """SSL contexts of one kind, one per distinct TLS config and file versions, of class ``factory``."""

    def __init__(self, factory: type[ssl.SSLContext] = ssl.SSLContext) -> None:
        self.factory = factory
        self._contexts: weakref.WeakValueDictionary[tuple, ssl.SSLContext] = weakref.WeakValueDictionary()
        self._lock = threading.Lock()  # prepare runs in a worker thread, get on the event loop

    def prepare(self, configs: Iterable[TlsConfig]) -> list[ssl.SSLContext]:
        """Build the contexts these configs need (blocking: call it off the event loop). Returns them: the
        caller holds them until the sources that use them exist, or they could be collected in between."""
        return [self.get(tls) for tls in set(configs)]

    def get(self, tls: TlsConfig) -> ssl.SSLContext:
        """The context of ``tls``; built here (blocking) only if ``prepare`` did not see it."""
        key = tls, tuple(file_stamp(path) for path in (tls.ca_file, tls.cert_file, tls.key_file))
        with self._lock:
            context = self._contexts.get(key)
        if context is None:
            context = make_ssl_context(tls, self.factory)
            with self._lock:
                context = self._contexts.setdefault(key, context)
        return context


def _not_after(info: dict[str, Any]) -> float | None:
    text = info.get("notAfter")
    return ssl.cert_time_to_seconds(text) if isinstance(text, str) else None


def _chains(connection: Any) -> tuple[list[Any], list[Any]]:
    """(every certificate the server sent, the verified chain) as ``_ssl.Certificate`` objects. Python 3.13
    made these public (``get_unverified_chain``, ``get_verified_chain``); before, they are methods of the
    connection's ``_sslobj`` (since 3.10). Without them: nothing, and the leaf from getpeercert is used."""
    inner = getattr(connection, "_sslobj", connection)
    sent = getattr(inner, "get_unverified_chain", None)
    verified = getattr(inner, "get_verified_chain", None)
    try:
        return (list(sent() or []) if sent else []), (list(verified() or []) if verified else [])
    except (ssl.SSLError, ValueError):
        return [], []


# The attributes Go's pkix.Name knows, in the order its ToRDNSequence writes them; String() reverses the sequence.
_GO_NAME_ORDER = (("countryName", "C"), ("stateOrProvinceName", "ST"), ("localityName", "L"),
                  ("streetAddress", "STREET"), ("postalCode", "POSTALCODE"), ("organizationName", "O"),
                  ("organizationalUnitName", "OU"), ("commonName", "CN"), ("serialNumber", "SERIALNUMBER"))
_GO_SINGLE = frozenset({"commonName", "serialNumber"})  # Go keeps the last of these


def _name(rdns: Any) -> str:
    """A certificate name as Go's pkix.Name.String() writes it (so as blackbox labels it): "CN=x,O=y,C=z"."""
    known = dict(_GO_NAME_ORDER)
    values: dict[str, list[str]] = {}
    others: list[tuple[str, str]] = []  # attributes Go has no field for: first in its sequence, so last here
    for rdn in rdns or ():
        for key, value in rdn:
            if key in known:
                values.setdefault(key, []).append(value)
            else:
                others.append((key, value))
    sequence = list(others)
    for key, short in _GO_NAME_ORDER:
        found = values.get(key, [])
        sequence += [(short, value) for value in (found[-1:] if key in _GO_SINGLE else found)]
    return ",".join(f"{key}={_escaped(value)}" for key, value in reversed(sequence))


def _escaped(value: str) -> str:
    out = "".join("\\" + char if char in ',+"\\<>;' else char for char in value)
    if out.startswith((" ", "#")):
        out = "\\" + out
    if out.endswith(" ") and len(out) > 1:
        out = out[:-1] + "\\ "
    return out


def record_tls(result: ProbeResult, connection: Any) -> None:
    """Every TLS series of a completed handshake on ``connection`` (an ssl.SSLObject or SSLSocket), as blackbox
    reads them: version, cipher, the earliest expiry of the certificates the server sent and of the verified
    chain, and the server's certificate (fingerprint, issuer, subject, DNS names, serial)."""
    version = connection.version()
    if version is None:
        return
    result.info(TLS_VERSION, (TLS_NAMES.get(version, version),))
    if result.wants(TLS_CIPHER):
        cipher = connection.cipher()
        if cipher:
            result.info(TLS_CIPHER, (cipher[0],))
    if not (result.wants(CERT_EXPIRY) or result.wants(CHAIN_EXPIRY) or result.wants(CHAIN_INFO)):
        return
    sent, verified = _chains(connection)
    leaf = sent[0].get_info() if sent else connection.getpeercert()  # getpeercert: the leaf, when verified
    if sent:
        expiries = [e for e in (_not_after(cert.get_info()) for cert in sent) if e is not None]
        if expiries:
            result.set(CERT_EXPIRY, min(expiries))
    elif leaf and (expiry := _not_after(leaf)) is not None:
        result.set(CERT_EXPIRY, expiry)
    if verified:
        expiries = [e for e in (_not_after(cert.get_info()) for cert in verified) if e is not None]
        if expiries:
            result.set(CHAIN_EXPIRY, min(expiries))
    if leaf and sent and result.wants(CHAIN_INFO):
        der = ssl.PEM_cert_to_DER_cert(sent[0].public_bytes())
        names = ",".join(value for kind, value in leaf.get("subjectAltName", ()) if kind == "DNS")
        result.info(CHAIN_INFO, (hashlib.sha256(der).hexdigest(), _name(leaf.get("issuer")),
                                 _name(leaf.get("subject")), names, leaf.get("serialNumber", "").lower()))
