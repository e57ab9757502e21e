"""blackbox_exporter's http module keys, each against a real server on 127.0.0.1 and, where Debian's
blackbox_exporter (0.23) has the key, against blackbox probing the same target with the same keys in the same
test: the same verdict, the same series and labels, the same values where they must agree."""

from __future__ import annotations

import asyncio
import gzip
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web

from agent.config.problems import ConfigError
from agent.sources.base import SourceContext
from tests.helpers import Exposition, free_port, serve, stop_processes, wait_until
from tests.sources.blackbox import blackbox, compare  # noqa: F401 - blackbox is a fixture
from tests.sources.probers import Probed, blackbox_module
from tests.sources.test_http import config_from
from tests.sources.test_http_wire import raw_server, sends
from tests.sources.test_tcp import pki, server_context  # noqa: F401 - pki is a fixture
from tests.tools import require_tool

# Our families beyond Debian's blackbox_exporter 0.23 (0.28 writes the cipher; the last three are ours)
OURS_ONLY = ("probes_total", "probe_last_result", "probe_latency_seconds_bucket", "probe_latency_seconds_count",
             "probe_latency_seconds_sum", "probe_tls_cipher_info")
NEWER_LABELS = frozenset({"serialnumber"})
BODY = "all good: version 1.2"


async def ok(request: web.Request) -> web.Response:
    return web.Response(text=BODY, headers={"X-Version": "1.2.3", "Cache-Control": "no-cache",
                                            "Last-Modified": "Tue, 03 Jun 2025 10:11:12 GMT"})


async def cookies(request: web.Request) -> web.Response:
    response = web.Response(text="c")
    response.headers.add("Set-Cookie", "a=1")
    response.headers.add("Set-Cookie", "b=2")
    return response


async def gzipped(request: web.Request) -> web.Response:
    return web.Response(body=gzip.compress(BODY.encode() * 20), headers={"Content-Encoding": "gzip"})


async def brotli_body(request: web.Request) -> web.Response:
    import brotli

    return web.Response(body=brotli.compress(BODY.encode() * 20), headers={"Content-Encoding": "br"})


async def redirect(request: web.Request) -> web.Response:
    raise web.HTTPFound(request.query.get("to", "/ok"))


async def auth(request: web.Request) -> web.Response:
    if request.headers.get("Authorization") != "Token s3cret":
        return web.Response(status=401)
    return web.Response(text=await request.text())


async def login(request: web.Request) -> web.Response:
    response = web.HTTPFound("/home")
    response.set_cookie("session", "abc123")
    raise response


async def home(request: web.Request) -> web.Response:
    return web.Response(text="home") if request.cookies.get("session") == "abc123" else web.Response(status=403)


def app() -> web.Application:
    application = web.Application()
    for path, handler in (("/ok", ok), ("/cookies", cookies), ("/gzip", gzipped), ("/br", brotli_body),
                          ("/redirect", redirect), ("/login", login), ("/home", home)):
        application.router.add_get(path, handler)
    application.router.add_post("/auth", auth)
    return application


@pytest.fixture
async def servers(pki):  # noqa: F811 - the fixture
    """(http base URL, https base URL, CA file, the server certificate's NotAfter)."""
    directory, not_after = pki
    plain, plain_port = await serve(app())
    tls, tls_port = await serve(app(), ssl_context=server_context(directory, "server"))
    yield f"http://127.0.0.1:{plain_port}", f"https://127.0.0.1:{tls_port}", directory / "ca.pem", not_after
    for runner in (plain, tls):
        await runner.cleanup()


@pytest.fixture
async def context():
    context = SourceContext()
    yield context
    await context.close()


def module(keys: str) -> dict[str, Any]:
    """A test's module keys, written as in agent.yaml."""
    return yaml.safe_load(keys) or {}


async def ours(context: SourceContext, url: str, keys: str = "") -> tuple[str | None, Exposition, str | None]:
    probed = Probed(context, "http", url, module(keys), timeout="5s", name="t")
    outcome = await probed.probe()
    return outcome, probed.page(), probed.reason


async def both(context: SourceContext, blackbox, url: str, keys: str = ""):  # noqa: ANN001, ANN202, F811
    """Our probe and blackbox's of ``url`` with the same module keys: (our result, our page, blackbox's page)."""
    outcome, page, error = await ours(context, url, keys)
    exporter = blackbox(blackbox_module("m", "http", module(keys), timeout="5s"))
    theirs = await asyncio.to_thread(exporter.probe, "m", url)
    verdict = (page.value("probe_success", target="t"), theirs.value("probe_success"))
    assert verdict[0] == verdict[1], (outcome, error, exporter.debug("m", url)[-1500:])
    return outcome, page, theirs


