"""TCP sources against real servers on 127.0.0.1: an SMTP server with STARTTLS (aiosmtpd), a TLS-only port, a
port that resets, one that accepts and stays silent, a STARTTLS server with a certificate nobody trusts, a
PostgreSQL-style byte exchange and RabbitMQ's answer to a wrong protocol header; and Debian's
blackbox_exporter probing the same targets in the same test: same series and labels, same verdict, same
certificate expiry."""

import asyncio
import os
import shutil
import socket
import ssl
import struct
import subprocess
import tempfile
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from agent.config.agent import parse_config
from agent.config.problems import ConfigError
from agent.config.yaml import load_text
from agent.series.store import Store
from agent.sources.base import SourceContext
from tests.helpers import build_source, free_port, render_store, stop_processes, wait_until
from tests.sources.blackbox import blackbox, compare  # noqa: F401 - blackbox is a fixture

SMTP_STARTTLS = """\
- expect: "^220 ([^ ]+) ESMTP (.+)$"
- send: "EHLO prober\\r"
- expect: "^250-STARTTLS"
- send: "STARTTLS\\r"
- expect: "^220"
- starttls: true
- send: "EHLO prober\\r"
- expect: "^250-AUTH"
- send: "QUIT\\r"
"""
# our TLS families beyond Debian's blackbox_exporter 0.23, which 0.28 writes (0.23 reads no TLS version, chain or
# cipher after STARTTLS, and has no expect_bytes)
NEWER = ("probe_tls_version_info", "probe_ssl_last_chain_info", "probe_tls_cipher_info", "probe_failed_due_to_bytes")
OURS_ONLY = ("probes_total", "probe_last_result", "probe_latency_seconds_bucket", "probe_latency_seconds_count",
             "probe_latency_seconds_sum", *NEWER)


