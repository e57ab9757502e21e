"""Pushing the agent's series with Prometheus Remote-Write 1.0 (``remote_write:`` in the agent config).

``wire`` encodes requests (protobuf ``WriteRequest``, Snappy block format), ``sampler`` turns store snapshots
into rounds of samples with stale markers, ``buffer`` holds what is not yet sent on disk, ``sender`` posts it
with the spec's retry rules, ``endpoint`` runs one configured endpoint and ``config`` parses the section.
Imported only when the config has a ``remote_write`` section: an agent that is only scraped never loads it.
"""