async def test_plain_tls_and_redirected_targets_as_blackbox_sees_them(servers, context, blackbox):  # noqa: F811
    """The same series, labels (phases included) and values as blackbox_exporter, for a plain target, a TLS one
    (certificate series too) and a redirect from one to the other."""
    plain, tls, ca, not_after = servers
    values = ("probe_http_status_code", "probe_http_content_length", "probe_http_uncompressed_body_length",
              "probe_http_redirects", "probe_http_ssl", "probe_http_version", "probe_ip_protocol",
              "probe_ip_addr_hash", "probe_failed_due_to_regex", "probe_http_last_modified_timestamp_seconds")
    outcome, page, theirs = await both(context, blackbox, f"{plain}/ok")
    assert outcome == "success"
    compare(page, theirs, ours_only=OURS_ONLY, values=values)
    keys = f"tls_config: {{ca_file: {ca}}}"
    outcome, page, theirs = await both(context, blackbox, f"{tls}/ok", keys)
    assert outcome == "success"
    compare(page, theirs, ours_only=OURS_ONLY, newer_labels=NEWER_LABELS,
            values=(*values, "probe_ssl_earliest_cert_expiry", "probe_ssl_last_chain_expiry_timestamp_seconds"))
    assert page.value("probe_ssl_earliest_cert_expiry", target="t") == not_after
    outcome, page, theirs = await both(context, blackbox, f"{plain}/redirect?to={tls}/ok", keys)
    assert outcome == "success" and page.value("probe_http_redirects", target="t") == 1
    compare(page, theirs, ours_only=OURS_ONLY, newer_labels=NEWER_LABELS,
            values=("probe_http_ssl", "probe_http_status_code", "probe_ssl_earliest_cert_expiry"))
    assert set(page.by("probe_http_duration_seconds", "phase", target="t")) == {
        "resolve", "connect", "tls", "processing", "transfer"}


async def test_header_regexes_decide_as_blackbox(servers, context, blackbox):  # noqa: F811 - the fixture
    plain = servers[0]
    modules = {  # keys -> our result
        "fail_if_header_matches: [{header: X-Version, regexp: '^1\\.'}]": "header_regex",
        "fail_if_header_matches: [{header: X-Version, regexp: '^2\\.'}]": "success",
        "fail_if_header_not_matches: [{header: cache-control, regexp: max-age}]": "header_regex",
        "fail_if_header_not_matches: [{header: X-Absent, regexp: '.*', allow_missing: true}]": "success",
        "fail_if_header_matches: [{header: X-Absent, regexp: x}]": "header_regex",
    }
    for keys, expected in modules.items():
        outcome, page, theirs = await both(context, blackbox, f"{plain}/ok", keys)
        assert outcome == expected, keys
        compare(page, theirs, ours_only=OURS_ONLY, values=("probe_failed_due_to_regex",))
    # every value of a repeated header is read: one matching is enough for not_matches, one for matches
    for keys, expected in (("fail_if_header_not_matches: [{header: Set-Cookie, regexp: 'b=2'}]", "success"),
                           ("fail_if_header_matches: [{header: Set-Cookie, regexp: 'b=2'}]", "header_regex")):
        outcome, _, _ = await both(context, blackbox, f"{plain}/cookies", keys)
        assert outcome == expected, keys
    outcome, _, error = await ours(context, f"{plain}/ok", "fail_if_header_matches: [{header: X-Absent, regexp: x}]")
    assert error == "header X-Absent missing (fail_if_header_matches, allow_missing: false)"


async def test_fail_if_ssl_and_fail_if_not_ssl_decide_as_blackbox(servers, context, blackbox):  # noqa: F811
    plain, tls, ca, _ = servers
    trust = f"tls_config: {{ca_file: {ca}}}\n"
    for url, keys, expected in ((f"{tls}/ok", "fail_if_ssl: true", "ssl"),
                                (f"{plain}/ok", "fail_if_ssl: true", "success"),
                                (f"{plain}/ok", "fail_if_not_ssl: true", "ssl"),
                                (f"{tls}/ok", "fail_if_not_ssl: true", "success"),
                                (f"{plain}/redirect?to={tls}/ok", "fail_if_not_ssl: true", "success")):
        outcome, _, _ = await both(context, blackbox, url, trust + keys)
        assert outcome == expected, (url, keys)
    assert (await ours(context, f"{tls}/ok", trust + "fail_if_ssl: true"))[2] == \
        "the final response came over TLS (fail_if_ssl)"


