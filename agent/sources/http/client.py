"""What every HTTP source of a running agent shares: the SSL contexts of its tls_configs (one per distinct
config and version of the files it names, built in the kind's prepare thread). Each probe opens its own
connection (agent.sources.http.connection), so there is no pool or session to share."""

from __future__ import annotations

from agent.sources.base import Shared, SourceContext
from agent.sources.probe.tls import TlsContexts


class HttpShared(Shared):
    def __init__(self, context: SourceContext | None = None):
        self.tls = TlsContexts()
