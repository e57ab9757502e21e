"""TCP probes: connect (TLS from the first byte with ``tls: true``), then walk ``query_response`` the way
blackbox_exporter does: read lines until one matches ``expect``, read ``expect_bytes``, write ``send`` and a
newline (``${1}`` expanded from the match), upgrade to TLS at ``starttls``. Every TLS handshake records the TLS
series. A target that accepts and never answers is held by the attempt's deadline."""

from __future__ import annotations

import asyncio
import ssl

from agent.config import regex as user_regex
from agent.config.regex import Match, Regex
from agent.discovery.relabel import expand
from agent.formatting import excerpt
from agent.sources.probe.failures import TARGET_FAULTS
from agent.sources.probe.families import FAILED_DUE_TO_BYTES, FAILED_DUE_TO_REGEX
from agent.sources.probe.net import resolve, split_host_port
from agent.sources.probe.result import ProbeFailed, ProbeResult
from agent.sources.probe.stream import release, start_tls_over
from agent.sources.probe.tls import record_tls
from agent.sources.tcp.config import QueryStep, TcpModule, expect_info

MAX_LINE = 64 * 1024  # what Go's bufio.Scanner, so blackbox, reads as one line at most


class TcpProber:
    faults = TARGET_FAULTS

    def __init__(self, module: TcpModule, ssl_context: ssl.SSLContext | None):
        self.module = module
        self.ssl_context = ssl_context
        self.steps = [(step, user_regex.compile(step.expect) if step.expect is not None else None)
                      for step in module.query_response]
        self.expect_info = expect_info(module) if module.expect_labels else None

    async def probe(self, target: str, result: ProbeResult) -> None:
        module = self.module
        host, port = split_host_port(target)
        address = await resolve(host, module.ip, result)
        server_name = module.tls_config.server_name or host
        reader, writer = await asyncio.open_connection(
            address, port, limit=MAX_LINE, local_addr=(module.ip.source_ip, 0) if module.ip.source_ip else None)
        plain = writer.transport  # TLS goes over it (start_tls, never open_connection(ssl=)): release reaches it
        try:
            if module.tls:
                assert self.ssl_context is not None, "a module with tls has an SSL context"
                await start_tls_over(writer, self.ssl_context, server_name)
                record_tls(result, writer.get_extra_info("ssl_object"))
            for step, pattern in self.steps:
                await self._step(step, pattern, reader, writer, result, server_name)
        finally:
            writer.transport.abort()  # nothing more to say: no lingering close on a dead or silent target
            release(plain)

    async def _step(self, step: QueryStep, pattern: Regex | None, reader: asyncio.StreamReader,
                    writer: asyncio.StreamWriter, result: ProbeResult, server_name: str) -> None:
        send = step.send
        if pattern is not None:
            match = await _expect(pattern, reader)
            result.set(FAILED_DUE_TO_REGEX, 0.0 if match else 1.0)
            if match is None:
                raise ProbeFailed("expect_regex",
                                  f"the connection ended before a line matched {excerpt(pattern.pattern)}")
            send = expand(send, match, pattern)
            if step.labels and self.expect_info is not None:
                values = dict((name, expand(template, match, pattern)) for name, template in step.labels)
                result.info(self.expect_info, tuple(values.get(name, "") for name in self.module.expect_labels))
        if step.expect_bytes is not None:
            expected = step.expect_bytes
            try:
                data = await reader.readexactly(len(expected))
            except asyncio.IncompleteReadError as exc:
                raise ProbeFailed("connection_error", f"the connection ended after {len(exc.partial)} of the "
                                                      f"{len(expected)} expected bytes") from None
            result.set(FAILED_DUE_TO_BYTES, 0.0 if data == expected else 1.0)
            if data != expected:
                raise ProbeFailed("expect_bytes", f"expected bytes {expected!r}, read {data!r}"[:200])
        if send:
            writer.write(send.encode("utf-8") + b"\n")
            await writer.drain()
        if step.starttls:
            assert self.ssl_context is not None, "a module with starttls has an SSL context"
            await start_tls_over(writer, self.ssl_context, server_name)
            record_tls(result, writer.get_extra_info("ssl_object"))

    def explain(self, exc: BaseException, target: str, timeout: float) -> tuple[str, str] | None:
        if isinstance(exc, ValueError) and "limit" in str(exc):  # StreamReader: a line beyond MAX_LINE
            return "connection_error", f"a line longer than {MAX_LINE // 1024} KiB"
        return None


async def _expect(pattern: Regex, reader: asyncio.StreamReader) -> Match | None:
    """Read lines until one matches (None: the connection ended first), as Go's bufio.Scanner splits them:
    without the newline and a carriage return before it."""
    while True:
        line = await reader.readline()
        if not line:
            return None
        text = line.removesuffix(b"\n").removesuffix(b"\r").decode("utf-8", errors="replace")
        match = pattern.search(text)
        if match is not None:
            return match