def openssl(*args: str) -> str:
    return subprocess.run(["openssl", *args], check=True, capture_output=True, text=True).stdout


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A CA, a server certificate it signed (127.0.0.1 and localhost), and a self-signed one nobody trusts."""
    d = tmp_path_factory.mktemp("pki")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30", "-subj", "/O=Test CA/CN=kpi test root",
            "-keyout", str(d / "ca.key"), "-out", str(d / "ca.pem"))
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/C=DE/O=Shop, Inc./CN=mail.test", "-keyout",
            str(d / "server.key"), "-out", str(d / "server.csr"))
    (d / "ext").write_text("subjectAltName=DNS:mail.test,DNS:localhost,IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", str(d / "server.csr"), "-CA", str(d / "ca.pem"), "-CAkey", str(d / "ca.key"),
            "-CAcreateserial", "-days", "5", "-extfile", str(d / "ext"), "-out", str(d / "server.pem"))
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "9", "-subj", "/CN=rogue", "-addext",
            "subjectAltName=IP:127.0.0.1", "-keyout", str(d / "rogue.key"), "-out", str(d / "rogue.pem"))
    end = openssl("x509", "-in", str(d / "server.pem"), "-noout", "-enddate").strip().split("=", 1)[1]
    return d, ssl.cert_time_to_seconds(end)


def server_context(directory: Path, name: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(directory / f"{name}.pem", directory / f"{name}.key")
    return context


class _Accept:
    async def handle_DATA(self, server, session, envelope):  # noqa: ANN001, ANN201 - aiosmtpd's handler API
        return "250 OK"


def _authenticate(server, session, envelope, mechanism, auth_data):  # noqa: ANN001, ANN201 - aiosmtpd's API
    return AuthResult(success=False)


def smtp_server(context: ssl.SSLContext) -> tuple[Controller, int]:
    """A real SMTP server offering STARTTLS, and AUTH once TLS is on."""
    port = free_port()
    controller = Controller(_Accept(), hostname="127.0.0.1", port=port, tls_context=context, ident="ESMTP aiosmtpd",
                            authenticator=_authenticate, auth_require_tls=True)
    controller.start()
    return controller, port


@pytest.fixture
def smtp(pki):
    controller, port = smtp_server(server_context(pki[0], "server"))
    yield f"127.0.0.1:{port}"
    controller.stop()


@pytest.fixture
def rogue_smtp(pki):
    controller, port = smtp_server(server_context(pki[0], "rogue"))
    yield f"127.0.0.1:{port}"
    controller.stop()


@pytest.fixture
async def context():
    context = SourceContext()
    yield context
    await context.close()


def source_for(context, store: Store, item: str):
    config, _ = parse_config(load_text("tcp:\n" + item, "agent.yaml"), "agent.yaml")
    (source,) = config.of_kind("tcp")
    return build_source(store, context, source, "tcp")


def indented(text: str, spaces: int) -> str:
    return "".join(" " * spaces + line + "\n" for line in text.splitlines())


async def test_smtp_starttls_as_blackbox_sees_it(smtp, pki, context, blackbox):  # noqa: F811 - the fixture
    """blackbox's smtp_starttls example module against a real SMTP server: the same verdict, series, labels and
    certificate expiry as Debian's blackbox_exporter on the same server."""
    directory, not_after = pki
    store = Store()
    source = source_for(context, store, f"  - name: mail\n    target: {smtp}\n    tls_config: "
                                        f"{{ca_file: {directory / 'ca.pem'}}}\n    query_response:\n"
                                        + indented(SMTP_STARTTLS, 6))
    assert await source.probe() == "success"
    ours = render_store(store)
    exporter = blackbox(f"smtp_starttls:\n  prober: tcp\n  timeout: 5s\n  tcp:\n    preferred_ip_protocol: ip4\n"
                        f"    tls_config: {{ca_file: {directory / 'ca.pem'}}}\n    query_response:\n"
                        + indented(SMTP_STARTTLS, 6))
    theirs = await asyncio.to_thread(exporter.probe, "smtp_starttls", smtp)
    assert theirs.value("probe_success") == 1 and ours.value("probe_success", target="mail") == 1
    compare(ours, theirs, ours_only=OURS_ONLY, newer_labels=frozenset({"serialnumber"}),
            values=("probe_ssl_earliest_cert_expiry",
                                                       "probe_ssl_last_chain_expiry_timestamp_seconds",
                                                       "probe_failed_due_to_regex", "probe_ip_protocol",
                                                       "probe_ip_addr_hash"))
    assert ours.value("probe_ssl_earliest_cert_expiry", target="mail") == not_after
    assert ours.by("probe_tls_version_info", "version", target="mail") == {"TLS 1.3": 1}
    (chain,) = ours.find("probe_ssl_last_chain_info", target="mail")
    fingerprint = openssl("x509", "-in", str(directory / "server.pem"), "-noout", "-fingerprint", "-sha256")
    assert chain.labels["fingerprint_sha256"] == fingerprint.split("=", 1)[1].strip().replace(":", "").lower()
    assert chain.labels["subject"] == "CN=mail.test,O=Shop\\, Inc.,C=DE"  # Go's pkix.Name order and escaping
    assert chain.labels["issuer"] == "CN=kpi test root,O=Test CA"
    assert chain.labels["subjectalternative"] == "mail.test,localhost"
    serial = openssl("x509", "-in", str(directory / "server.pem"), "-noout", "-serial").split("=", 1)[1].strip()
    assert chain.labels["serialnumber"] == serial.lower()


