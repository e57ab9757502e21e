"""--web.config.file: exporter-toolkit's file on a real agent over loopback, with certificates made by the test.

TLS settings (versions, cipher suites, curves, server preference), every client auth type, client_allowed_sans,
certificates and users re-read without a restart, headers and bcrypt hashes validated as exporter-toolkit
validates them, and the rate limit."""

import asyncio
import base64
import shutil
import ssl
import subprocess
from pathlib import Path

import aiohttp
import bcrypt
import pytest

from agent.config.model import AgentConfig, GlobalConfig
from agent.config.problems import ConfigError
from agent.runtime.agent import Agent
from agent.runtime.logconfig import LogfmtFormatter
from agent.server import tlsctl
from agent.server.webconfig import LiveWebConfig, load_web_config
from tests.helpers import ascrape


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, Path]:
    """A CA; a server certificate for 127.0.0.1 signed by it; two client certificates it signed (SANs
    alice.example and bob.example); a self-signed client certificate; a second server certificate."""
    d = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test CA",
             "-keyout", str(d / "ca.key"), "-out", str(d / "ca.pem"))

    def signed(name: str, san: str, extension: str) -> None:
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", str(d / f"{name}.key"),
                 "-out", str(d / f"{name}.csr"))
        (d / f"{name}.ext").write_text(f"subjectAltName={san}\nextendedKeyUsage={extension}\n")
        _openssl("x509", "-req", "-in", str(d / f"{name}.csr"), "-CA", str(d / "ca.pem"), "-CAkey",
                 str(d / "ca.key"), "-CAcreateserial", "-days", "2", "-extfile", str(d / f"{name}.ext"),
                 "-out", str(d / f"{name}.pem"))

    signed("server", "IP:127.0.0.1", "serverAuth")
    signed("server2", "IP:127.0.0.1", "serverAuth")
    signed("alice", "DNS:alice.example", "clientAuth")
    signed("bob", "DNS:bob.example", "clientAuth")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=stranger",
             "-keyout", str(d / "stranger.key"), "-out", str(d / "stranger.pem"))
    return {name: d / name for name in ("ca.pem", "server.pem", "server.key", "server2.pem", "server2.key",
                                        "alice.pem", "alice.key", "bob.pem", "bob.key", "stranger.pem",
                                        "stranger.key")}


async def start_agent(path: Path) -> tuple[Agent, str]:
    agent = Agent(lambda: AgentConfig("<test>", GlobalConfig()), "127.0.0.1:0", LiveWebConfig(str(path)))
    await agent.start()
    return agent, f"127.0.0.1:{agent.bound_port}"


def client(pki, cert: str | None = None, ciphers: str | None = None, groups: list[str] | None = None,
           tls12: bool = False) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki["ca.pem"]))
    if cert:
        context.load_cert_chain(str(pki[f"{cert}.pem"]), str(pki[f"{cert}.key"]))
    if tls12:
        context.maximum_version = ssl.TLSVersion.TLSv1_2
    if ciphers:
        context.set_ciphers(ciphers)
    if groups:
        tlsctl.set_groups(context, groups)
    return context


async def status(url: str, context: ssl.SSLContext | None = None, **headers: str) -> int | str:
    """The HTTP status, or the name of the error that prevented one (a refused handshake)."""
    try:
        async with aiohttp.ClientSession() as session, session.get(url, ssl=context, headers=headers) as response:
            return response.status
    except (aiohttp.ClientError, ssl.SSLError, ConnectionError) as exc:
        return type(exc).__name__


def tls_file(tmp_path: Path, pki, extra: str = "", cert: str = "server") -> Path:
    path = tmp_path / "web.yml"
    path.write_text(f"tls_server_config:\n  cert_file: {pki[cert + '.pem']}\n  key_file: {pki[cert + '.key']}\n"
                    + extra)
    return path


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


