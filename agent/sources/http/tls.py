"""SSL contexts for probes: one per distinct TLS config, built off the event loop, shared by every probe.

Loading the system CA bundle costs about 16 ms; done per source, ten thousand sources took minutes to start.
A context depends only on the ``tls_config`` and the files it names, so sources with the same settings share
one, keyed by the config and the files' identity and modification time (a CA file replaced on disk gives a new
context to the sources built after it). The runtime builds the contexts a reload needs in a worker thread
(``prepare``) before it builds the sources, which only look them up. A context lives as long as a source uses
it.
"""

from __future__ import annotations

import ssl
import threading
import weakref
from collections.abc import Iterable

from agent.sources.http.config import TLS_VERSIONS, TlsConfig
from agent.sources.http.timing import ProbeSSLContext
from agent.yamlsrc import file_stamp


def _key(tls: TlsConfig) -> tuple[TlsConfig, tuple]:
    return tls, tuple(file_stamp(path) for path in (tls.ca_file, tls.cert_file, tls.key_file))


def make_ssl_context(tls: TlsConfig) -> ProbeSSLContext:
    """A client context as ``tls`` asks (blocking: it reads the CA bundle); raises for unreadable files."""
    context = ProbeSSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if tls.ca_file:
        context.load_verify_locations(cafile=tls.ca_file)
    else:
        context.load_default_certs()
    if tls.cert_file and tls.key_file:
        context.load_cert_chain(tls.cert_file, tls.key_file)
    if tls.insecure_skip_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if tls.min_version:
        context.minimum_version = TLS_VERSIONS[tls.min_version]
    return context


class TlsContexts:
    """The agent's SSL contexts, one per distinct TLS config and file versions."""

    def __init__(self) -> None:
        self._contexts: weakref.WeakValueDictionary[tuple, ProbeSSLContext] = weakref.WeakValueDictionary()
        self._lock = threading.Lock()  # prepare runs in a worker thread, get on the event loop

    def prepare(self, configs: Iterable[TlsConfig]) -> list[ProbeSSLContext]:
        """Build the contexts these configs need (blocking: call it off the event loop). Returns them: the
        caller holds them until the sources that use them exist, or they could be collected in between."""
        return [self.get(tls) for tls in set(configs)]

    def get(self, tls: TlsConfig) -> ProbeSSLContext:
        """The context of ``tls``; built here (blocking) only if ``prepare`` did not see it."""
        key = _key(tls)
        with self._lock:
            context = self._contexts.get(key)
        if context is None:
            context = make_ssl_context(tls)
            with self._lock:
                context = self._contexts.setdefault(key, context)
        return context