async def test_tls_from_the_first_byte_and_captures_into_labels(pki, context, blackbox):  # noqa: F811 - the fixture
    """tls_connect, and an expect whose captures become probe_expect_info labels and expand into send."""
    directory, not_after = pki
    said: list[bytes] = []

    async def banner(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"* OK [CAPABILITY IMAP4rev1] kpi-imapd 4.2 ready\r\n")
        said.append(await reader.readline())
        writer.close()

    server = await asyncio.start_server(banner, "127.0.0.1", 0, ssl=server_context(directory, "server"))
    port = server.sockets[0].getsockname()[1]
    try:
        store = Store()
        source = source_for(context, store, (
            f"  - name: imaps\n    target: 127.0.0.1:{port}\n    tls: true\n"
            f"    tls_config: {{ca_file: {directory / 'ca.pem'}}}\n    query_response:\n"
            "      - expect: 'OK .*] (?P<daemon>[a-z-]+) ([0-9.]+) ready'\n"
            "        labels: [{name: daemon, value: '${daemon}'}, {name: release, value: 'v$2'}]\n"
            "        send: 'a1 LOGOUT ${daemon}'\n"))
        assert await source.probe() == "success"
        page = render_store(store)
        for _ in range(100):  # the server reads what was sent after the probe is done
            if said:
                break
            await asyncio.sleep(0.02)
        assert said == [b"a1 LOGOUT kpi-imapd\n"]
        (info,) = page.find("probe_expect_info", target="imaps")
        assert {k: info.labels[k] for k in ("daemon", "release")} == {"daemon": "kpi-imapd", "release": "v4.2"}
        assert page.value("probe_ssl_earliest_cert_expiry", target="imaps") == not_after
        exporter = blackbox(f"tls_connect:\n  prober: tcp\n  timeout: 5s\n  tcp:\n    tls: true\n"
                            f"    preferred_ip_protocol: ip4\n    tls_config: {{ca_file: {directory / 'ca.pem'}}}\n")
        connect = source_for(context, store, f"  - name: plain-tls\n    target: 127.0.0.1:{port}\n    tls: true\n"
                                             f"    tls_config: {{ca_file: {directory / 'ca.pem'}}}\n")
        assert await connect.probe() == "success"
        theirs = await asyncio.to_thread(exporter.probe, "tls_connect", f"127.0.0.1:{port}")
        ours = render_store(store)
        assert theirs.value("probe_success") == 1
        compare(_only(ours, "plain-tls"), theirs, ours_only=OURS_ONLY, newer_labels=frozenset({"serialnumber"}),
                values=("probe_ssl_earliest_cert_expiry", "probe_ssl_last_chain_expiry_timestamp_seconds"))
    finally:
        server.close()
        await server.wait_closed()



@pytest.mark.parametrize("how", ["tls", "starttls"])
async def test_a_connection_lost_as_its_tls_handshake_ends_is_the_target_closing_it(pki, context, how,
                                                                                     tls_lost_as_it_ends):
    """asyncio gives no TLS transport then, and StreamWriter.start_tls fails on it: a probe result with a reason,
    not an AttributeError out of the prober."""
    directory, _ = pki
    tls = server_context(directory, "server")

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if how == "starttls":
            writer.write(b"220 ready\r\n")
            await reader.readline()
            writer.write(b"220 go ahead\r\n")
            await writer.drain()
            await writer.start_tls(tls)
        await asyncio.sleep(5)

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=tls if how == "tls" else None)
    port = server.sockets[0].getsockname()[1]
    steps = "      - expect: '^220'\n" if how == "tls" else \
        "      - expect: '^220 ready'\n      - send: STARTTLS\n      - expect: '^220'\n      - starttls: true\n"
    try:
        store = Store()
        source = source_for(context, store, f"  - name: lost\n    target: 127.0.0.1:{port}\n    timeout: 5s\n"
                                            f"    tls: {str(how == 'tls').lower()}\n"
                                            f"    tls_config: {{ca_file: {directory / 'ca.pem'}}}\n"
                                            f"    query_response:\n{steps}")
        assert await source.probe() == "connection_error"
        assert source.prober.last_error == "the target closed the connection"
        page = render_store(store)
        assert page.value("probe_success", target="lost") == 0
        assert page.value("probes_total", target="lost", result="connection_error") == 1
    finally:
        server.close()
        await server.wait_closed()


def _only(page, target: str):
    """Our page with only one target's series (compare() reads every probe_* series of a page)."""
    from tests.helpers import Exposition

    kept = Exposition(page.text.encode())
    kept.series = [s for s in page.series if s.labels.get("target") == target]
    return kept