async def test_basic_auth_headers_and_users_reloaded_without_restart(tmp_path):
    alice = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode()
    path = tmp_path / "web.yml"
    path.write_text(f"basic_auth_users:\n  alice: {alice}\n"
                    "http_server_config:\n  headers: {X-Frame-Options: deny, X-Content-Type-Options: nosniff}\n")
    agent, address = await start_agent(path)
    url = f"http://{address}/metrics"
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(url) as response:
                assert response.status == 401 and response.headers["WWW-Authenticate"].startswith("Basic")
            for password, code in (("wrong", 401), ("s3cret", 200), ("s3cret", 200)):
                async with session.get(url, headers={"Authorization": basic("alice", password)}) as response:
                    assert response.status == code
                    assert response.headers["X-Frame-Options"] == "deny"
            async with session.get(url, headers={"Authorization": "Basic " + base64.b64encode(b"\xff").decode()}
                                   ) as response:
                assert response.status == 401
        bob = bcrypt.hashpw(b"b0b", bcrypt.gensalt(rounds=4)).decode()
        path.write_text(f"basic_auth_users:\n  bob: {bob}\n")  # alice removed, bob added: no restart
        await asyncio.sleep(0.2)
        assert await status(url, Authorization=basic("bob", "b0b")) == 200
        assert await status(url, Authorization=basic("alice", "s3cret")) == 401
        path.write_text("basic_auth_users: {bob: not-a-hash}\n")  # broken: the last good file stays
        await asyncio.sleep(0.2)
        assert await status(url, Authorization=basic("bob", "b0b")) == 200
        page = await ascrape(url, headers={"Authorization": basic("bob", "b0b")})
        assert page.value("kpi_agent_web_config_last_reload_successful") == 0
        assert page.value("kpi_agent_http_requests_total", handler="/metrics", code="401") == 4
    finally:
        await agent.stop()


def test_web_config_is_validated_as_exporter_toolkit_validates_it(tmp_path, pki):
    path = tmp_path / "web.yml"
    path.write_text("tls_server_config:\n"
                    f"  cert_file: {pki['server.pem']}\n"
                    f"  key_file: {pki['server.key']}\n"
                    "  client_auth_type: RequireAndVerifyClientCert\n"
                    "  cipher_suites: [TLS_RSA_WITH_RC4_128_SHA]\n"
                    "  curve_preferences: [CurveP999]\n"
                    "http_server_config:\n"
                    "  headers: {Content-Type: foo, X-Frame-Options: allow}\n"
                    "basic_auth_users:\n"
                    "  alice: $2y$10$short\n"
                    "rate_limit: {interval: soon}\n")
    with pytest.raises(ConfigError) as info:
        load_web_config(str(path))
    problems = [str(p) for p in info.value.problems]
    expected = [
        f"{path}:5: tls_server_config.cipher_suites: 'TLS_RSA_WITH_RC4_128_SHA' is not a cipher suite",
        f"{path}:6: tls_server_config.curve_preferences: 'CurveP999' is not a curve",
        f"{path}:4: tls_server_config.client_auth_type: RequireAndVerifyClientCert needs client_ca_file",
        f"{path}:8: http_server_config.headers: HTTP header 'Content-Type' can not be configured",
        f"{path}:9: basic_auth_users: user 'alice': the password must be a bcrypt hash",
        f"{path}:11: rate_limit.interval: 'soon' is not a duration",
    ]
    for line in expected:
        assert any(p.startswith(line) for p in problems), (line, problems)
    path.write_text("tls_server_config:\n"
                    f"  cert_file: {pki['server.pem']}\n"
                    f"  key_file: {pki['alice.key']}\n")  # a key that is not the certificate's
    with pytest.raises(ConfigError, match="tls_server_config: cannot be used"):
        load_web_config(str(path))


async def test_tls_versions_cipher_suites_curves_and_inline_pem(tmp_path, pki):
    path = tls_file(tmp_path, pki, "  max_version: TLS12\n"
                                   "  cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256]\n"
                                   "  prefer_server_cipher_suites: true\n"
                                   "  curve_preferences: [CurveP384]\n")
    agent, address = await start_agent(path)
    url = f"https://{address}/-/healthy"
    try:
        assert await status(url, client(pki)) == 200
        assert await status(url, client(pki, ciphers="ECDHE-RSA-AES256-GCM-SHA384", tls12=True)) != 200
        assert await status(url, client(pki, ciphers="ECDHE-RSA-AES128-GCM-SHA256", tls12=True)) == 200
        assert await status(url, client(pki, groups=["X25519"])) != 200  # no curve in common
        assert await status(url, client(pki, groups=["P-384"])) == 200
        assert await status(f"http://{address}/-/healthy") != 200  # TLS only
    finally:
        await agent.stop()
    inline = tmp_path / "inline.yml"
    pem = "\n".join("    " + line for line in pki["server.pem"].read_text().splitlines())
    key = "\n".join("    " + line for line in pki["server.key"].read_text().splitlines())
    inline.write_text(f"tls_server_config:\n  cert: |\n{pem}\n  key: |\n{key}\n")
    agent, address = await start_agent(inline)
    try:
        assert await status(f"https://{address}/-/healthy", client(pki)) == 200
    finally:
        await agent.stop()