async def test_valid_http_versions_decide_as_blackbox(servers, context, blackbox):  # noqa: F811 - the fixture
    plain = servers[0]
    for keys, expected in (("valid_http_versions: [HTTP/1.1]", "success"),
                           ("valid_http_versions: [HTTP/1.0, HTTP/2.0]", "http_version")):
        outcome, page, theirs = await both(context, blackbox, f"{plain}/ok", keys)
        assert outcome == expected, keys
        compare(page, theirs, ours_only=OURS_ONLY, values=("probe_http_version",))
    server, url = await raw_server(sends(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"))
    try:
        outcome, page, theirs = await both(context, blackbox, url, "valid_http_versions: [HTTP/1.0]")
        assert outcome == "success" and page.value("probe_http_version", target="t") == 1.0
        compare(page, theirs, ours_only=OURS_ONLY, values=("probe_http_version",))
    finally:
        server.close()


async def test_compression_decodes_as_blackbox(servers, context, blackbox):  # noqa: F811 - the fixture
    """With compression the body is decoded (the limit and regexes read the decoded body) and the Content-Length
    is the compressed one; a body in another encoding than the module says fails, as blackbox's does."""
    plain = servers[0]
    keys = "compression: gzip\nheaders: {Accept-Encoding: gzip}\nfail_if_body_not_matches_regexp: ['version 1\\.2']"
    outcome, page, theirs = await both(context, blackbox, f"{plain}/gzip", keys)
    assert outcome == "success"
    assert page.value("probe_http_uncompressed_body_length", target="t") == len(BODY) * 20
    compare(page, theirs, ours_only=OURS_ONLY, values=("probe_http_content_length",
                                                        "probe_http_uncompressed_body_length"))
    keys = "compression: br\nheaders: {Accept-Encoding: br}\nfail_if_body_not_matches_regexp: ['version 1\\.2']"
    outcome, page, theirs = await both(context, blackbox, f"{plain}/br", keys)
    assert outcome == "success"
    compare(page, theirs, ours_only=OURS_ONLY, values=("probe_http_content_length",
                                                        "probe_http_uncompressed_body_length"))
    outcome, _, _ = await both(context, blackbox, f"{plain}/gzip", "compression: deflate\n"
                                                                   "headers: {Accept-Encoding: deflate}")
    assert outcome == "invalid_response"
    # without compression the body is read as it comes, as blackbox's client does (no transparent decoding)
    outcome, page, theirs = await both(context, blackbox, f"{plain}/gzip")
    assert outcome == "success"
    compare(page, theirs, ours_only=OURS_ONLY, values=("probe_http_uncompressed_body_length",))
    # without an Accept-Encoding header we ask for what the module decodes
    assert (await ours(context, f"{plain}/gzip", "compression: gzip"))[0] == "success"


async def test_redirect_keys_and_ip_protocols_as_blackbox(servers, context, blackbox):  # noqa: F811
    plain = servers[0]
    # a cookie a redirect sets goes with the next request of the probe (blackbox keeps a cookie jar per probe)
    assert (await both(context, blackbox, f"{plain}/login"))[0] == "success"
    for keys in ("no_follow_redirects: true", "follow_redirects: false"):
        outcome, page, _ = await both(context, blackbox, f"{plain}/redirect", keys)
        assert outcome == "status_code" and page.value("probe_http_status_code", target="t") == 302
    port = plain.rsplit(":", 1)[1]
    by_name = f"http://localhost:{port}/ok"  # localhost has no IPv6 address here (checked below)
    outcome, page, theirs = await both(context, blackbox, by_name)  # ip6 preferred, IPv4 as the fallback
    assert outcome == "success" and page.value("probe_ip_protocol", target="t") == 4
    compare(page, theirs, ours_only=OURS_ONLY, values=("probe_ip_protocol", "probe_ip_addr_hash"))
    outcome, _, _ = await both(context, blackbox, by_name, "preferred_ip_protocol: ip6\nip_protocol_fallback: false")
    assert outcome == "dns_error"
    outcome, _, _ = await both(context, blackbox, by_name, "preferred_ip_protocol: ip4\nip_protocol_fallback: false")
    assert outcome == "success"
    runner, v6_port = await serve(app(), host="::1")
    try:
        outcome, page, theirs = await both(context, blackbox, f"http://[::1]:{v6_port}/ok")
        assert outcome == "success" and page.value("probe_ip_protocol", target="t") == 6
        compare(page, theirs, ours_only=OURS_ONLY, values=("probe_ip_protocol", "probe_ip_addr_hash"))
    finally:
        await runner.cleanup()


async def test_authorization_bearer_token_and_body_file(servers, context, blackbox, tmp_path):  # noqa: F811
    plain = servers[0]
    secret = tmp_path / "credentials"
    secret.write_text("s3cret\n")
    payload = tmp_path / "payload.json"
    payload.write_text('{"check": "deep"}')
    keys = f"method: POST\nbody: ping\nauthorization: {{type: Token, credentials_file: {secret}}}\n" \
           "fail_if_body_not_matches_regexp: ['^ping$']"
    assert (await both(context, blackbox, f"{plain}/auth", keys))[0] == "success"
    keys = f"method: POST\nbody_file: {payload}\nauthorization: {{type: Token, credentials: s3cret}}\n" \
           "fail_if_body_not_matches_regexp: ['deep']"
    assert (await ours(context, f"{plain}/auth", keys))[0] == "success"  # body_file: blackbox 0.25
    assert (await both(context, blackbox, f"{plain}/auth", "method: POST\nbearer_token: s3cret"))[0] == "status_code"


# --- through a proxy (tinyproxy, Debian's) --------------------------------------------------------------------

@pytest.fixture
def tinyproxy(tmp_path):
    """A real forward proxy with basic authentication: (its URL with credentials, a function returning its
    log)."""
    binary = require_tool("tinyproxy")
    port = free_port()
    log = tmp_path / "tinyproxy.log"
    config = tmp_path / "tinyproxy.conf"
    config.write_text(f"Port {port}\nListen 127.0.0.1\nTimeout 30\nLogFile \"{log}\"\nLogLevel Info\n"
                      "MaxClients 20\nAllow 127.0.0.1\nBasicAuth probe pr0xy-pa55\nDisableViaHeader Yes\n")
    process = subprocess.Popen([binary, "-d", "-c", str(config)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)

    def listening() -> bool:
        import socket
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", port)) == 0

    wait_until(listening, what="tinyproxy up")
    yield f"http://probe:pr0xy-pa55@127.0.0.1:{port}", lambda: log.read_text() if log.exists() else ""
    stop_processes([process])


async def test_plain_and_tls_targets_through_a_proxy(servers, context, blackbox, tinyproxy, caplog):  # noqa: F811
    """proxy_url: a plain URL is asked of the proxy, an https one tunnels through CONNECT and checks the target's
    own certificate; as blackbox through the same proxy. Wrong credentials fail with a reason that names the
    proxy and never its password; no_proxy sends a host direct."""
    plain, tls, ca, not_after = servers
    proxy, proxy_log = tinyproxy
    for url in (f"{plain}/ok", f"{tls}/ok"):
        keys = f"proxy_url: {proxy}\ntls_config: {{ca_file: {ca}}}"
        outcome, page, theirs = await both(context, blackbox, url, keys)
        assert outcome == "success", url
        compare(page, theirs, ours_only=OURS_ONLY, newer_labels=NEWER_LABELS,
                values=("probe_http_status_code", "probe_http_ssl", "probe_http_uncompressed_body_length"))
    assert page.value("probe_ssl_earliest_cert_expiry", target="t") == not_after  # the target's, through the tunnel
    assert proxy_log().count("CONNECT") >= 2 and "GET http://127.0.0.1" in proxy_log()
    wrong = proxy.replace("pr0xy-pa55", "wrong-pa55")
    # tinyproxy refuses a wrong password with 401 (RFC 9110 says 407): the proxy's answer, as it gave it
    outcome, _, error = await ours(context, f"{plain}/ok", f"proxy_url: {wrong}")
    assert outcome == "status_code" and error == "status 401, expected 2xx"
    outcome, _, error = await ours(context, f"{tls}/ok", f"proxy_url: {wrong}\ntls_config: {{ca_file: {ca}}}")
    assert outcome == "connection_error" and error is not None
    assert error.startswith("proxy 127.0.0.1:") and error.endswith("refused CONNECT 127.0.0.1:"
                                                                     f"{tls.rsplit(':', 1)[1]}: status 401"), error
    assert "pa55" not in caplog.text and "pa55" not in error
    before = proxy_log().count("GET http://")
    outcome, _, _ = await ours(context, f"{plain}/ok", f"proxy_url: {proxy}\nno_proxy: 10.0.0.0/8,127.0.0.1")
    assert outcome == "success" and proxy_log().count("GET http://") == before  # went direct


# --- config -----------------------------------------------------------------------------------------------------

def test_module_key_mistakes_are_refused_with_file_line_and_reason(tmp_path):
    body = tmp_path / "body"
    body.write_text("x")
    with pytest.raises(ConfigError) as info:
        config_from(
            "http:\n"
            "  - name: a\n"
            "    url: http://127.0.0.1/\n"
            "    fail_if_header_matches: [{header: 'bad name', regexp: '('}]\n"
            "    compression: gzip\n"
            "    headers: {Accept-Encoding: br, X-Evil: \"a\\r\\nHost: b\"}\n"
            "    valid_http_versions: [HTTP/2.0]\n"
            "    fail_if_ssl: true\n"
            "    fail_if_not_ssl: true\n"
            "    enable_http3: true\n"
            "    oauth2: {client_id: x}\n"
            "    fail_if_body_json_matches_cel: 'body.ok'\n"
            f"    body: x\n    body_file: {body}\n"
            "    proxy_url: socks5://127.0.0.1:1080\n"
            "    authorization: {type: Basic, credentials: x}\n")
    problems = [str(p) for p in info.value.problems]
    expected = [
        "agent.yaml:4: http[0].fail_if_header_matches[0].regexp: regular expression '(' does not compile",
        "agent.yaml:6: http[0].headers: the value of X-Evil holds a line break",
        "agent.yaml:7: http[0].valid_http_versions: the agent's client speaks HTTP/1.1",
        "agent.yaml:9: http[0].fail_if_not_ssl: with fail_if_ssl too, every probe would fail",
        "agent.yaml:10: http[0].enable_http3: HTTP/3 is not spoken",
        "agent.yaml:11: http[0].oauth2: OAuth 2.0 client credentials are not supported yet",
        "agent.yaml:12: http[0].fail_if_body_json_matches_cel: CEL expressions are not supported",
        "agent.yaml:14: http[0].body_file: use body or body_file, not both",
        "agent.yaml:15: http[0].proxy_url: socks5://127.0.0.1 is not an http:// proxy",
        "agent.yaml:16: http[0].authorization.type: authorization cannot be of type Basic: use basic_auth",
    ]
    for line in expected:
        assert any(p.startswith(line) for p in problems), (line, problems)
    with pytest.raises(ConfigError) as info:
        config_from("http:\n  - {name: a, url: 'http://127.0.0.1/', compression: gzip,"
                    " headers: {Accept-Encoding: 'br, gzip;q=0'}}\n")
    assert "the Accept-Encoding header 'br, gzip;q=0' does not accept gzip" in str(info.value)


def test_proxy_and_authorization_secrets_stay_out_of_reprs_and_errors():
    (config,) = config_from("http:\n  - name: s\n    url: http://127.0.0.1/\n"
                            "    proxy_url: http://me:hunter2@127.0.0.1:3128\n"
                            "    authorization: {credentials: t0ken}\n")
    assert "hunter2" not in repr(config) and "t0ken" not in repr(config)
    with pytest.raises(ConfigError) as info:
        config_from("http:\n  - name: s\n    url: http://127.0.0.1/\n    proxy_url: 'http://me:hunter2@[::1'\n")
    assert "hunter2" not in str(info.value)


def test_every_blackbox_http_key_is_read_or_refused_with_a_reason():
    """blackbox_exporter 0.28's HTTPProbe keys (and http_config's): none is an "unknown field"."""
    with pytest.raises(ConfigError, match="unknown field"):  # what a key nobody reads gets
        config_from("http:\n  - {name: a, url: 'http://127.0.0.1/', not_a_blackbox_key: 1}\n")
    source = Path(__file__).with_name("blackbox_http_keys.txt")
    keys = [line.split("#")[0].strip() for line in source.read_text().splitlines()]
    for key in filter(None, keys):
        section, _, inner = key.rpartition(".")
        value = f"{{{inner}: [[[]]]}}" if section else "[[[]]]"
        with pytest.raises(ConfigError) as info:
            config_from(f"http:\n  - {{name: a, url: 'http://127.0.0.1/', {section or inner}: {value}}}\n")
        assert "unknown field" not in str(info.value), (key, str(info.value))


async def test_head_requests_report_the_announced_length_as_blackbox(servers, context, blackbox):  # noqa: F811
    outcome, page, theirs = await both(context, blackbox, f"{servers[0]}/ok", "method: HEAD")
    assert outcome == "success" and page.value("probe_http_content_length", target="t") == len(BODY)
    compare(page, theirs, ours_only=OURS_ONLY, values=("probe_http_content_length",
                                                        "probe_http_uncompressed_body_length"))