async def test_faults_each_have_their_result_and_reason(rogue_smtp, pki, context):
    """A port that resets, one that accepts and stays silent, nothing listening, a STARTTLS server with a
    certificate nobody trusts, a banner that never matches: the right result and reason, nothing else disturbed."""
    directory, _ = pki

    def resetting(connection: socket.socket) -> None:
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        connection.close()  # RST

    async def reset_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        resetting(writer.get_extra_info("socket").dup())
        writer.transport.abort()

    async def silent_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(30)

    async def chatty_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HELLO there\r\nnothing you want\r\n")
        writer.close()

    servers = [await asyncio.start_server(h, "127.0.0.1", 0) for h in (reset_handler, silent_handler, chatty_handler)]
    reset_port, silent_port, chatty_port = (s.sockets[0].getsockname()[1] for s in servers)
    closed = free_port()
    store = Store()
    try:
        cases = {
            "reset": (f"127.0.0.1:{reset_port}", "      - expect: '^220'\n", "connection_error"),
            "silent": (f"127.0.0.1:{silent_port}", "      - expect: '^220'\n", "timeout"),
            "refused": (f"127.0.0.1:{closed}", "      - expect: '^220'\n", "connection_refused"),
            "rogue": (rogue_smtp, indented(SMTP_STARTTLS, 6), "tls_error"),
            "chatty": (f"127.0.0.1:{chatty_port}", "      - expect: '^220'\n", "expect_regex"),
        }
        # only the silent port waits out its timeout; the others answer at once, and a long timeout keeps a
        # loaded machine (the test's servers share its event loop) from turning their answer into a timeout
        sources = {name: source_for(context, store, f"  - name: {name}\n    target: {target}\n"
                                                    f"    timeout: {'1s' if name == 'silent' else '10s'}\n"
                                                    f"    tls_config: {{ca_file: {directory / 'ca.pem'}}}\n"
                                                    f"    query_response:\n{steps}")
                   for name, (target, steps, _) in cases.items()}
        results = await asyncio.gather(*(source.probe() for source in sources.values()))
        assert dict(zip(sources, results, strict=True)) == {name: case[2] for name, case in cases.items()}
        reasons = {name: source.prober.last_error for name, source in sources.items()}
        assert reasons["reset"] == "connection reset by the target"
        assert reasons["silent"] == "no complete answer within 1s"
        assert reasons["refused"] == "connection refused"
        assert reasons["rogue"].startswith("certificate not accepted: ") and "self-signed" in reasons["rogue"]
        assert reasons["chatty"] == "the connection ended before a line matched '^220'"
        page = render_store(store)
        assert page.value("probe_failed_due_to_regex", target="chatty") == 1
        assert page.value("probe_failed_due_to_regex", target="silent") == 0  # a timeout is not the regexp's
        assert all(page.value("probe_success", target=name) == 0 for name in cases)
    finally:
        for server in servers:
            server.close()