@pytest.mark.parametrize("auth_type, none, stranger, alice", [
    ("NoClientCert", 200, 200, 200),
    ("RequestClientCert", 200, 200, 200),  # Go asks, never requires or verifies: everyone is in
    ("RequireAnyClientCert", "refused", 200, 200),  # any certificate, whoever signed it
    ("VerifyClientCertIfGiven", 200, "refused", 200),
    ("RequireAndVerifyClientCert", "refused", "refused", 200),
])
async def test_every_client_auth_type_behaves_as_in_go(tmp_path, pki, auth_type, none, stranger, alice):
    ca = f"  client_ca_file: {pki['ca.pem']}\n" if auth_type not in ("NoClientCert",) else ""
    path = tls_file(tmp_path, pki, f"  client_auth_type: {auth_type}\n" + ca)
    agent, address = await start_agent(path)
    url = f"https://{address}/-/healthy"
    try:
        for cert, expected in ((None, none), ("stranger", stranger), ("alice", alice)):
            got = await status(url, client(pki, cert))
            assert (got == 200) == (expected == 200), (auth_type, cert, got)
    finally:
        await agent.stop()


async def test_client_allowed_sans_admits_only_listed_names(tmp_path, pki):
    path = tls_file(tmp_path, pki, "  client_auth_type: RequireAndVerifyClientCert\n"
                                   f"  client_ca_file: {pki['ca.pem']}\n"
                                   "  client_allowed_sans: [alice.example]\n")
    agent, address = await start_agent(path)
    url = f"https://{address}/-/healthy"
    try:
        assert await status(url, client(pki, "alice")) == 200
        assert await status(url, client(pki, "bob")) != 200  # signed by the CA, but not an allowed name
        page_status = await status(f"https://{address}/metrics", client(pki, "alice"))
        assert page_status == 200
    finally:
        await agent.stop()


async def test_a_stalled_or_failed_tls_handshake_is_closed_and_counted(tmp_path, pki):
    """The guard holds a connection from the moment it is accepted: a client that never finishes its handshake
    is closed at the head deadline like one that never sends its head, and one whose handshake fails (plain
    HTTP on the TLS port, a certificate the CA did not sign) is counted, while real scrapes go on."""
    path = tls_file(tmp_path, pki, "  client_auth_type: VerifyClientCertIfGiven\n"
                                   f"  client_ca_file: {pki['ca.pem']}\n")
    agent = Agent(lambda: AgentConfig("<test>", GlobalConfig()), "127.0.0.1:0", LiveWebConfig(str(path)),
                  header_timeout=0.5)
    await agent.start()
    host, port = "127.0.0.1", agent.bound_port
    try:
        silent = [await asyncio.open_connection(host, port) for _ in range(3)]  # TCP, and never a ClientHello
        _, plain = await asyncio.open_connection(host, port)
        plain.write(b"GET /metrics HTTP/1.1\r\nHost: agent\r\n\r\n")
        try:  # TLS 1.3: the client learns of the refusal only once it reads
            reader, writer = await asyncio.open_connection(host, port, ssl=client(pki, "stranger"))
            writer.write(b"GET /-/healthy HTTP/1.1\r\nHost: agent\r\n\r\n")
            answer = await reader.read()
        except (ssl.SSLError, ConnectionError):
            answer = b""
        assert answer == b"", answer
        assert await status(f"https://{host}:{port}/-/healthy", client(pki)) == 200
        await asyncio.sleep(1.0)
        for reader, _ in silent:  # closed by the agent: end of stream, not a timeout of ours
            assert await asyncio.wait_for(reader.read(1), 1) == b""
        page = await ascrape(f"https://{host}:{port}/metrics", ssl_context=client(pki))
        closed = page.by("kpi_agent_http_connections_closed_total", "reason")
        assert closed["header_timeout"] == 3, closed
        assert closed["tls_handshake"] == 2, closed  # the plain-HTTP client and the stranger
    finally:
        await agent.stop()


async def test_a_rotated_certificate_is_served_without_a_restart(tmp_path, pki):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    shutil.copy(pki["server.pem"], cert)
    shutil.copy(pki["server.key"], key)
    path = tmp_path / "web.yml"
    path.write_text(f"tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n")
    agent, address = await start_agent(path)
    host, port = address.split(":")

    async def served_serial() -> int:
        reader, writer = await asyncio.open_connection(host, int(port), ssl=client(pki))
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        writer.close()
        out = subprocess.run(["openssl", "x509", "-inform", "DER", "-noout", "-serial"], input=der,
                             capture_output=True, check=True).stdout.decode()
        return int(out.strip().split("=")[1], 16)

    def serial(path: Path) -> int:
        out = subprocess.run(["openssl", "x509", "-in", str(path), "-noout", "-serial"], capture_output=True,
                             check=True, text=True).stdout
        return int(out.strip().split("=")[1], 16)

    try:
        assert await served_serial() == serial(pki["server.pem"])
        shutil.copy(pki["server2.pem"], cert)  # cert-manager renews: new files, same paths
        shutil.copy(pki["server2.key"], key)
        await asyncio.sleep(0.2)
        assert await served_serial() == serial(pki["server2.pem"])
    finally:
        await agent.stop()


async def test_rate_limit_answers_429_beyond_the_burst(tmp_path):
    path = tmp_path / "web.yml"
    path.write_text("rate_limit: {interval: 1s, burst: 2}\n")
    agent, address = await start_agent(path)
    try:
        codes = [await status(f"http://{address}/-/healthy") for _ in range(4)]
        assert codes == [200, 200, 429, 429]
        await asyncio.sleep(1.1)
        assert await status(f"http://{address}/-/healthy") == 200  # a token came back
    finally:
        await agent.stop()


def logged(caplog) -> str:
    """The log lines as the agent writes them (logfmt, with their fields)."""
    return "\n".join(LogfmtFormatter().format(record) for record in caplog.records)


def _curl(url: str, pki) -> tuple[int, str]:
    """curl, a TLS client that is not ours: its exit code (0: served; 28: timed out) and what it printed."""
    result = subprocess.run(["curl", "-sS", "--max-time", "3", "--cacert", str(pki["ca.pem"]), url],
                            capture_output=True, text=True)
    return result.returncode, result.stdout + result.stderr


async def test_a_change_that_cannot_be_applied_live_is_refused_and_the_last_good_config_serves(tmp_path, pki,
                                                                                                  caplog):
    """An editor saving the file truncates it first: an empty file would turn TLS off, which a running listener
    cannot do. It is refused like an invalid file (and so is an empty file, which would also drop basic auth
    for a moment); handshakes go on with the last good config, and the reload-failure metric says so."""
    path = tls_file(tmp_path, pki)
    agent, address = await start_agent(path)
    url = f"https://{address}/metrics"
    try:
        assert (await asyncio.to_thread(_curl, url, pki))[0] == 0
        path.write_text("")  # truncate-then-write, caught between the two
        await asyncio.sleep(0.2)
        code, output = await asyncio.to_thread(_curl, url, pki)
        assert code == 0, output  # not 28, a handshake that hangs until curl gives up
        assert "kpi_agent_web_config_last_reload_successful 0" in output
        assert 'msg="web config file invalid; keeping the last good one"' in logged(caplog)
        assert "web.yml: is empty (being written?); to set nothing, write {}" in logged(caplog)
        path.write_text("# TLS off, on purpose\n{}\n")  # a real change that needs a restart: refused too
        await asyncio.sleep(0.2)
        code, output = await asyncio.to_thread(_curl, url, pki)
        assert code == 0, output
        assert "kpi_agent_web_config_last_reload_successful 0" in output
        assert "web.yml: tls_server_config: turning TLS off needs a restart" in logged(caplog)
        tls_file(tmp_path, pki, cert="server2")  # the editor's write lands: applied, the metric says so
        await asyncio.sleep(0.2)
        code, output = await asyncio.to_thread(_curl, url, pki)
        assert code == 0 and "kpi_agent_web_config_last_reload_successful 1" in output, output
    finally:
        await agent.stop()


async def test_turning_tls_on_in_a_running_agent_is_refused(tmp_path, pki, caplog):
    path = tmp_path / "web.yml"
    path.write_text("http_server_config:\n  headers: {X-Frame-Options: deny}\n")
    agent, address = await start_agent(path)
    try:
        tls_file(tmp_path, pki, "http_server_config:\n  headers: {X-Frame-Options: sameorigin}\n")
        await asyncio.sleep(0.2)
        async with aiohttp.ClientSession() as session, session.get(f"http://{address}/metrics") as response:
            assert response.headers["X-Frame-Options"] == "deny"  # nothing of the refused file applies
            assert "kpi_agent_web_config_last_reload_successful 0" in await response.text()
        assert "tls_server_config: turning TLS on needs a restart" in logged(caplog)
    finally:
        await agent.stop()