@pytest.fixture
def postgresql():
    """A real PostgreSQL server (Debian's) on a free port of 127.0.0.1, with password (SCRAM) authentication."""
    binaries = Path("/usr/lib/postgresql")
    found = sorted(binaries.glob("*/bin/initdb"))
    if not found:
        pytest.fail("PostgreSQL is not installed (apt-get install postgresql)")
    bin_dir = found[-1].parent
    home = Path(tempfile.mkdtemp(prefix="kpi-pg-"))  # not under pytest's root-only directory: postgres reads it
    data = home / "pg"
    data.mkdir()
    (home / "pw").write_text("secret\n")
    owner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []  # postgres refuses to run as root
    if owner:
        subprocess.run(["chown", "-R", "postgres", str(home)], check=True)
    subprocess.run([*owner, str(bin_dir / "initdb"), "-D", str(data), "--auth=scram-sha-256",
                    f"--pwfile={home / 'pw'}", "-U", "admin"], check=True, capture_output=True)
    port = free_port()
    process = subprocess.Popen([*owner, str(bin_dir / "postgres"), "-D", str(data), "-p", str(port), "-c",
                                "listen_addresses=127.0.0.1", "-k", str(home)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        ready = [str(bin_dir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port)]  # listening is not ready
        wait_until(lambda: subprocess.run(ready).returncode == 0, timeout=60, what="PostgreSQL accepting connections")
        yield port
    finally:
        stop_processes([process])
        shutil.rmtree(home, ignore_errors=True)


@pytest.mark.slow
async def test_postgresql_answers_a_startup_message_with_an_authentication_request(postgresql, context):
    """A PostgreSQL check: a startup message (protocol 3.0, user "probe"; all its bytes below 0x80, so YAML can
    write them) is answered with an authentication request, message type R. blackbox_exporter 0.23 has no
    expect_bytes (its expect waits for a newline PostgreSQL never sends)."""
    startup = "\\x00\\x00\\x00\\x14\\x00\\x03\\x00\\x00user\\x00probe\\x00\\x00"  # length 20, 3.0, user
    store = Store()
    ok = source_for(context, store, f"  - name: pg\n    target: 127.0.0.1:{postgresql}\n    query_response:\n"
                                    f"      - send: \"{startup}\"\n      - expect_bytes: R\n")
    wrong = source_for(context, store, f"  - name: pg-wrong\n    target: 127.0.0.1:{postgresql}\n"
                                       f"    query_response:\n      - send: \"{startup}\"\n      - expect_bytes: S\n")
    assert await ok.probe() == "success"
    assert await wrong.probe() == "expect_bytes"
    page = render_store(store)
    assert page.value("probe_failed_due_to_bytes", target="pg") == 0
    assert page.value("probe_failed_due_to_bytes", target="pg-wrong") == 1
    assert wrong.prober.last_error == "expected bytes b'S', read b'R'"


async def test_rabbitmq_answers_a_wrong_protocol_header_with_its_own(context, blackbox):  # noqa: F811 - the fixture
    """blackbox's rabbitmq example: RabbitMQ answers a header that is not AMQP's with its own (b"AMQP\\x00\\x00
    \\x09\\x01", AMQP 0-9-1) and closes; here a server that does what RabbitMQ does, probed by both."""

    async def rabbit(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # RabbitMQ reads a protocol header's 8 bytes ("HELO\r\n\r\n" here) before it answers and closes; a server
        # that closed with the second line unread would send a reset, which can take the answer with it before the
        # client reads it (the test failed so at load 4)
        await reader.readexactly(8)
        writer.write(b"AMQP\x00\x00\x09\x01")
        writer.close()

    server = await asyncio.start_server(rabbit, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    steps = '- send: "HELO\\r"\n- send: "\\r"\n- expect: "AMQP"\n'
    try:
        store = Store()
        source = source_for(context, store, f"  - name: mq\n    target: 127.0.0.1:{port}\n    query_response:\n"
                                            + indented(steps, 6))
        assert await source.probe() == "success"
        exporter = blackbox("rabbitmq:\n  prober: tcp\n  timeout: 5s\n  tcp:\n    preferred_ip_protocol: ip4\n"
                            "    query_response:\n" + indented(steps, 6))
        theirs = await asyncio.to_thread(exporter.probe, "rabbitmq", f"127.0.0.1:{port}")
        assert theirs.value("probe_success") == 1
        compare(render_store(store), theirs, ours_only=OURS_ONLY, values=("probe_failed_due_to_regex",))
    finally:
        server.close()


def test_tcp_config_errors_name_file_line_and_field():
    with pytest.raises(ConfigError) as info:
        parse_config(load_text(
            "tcp:\n"
            "  - name: a\n"
            "    target: example.com\n"
            "    query_response:\n"
            "      - {expect: '(', send: x}\n"
            "      - {send: 'PONG ${1}', labels: [{name: v, value: x}]}\n"
            "      - {expect: 'v(\\d)', send: '${2}', labels: [{name: target, value: $1}]}\n"
            "      - {starttls: yes please}\n"
            "    preferred_ip_protocol: ip5\n", "agent.yaml"), "agent.yaml")
    problems = [str(p) for p in info.value.problems]
    expected = [
        "agent.yaml:3: tcp[0].target: 'example.com' has no port (host:port)",
        "agent.yaml:5: tcp[0].query_response[0].expect: regular expression '(' does not compile",
        "agent.yaml:6: tcp[0].query_response[1].labels: takes its values from the captures of expect",
        "agent.yaml:7: tcp[0].query_response[2].labels: label 'target' is already set by the agent",
        "agent.yaml:7: tcp[0].query_response[2].send: $2 is not a group of expect 'v(\\\\d)'",
        "agent.yaml:8: tcp[0].query_response[3].starttls: expected true or false",
        "agent.yaml:9: tcp[0].preferred_ip_protocol: 'ip5' is not one of: ip4, ip6",
    ]
    for line in expected:
        assert any(p.startswith(line) for p in problems), (line, problems)


IMAP_STARTTLS = '- expect: "OK.*STARTTLS"\n- send: ". STARTTLS"\n- expect: "OK"\n- starttls: true\n' \
                '- send: ". capability"\n- expect: "CAPABILITY IMAP4rev1"\n'
SSH_BANNER = '- expect: "^SSH-2.0-"\n- send: "SSH-2.0-blackbox-ssh-check"\n'
IRC_BANNER = '- send: "NICK prober"\n- send: "USER prober prober prober :prober"\n' \
             '- expect: "PING :([^ ]+)"\n  send: "PONG ${1}"\n- expect: "^:[^ ]+ 001"\n'


async def _imap(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, tls: ssl.SSLContext) -> None:
    writer.write(b"* OK [CAPABILITY IMAP4rev1 STARTTLS] ready\r\n")
    if await reader.readline() == b". STARTTLS\n":
        writer.write(b". OK Begin TLS negotiation now\r\n")
        await writer.drain()
        await writer.start_tls(tls)
        if await reader.readline() == b". capability\n":
            writer.write(b"* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n. OK done\r\n")
            await writer.drain()
    writer.close()


async def _ssh(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, tls: ssl.SSLContext) -> None:
    writer.write(b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n")
    await reader.readline()
    writer.close()


async def _irc(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, tls: ssl.SSLContext) -> None:
    lines = [await reader.readline() for _ in range(2)]
    if lines[0].startswith(b"NICK ") and lines[1].startswith(b"USER "):
        writer.write(b":irc.test NOTICE * :hello\r\nPING :cookie-42\r\n")
        if await reader.readline() == b"PONG cookie-42\n":
            writer.write(b":irc.test 001 prober :Welcome\r\n")
    await writer.drain()
    writer.close()


@pytest.mark.parametrize(("module", "steps", "serve"), [("imap_starttls", IMAP_STARTTLS, _imap),
                                                        ("ssh_banner", SSH_BANNER, _ssh),
                                                        ("irc_banner", IRC_BANNER, _irc)])
async def test_blackbox_example_modules_work_as_they_are(module, steps, serve, pki, context, blackbox):  # noqa: F811
    """blackbox's imap_starttls, ssh_banner and irc_banner example modules, copied as they are, against servers
    that speak as IMAP (STARTTLS), OpenSSH and IRC servers do: the same verdict and series as blackbox_exporter."""
    directory, not_after = pki
    tls = server_context(directory, "server")
    server = await asyncio.start_server(lambda r, w: serve(r, w, tls), "127.0.0.1", 0)
    target = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        store = Store()
        source = source_for(context, store, f"  - name: {module}\n    target: {target}\n    tls_config: "
                                            f"{{ca_file: {directory / 'ca.pem'}}}\n    query_response:\n"
                                            + indented(steps, 6))
        assert await source.probe() == "success", source.prober.last_error
        exporter = blackbox(f"{module}:\n  prober: tcp\n  timeout: 5s\n  tcp:\n    preferred_ip_protocol: ip4\n"
                            f"    tls_config: {{ca_file: {directory / 'ca.pem'}}}\n    query_response:\n"
                            + indented(steps, 6))
        theirs = await asyncio.to_thread(exporter.probe, module, target)
        assert theirs.value("probe_success") == 1
        ours = render_store(store)
        compare(ours, theirs, ours_only=OURS_ONLY, newer_labels=frozenset({"serialnumber"}),
                values=("probe_failed_due_to_regex", "probe_ssl_earliest_cert_expiry"))
        if module == "imap_starttls":
            assert ours.value("probe_ssl_earliest_cert_expiry", target=module) == not_after
    finally:
        server.close()
