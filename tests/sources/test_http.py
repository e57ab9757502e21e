"""HTTP source against real aiohttp servers on 127.0.0.1: every result, TLS, auth, JSON extraction."""

import asyncio
import base64
import socket
import ssl
import subprocess
import time

import pytest
from aiohttp import web

from agent.config.agent import parse_config
from agent.config.fields import Fields
from agent.config.model import SourceDefaults
from agent.config.problems import ConfigError, FileProblems
from agent.config.yaml import load_text
from agent.series.store import Store
from agent.sources.base import SourceContext
from agent.sources.http import ALL_RESULTS as RESULTS
from agent.sources.http import EXPORTED_SERIES, KIND
from agent.sources.probe.families import TLS_FAMILIES
from agent.sources.probe.resources import probe_resources
from agent.sources.probe.schedule import offset
from agent.sources.probe.source import ProbeSource
from tests.helpers import build_source, render_store, serve

DOC = {"orders": {"placed": 42}, "region": "eu", "queues": [{"name": "a", "depth": 3}, {"name": "b", "depth": "7"}],
       "flag": True, "text": "n/a"}


async def handler_ok(request):
    return web.Response(text="all good: version 1.2")


async def handler_slow(request):
    await asyncio.sleep(2)
    return web.Response(text="late")


async def handler_hang(request):
    await asyncio.sleep(3600)  # until the server is cleaned up


async def handler_big(request):
    return web.Response(body=b"x" * 5000)


async def handler_json(request):
    return web.json_response(DOC)


async def handler_hostile_json(request):
    # a lone surrogate escape is valid JSON, and decodes to a str that UTF-8 cannot encode
    return web.Response(body=b'{"queues": [{"name": "\\ud800", "depth": 1}, {"name": "ok", "depth": 2}]}',
                        content_type="application/json")


async def handler_notjson(request):
    return web.Response(text="{oops", content_type="application/json")


async def handler_redirect(request):
    hops = int(request.match_info["n"])
    raise web.HTTPFound(f"/redirect/{hops - 1}" if hops > 1 else "/ok")


async def handler_status(request):
    return web.Response(status=int(request.match_info["code"]), text="status")


async def handler_auth(request):
    expected = {"Basic " + base64.b64encode(b"bob:pa55").decode(), "Bearer tok3n"}
    if request.headers.get("Authorization") not in expected:
        return web.Response(status=401)
    return web.Response(text="welcome")


def make_app() -> web.Application:
    app = web.Application()
    for path, handler in (("/ok", handler_ok), ("/slow", handler_slow), ("/hang", handler_hang),
                          ("/big", handler_big),
                          ("/json", handler_json), ("/notjson", handler_notjson),
                          ("/hostile", handler_hostile_json), ("/redirect/{n}", handler_redirect),
                          ("/status/{code}", handler_status), ("/auth", handler_auth)):
        app.router.add_get(path, handler)
    return app


@pytest.fixture
async def server():
    runner, port = await serve(make_app())
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


@pytest.fixture
async def context():
    context = SourceContext()
    yield context
    await context.close()


def config_from(text: str):
    config, _ = parse_config(load_text(text, "agent.yaml"), "agent.yaml")
    return config.of_kind("http")


def source_for(context, store: Store, yaml_item: str) -> ProbeSource:
    (config,) = config_from("http:\n" + yaml_item)
    return build_source(store, context, config, "http")


async def test_success_sets_blackbox_gauges_and_counts(server, context):
    store = Store()
    source = source_for(context, store, f"  - name: web\n    url: {server}/ok\n    labels: {{team: shop}}\n")
    assert await source.probe() == "success"
    page = render_store(store)
    labels = {"target": "web", "team": "shop"}
    assert page.value("probe_success", **labels) == 1
    assert page.value("probe_http_status_code", **labels) == 200
    assert page.value("probe_http_uncompressed_body_length", **labels) == len("all good: version 1.2")
    assert page.value("probe_http_content_length", **labels) == len("all good: version 1.2")
    assert page.value("probe_http_version", **labels) == 1.1
    assert page.value("probe_http_ssl", **labels) == 0
    assert 0 < page.value("probe_duration_seconds", **labels) < 1
    phases = page.by("probe_http_duration_seconds", "phase", **labels)
    assert set(phases) == {"resolve", "connect", "tls", "processing", "transfer"}
    assert phases["processing"] > 0 and phases["tls"] == 0
    probes = page.by("probes_total", "result", **labels)
    assert probes["success"] == 1
    assert set(probes) == set(RESULTS)  # every result exists from the first probe (at 0)
    assert page.value("probe_latency_seconds_count", **labels) == 1
    assert page.by("probe_last_result", "result") == {"success": 1}
    # the source's own self-metrics, reported by the runtime's SourceStats, once each
    assert page.value("kpi_agent_source_collections_total", source="web", kind="http") == 1
    assert page.value("kpi_agent_source_collection_errors_total", source="web", kind="http") == 0
    assert 0 < page.value("kpi_agent_source_last_collection_duration_seconds", source="web", kind="http") < 1
    assert page.find("probe_duration_seconds")[0].labels == labels  # the bug: a second copy with team="http"


async def test_exported_series_list_matches_what_a_probe_writes(server, context):
    store = Store()
    source = source_for(context, store, f"  - name: web\n    url: {server}/ok\n")
    await source.probe()
    names = {s.name for s in render_store(store).series if not s.name.startswith(("kpi_agent_", "process_"))}
    over_tls = {name for spec in TLS_FAMILIES for name in spec.sample_names}
    with_last_modified = {"probe_http_last_modified_timestamp_seconds"}
    assert names == set(EXPORTED_SERIES) - over_tls - with_last_modified


async def test_redirects_are_followed_and_counted(server, context):
    store = Store()
    source = source_for(context, store, f"  - name: r\n    url: {server}/redirect/3\n")
    assert await source.probe() == "success"
    assert render_store(store).value("probe_http_redirects", target="r") == 3
    no_follow = source_for(context, store, f"  - name: nf\n    url: {server}/redirect/1\n    follow_redirects: false\n")
    assert await no_follow.probe() == "status_code"
    assert render_store(store).value("probe_http_status_code", target="nf") == 302
    too_many = source_for(context, store, f"  - name: loop\n    url: {server}/redirect/12\n")
    assert await too_many.probe() == "too_many_redirects"


async def test_status_codes(server, context):
    store = Store()
    wrong = source_for(context, store, f"  - name: s\n    url: {server}/status/503\n")
    assert await wrong.probe() == "status_code"
    assert render_store(store).value("probe_success", target="s") == 0
    assert render_store(store).by("probe_last_result", "result", target="s") == {"status_code": 1}
    allowed = source_for(context, store, f"  - name: t\n    url: {server}/status/404\n    valid_status_codes: [404]\n")
    assert await allowed.probe() == "success"
    not_listed = source_for(context, store, f"  - name: u\n    url: {server}/ok\n    valid_status_codes: [204]\n")
    assert await not_listed.probe() == "status_code"


async def test_body_regexps(server, context):
    store = Store()
    must = source_for(context, store, f"  - name: a\n    url: {server}/ok\n"
                                      f"    fail_if_body_not_matches_regexp: ['version \\d+']\n")
    assert await must.probe() == "success"
    assert render_store(store).value("probe_failed_due_to_regex", target="a") == 0
    forbidden = source_for(context, store, f"  - name: b\n    url: {server}/ok\n"
                                           f"    fail_if_body_matches_regexp: ['good']\n")
    assert await forbidden.probe() == "body_regex"
    assert render_store(store).value("probe_failed_due_to_regex", target="b") == 1
    missing = source_for(context, store, f"  - name: c\n    url: {server}/ok\n"
                                         f"    fail_if_body_not_matches_regexp: ['maintenance']\n")
    assert await missing.probe() == "body_regex"


async def test_slow_target_times_out_without_delaying_another_source(server, context):
    store = Store()
    slow = source_for(context, store, f"  - name: slow\n    url: {server}/slow\n    interval: 1s\n    timeout: 300ms\n")
    fast = source_for(context, store, f"  - name: fast\n    url: {server}/ok\n    interval: 1s\n    timeout: 300ms\n")
    started = time.perf_counter()
    slow_task = asyncio.create_task(slow.probe())
    await asyncio.sleep(0.01)
    assert await fast.probe() == "success"
    fast_done = time.perf_counter() - started
    assert await slow_task == "timeout"
    assert fast_done < 0.2
    assert 0.29 < render_store(store).value("probe_duration_seconds", target="slow") < 0.6


async def test_connection_refused_and_dns_error(context):
    store = Store()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    refused = source_for(context, store, f"  - name: down\n    url: http://127.0.0.1:{port}/\n")
    assert await refused.probe() == "connection_refused"
    unknown = source_for(context, store, "  - name: nx\n    url: http://no-such-host.invalid/\n    timeout: 5s\n")
    assert await unknown.probe() == "dns_error"
    assert render_store(store).by("probe_success", "target") == {"down": 0, "nx": 0}


async def test_body_over_the_limit(server, context):
    store = Store()
    source = source_for(context, store, f"  - name: big\n    url: {server}/big\n    body_size_limit: 1KiB\n")
    assert await source.probe() == "body_too_large"
    ok = source_for(context, store, f"  - name: fits\n    url: {server}/big\n    body_size_limit: 10KiB\n")
    assert await ok.probe() == "success"


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3", "-subj",
                    "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    end = subprocess.run(["openssl", "x509", "-in", str(cert), "-noout", "-enddate"], check=True,
                         capture_output=True, text=True).stdout.strip().split("=", 1)[1]
    return cert, key, ssl.cert_time_to_seconds(end)


async def test_tls_self_signed_trusted_via_ca_file_and_failing_without(context, certificate):
    cert, key, not_after = certificate
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    runner, port = await serve(make_app(), ssl_context=server_context)
    try:
        store = Store()
        trusted = source_for(context, store, f"  - name: tls\n    url: https://127.0.0.1:{port}/ok\n"
                                             f"    tls_config: {{ca_file: {cert}}}\n")
        assert await trusted.probe() == "success"
        page = render_store(store)
        assert page.value("probe_http_ssl", target="tls") == 1
        phases = page.by("probe_http_duration_seconds", "phase", target="tls")
        assert phases["tls"] > 0 and phases["connect"] > 0  # the handshake is split out of connection setup
        assert page.value("probe_ssl_earliest_cert_expiry", target="tls") == not_after
        assert len(page.find("probe_tls_version_info", target="tls")) == 1
        untrusted = source_for(context, store, f"  - name: notrust\n    url: https://127.0.0.1:{port}/ok\n")
        assert await untrusted.probe() == "tls_error"
        skip = source_for(context, store, f"  - name: skip\n    url: https://127.0.0.1:{port}/ok\n"
                                          f"    tls_config: {{insecure_skip_verify: true}}\n")
        assert await skip.probe() == "success"
        # unverified, the certificate is still read (blackbox reads every certificate the server sent)
        assert render_store(store).value("probe_ssl_earliest_cert_expiry", target="skip") == not_after
        named = source_for(context, store, f"  - name: sni\n    url: https://127.0.0.1:{port}/ok\n"
                                           f"    tls_config: {{ca_file: {cert}, server_name: wrong.example}}\n")
        assert await named.probe() == "tls_error"
    finally:
        await runner.cleanup()


async def test_json_metrics_values_objects_and_labels(server, context):
    store = Store()
    source = source_for(context, store, (
        f"  - name: api\n    url: {server}/json\n    json_metrics:\n"
        "      - {name: shop_orders_total, type: counter, path: $.orders.placed,"
        " labels: {region: $.region, env: prod}}\n"
        "      - {name: shop_queue_depth, type: gauge, path: '$.queues[*]', value: $.depth, labels: {queue: $.name}}\n"
        "      - {name: shop_flag, path: $.flag}\n"))
    assert await source.probe() == "success"
    page = render_store(store)
    assert [(s.labels, s.value) for s in page.find("shop_orders_total")] == [
        ({"target": "api", "region": "eu", "env": "prod"}, 42)]
    assert page.by("shop_queue_depth", "queue", target="api") == {"a": 3, "b": 7}
    assert page.value("shop_flag", target="api") == 1
    assert page.value("kpi_agent_json_extract_errors_total", source="api", metric="shop_orders_total") == 0


async def test_missing_path_and_non_numeric_value_are_counted_and_leave_others_intact(server, context):
    store = Store()
    source = source_for(context, store, (
        f"  - name: api\n    url: {server}/json\n    json_metrics:\n"
        "      - {name: gone, path: $.nothing.here}\n"
        "      - {name: words, path: $.text}\n"
        "      - {name: placed, path: $.orders.placed}\n"))
    assert await source.probe() == "success"
    page = render_store(store)
    assert page.by("kpi_agent_json_extract_errors_total", "metric", source="api") == {
        "gone": 1, "words": 1, "placed": 0}
    assert page.value("placed", target="api") == 42
    assert page.find("gone") == [] and page.find("words") == []


async def test_a_lone_surrogate_in_a_json_label_cannot_break_metrics(server, context):
    store = Store({"site": "eu"})
    source = source_for(context, store, f"  - name: api\n    url: {server}/hostile\n    json_metrics:\n"
                                        "      - {name: depth, path: '$.queues[*]', value: $.depth,"
                                        " labels: {q: $.name}}\n")
    assert await source.probe() == "success"
    assert render_store(store).by("depth", "q") == {"\ufffd": 1, "ok": 2}  # decoded strictly: valid UTF-8
    assert render_store(store, openmetrics=True).by("depth", "q") == {"\ufffd": 1, "ok": 2}


async def test_invalid_json_fails_the_probe(server, context):
    store = Store()
    source = source_for(context, store, f"  - name: bad\n    url: {server}/notjson\n"
                                        "    json_metrics: [{name: x, path: $.a}]\n")
    assert await source.probe() == "invalid_json"
    assert render_store(store).value("probe_success", target="bad") == 0


async def test_basic_auth_from_file_and_bearer_token(server, context, tmp_path):
    password = tmp_path / "password"
    password.write_text("pa55\n")
    token = tmp_path / "token"
    token.write_text("tok3n\n")
    store = Store()
    basic = source_for(context, store, f"  - name: basic\n    url: {server}/auth\n"
                                       f"    basic_auth: {{username: bob, password_file: {password}}}\n")
    bearer = source_for(context, store, f"  - name: bearer\n    url: {server}/auth\n    bearer_token_file: {token}\n")
    wrong = source_for(context, store, f"  - name: wrong\n    url: {server}/auth\n"
                                       "    basic_auth: {username: bob, password: nope}\n")
    assert [await basic.probe(), await bearer.probe(), await wrong.probe()] == ["success", "success", "status_code"]
    password.unlink()
    assert await basic.probe() == "auth_file_error"


def test_secrets_stay_out_of_reprs_and_errors():
    (config,) = config_from("http:\n  - name: s\n    url: http://127.0.0.1/\n"
                            "    basic_auth: {username: bob, password: hunter2}\n    headers: {X-Api-Key: k3y}\n")
    assert "hunter2" not in repr(config) and "k3y" not in repr(config)
    with pytest.raises(ConfigError) as info:
        config_from("http:\n  - name: s\n    url: http://127.0.0.1/\n    timeout: nope\n"
                    "    basic_auth: {username: bob, password: hunter2, password_file: /etc/hostname}\n")
    assert "hunter2" not in str(info.value)
    assert "agent.yaml:5: http[0].basic_auth: needs exactly one of password or password_file" in str(info.value)


def test_config_errors_name_file_line_and_field():
    with pytest.raises(ConfigError) as info:
        config_from(
            "http:\n"
            "  - name: a\n"
            "    url: ftp://x/\n"
            "    interval: 5s\n"
            "    timeout: 10s\n"
            "    fail_if_body_matches_regexp: ['(']\n"
            "    valid_status_codes: [200, 999]\n"
            "    body_size_limit: lots\n"
            "    json_metrics:\n"
            "      - {name: orders, type: counter, path: $.a}\n"
            "      - {name: q, path: 'not a path'}\n"
            "      - {name: probe_fake, path: $.b}\n")
    problems = [str(p) for p in info.value.problems]
    expected = [
        "agent.yaml:3: http[0].url: 'ftp://x/' is not an http:// or https:// URL",
        "agent.yaml:5: http[0].timeout: 10s is longer than the interval 5s",
        "agent.yaml:6: http[0].fail_if_body_matches_regexp: item 0: regular expression '(' does not compile",
        "agent.yaml:7: http[0].valid_status_codes: 999 is not an HTTP status code",
        "agent.yaml:8: http[0].body_size_limit: 'lots' is not a size",
        "agent.yaml:10: http[0].json_metrics[0].name: counter names end in _total: orders_total",
        "agent.yaml:11: http[0].json_metrics[1].path: 'not a path' is not a JSONPath",
        "agent.yaml:12: http[0].json_metrics[2].name: 'probe_fake' clashes",
    ]
    for line in expected:
        assert any(p.startswith(line) for p in problems), (line, problems)


def test_timeout_defaults_to_global_but_never_past_the_interval():
    report = FileProblems("x.yaml")
    node = load_text("name: a\nurl: http://127.0.0.1/\ninterval: 2s\n", "x.yaml")
    config = KIND.parse(Fields(node, "http[0]", report), SourceDefaults(interval=15, timeout=10))
    assert (config.interval, config.timeout) == (2, 2) and report.problems == []


def test_start_offsets_are_stable_and_spread(context):
    store = Store()
    offsets = []
    for i in range(200):
        (config,) = config_from(f"http:\n  - name: target-{i}\n    url: http://127.0.0.1/\n    interval: 10s\n")
        prober = build_source(store, context, config, "http").prober
        offsets.append(offset(prober.key, prober.interval))
    assert all(0 <= o < 10 for o in offsets)
    buckets = [sum(1 for o in offsets if b <= o < b + 1) for b in range(10)]
    assert max(buckets) < 40  # 20 expected per second of the interval; a herd would put them all in one
    (again,) = config_from("http:\n  - name: target-0\n    url: http://127.0.0.1/\n    interval: 10s\n")
    prober = build_source(Store(), context, again, "http").prober
    assert offset(prober.key, prober.interval) == offsets[0]


async def test_run_keeps_its_cadence(server, context):
    store = Store()
    source = source_for(context, store,
                        f"  - name: tick\n    url: {server}/ok\n    interval: 100ms\n    timeout: 90ms\n")
    task = asyncio.create_task(source.run())
    await asyncio.sleep(1.05)
    task.cancel()
    count = render_store(store).value("probes_total", target="tick", result="success")
    assert 9 <= count <= 11


async def test_credentials_and_custom_headers_stay_off_other_hosts_on_redirect(tmp_path):
    """Issue 9, 5b: a redirect to another host must not carry X-Api-Key or Authorization: the headers the config
    sets go to the configured host and its subdomains only, whatever the port (Go's rule for Authorization)."""
    seen: list[dict[str, str]] = []

    async def echo(request):
        seen.append({k: v for k, v in request.headers.items() if k in ("X-Api-Key", "Authorization", "Accept")})
        return web.Response(text="here")

    echo_app = web.Application()
    echo_app.router.add_get("/echo", echo)
    other_host, other_port = await serve(echo_app, host="127.0.0.2")
    other_url = f"http://127.0.0.2:{other_port}/echo"
    same_host, same_port = await serve(echo_app)
    same_url = f"http://127.0.0.1:{same_port}/echo"

    async def redirect(request):
        raise web.HTTPFound(other_url if request.match_info["where"] == "other" else same_url)

    redirecting = web.Application()
    redirecting.router.add_get("/to/{where}", redirect)
    origin, origin_port = await serve(redirecting)
    context = SourceContext()
    try:
        password = tmp_path / "password"
        password.write_text("pa55\n")
        store = Store()
        for name, where in (("away", "other"), ("home", "same")):
            source = source_for(context, store, f"  - name: {name}\n    url: http://127.0.0.1:{origin_port}/to/{where}\n"
                                                f"    headers: {{X-Api-Key: k3y, Accept: text/plain}}\n"
                                                f"    basic_auth: {{username: bob, password_file: {password}}}\n")
            assert await source.probe() == "success"
        away, home = seen
        assert away == {}  # another host: none of the configured headers, no credentials
        assert home == {"Accept": "text/plain", "X-Api-Key": "k3y",
                        "Authorization": "Basic " + base64.b64encode(b"bob:pa55").decode()}
        assert render_store(store).value("probe_http_redirects", target="away") == 1
    finally:
        await context.close()
        for runner in (origin, same_host, other_host):
            await runner.cleanup()


async def test_probes_that_get_no_slot_are_skipped_not_counted_against_the_target(server, context):
    """Issue 9, 3: with every slot taken by a hanging target, a healthy target's probe is skipped (agent's
    problem, counted in kpi_agent_probes_skipped_total), never recorded as a timeout of the healthy target."""
    store = Store()
    probe_resources(context).slots.resize(1)
    slow = source_for(context, store, f"  - name: hang\n    url: {server}/slow\n    interval: 1s\n    timeout: 800ms\n")
    fast = source_for(context, store, f"  - name: fine\n    url: {server}/ok\n    interval: 1s\n    timeout: 200ms\n")
    hanging = asyncio.create_task(slow.probe())
    await asyncio.sleep(0.05)
    assert await fast.probe() is None
    page = render_store(store)
    assert page.value("kpi_agent_probes_skipped_total", source="fine") == 1
    assert page.value("probes_total", target="fine", result="timeout") == 0
    assert page.value("probe_success", target="fine") is None  # nothing recorded for the target
    assert page.value("kpi_agent_source_collections_total", source="fine") == 0
    assert await hanging == "timeout"  # the hanging target does time out: its own fault
    assert await fast.probe() == "success"  # the slot is free again
    assert render_store(store).value("kpi_agent_probes_skipped_total", source="hang") == 0


async def test_one_ssl_context_per_tls_config_and_tls_facts_per_probe(context, tmp_path):
    """Sources with the same tls_config share one SSL context (loaded once, off the loop in the runtime);
    each probe still reads the certificate of its own connection, even when probes of two servers overlap."""
    expiries, runners, urls = [], [], []
    for days in (3, 9):
        cert, key = tmp_path / f"{days}.pem", tmp_path / f"{days}.key"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", str(days), "-subj",
                        "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key),
                        "-out", str(cert)], check=True, capture_output=True)
        end = subprocess.run(["openssl", "x509", "-in", str(cert), "-noout", "-enddate"], check=True,
                             capture_output=True, text=True).stdout.strip().split("=", 1)[1]
        expiries.append(ssl.cert_time_to_seconds(end))
        server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_context.load_cert_chain(cert, key)
        runner, port = await serve(make_app(), ssl_context=server_context)
        runners.append(runner)
        urls.append(f"https://127.0.0.1:{port}/ok")
    bundle = tmp_path / "both.pem"
    bundle.write_text((tmp_path / "3.pem").read_text() + (tmp_path / "9.pem").read_text())
    try:
        store = Store()
        sources = [source_for(context, store, f"  - name: s{i}\n    url: {url}\n"
                                              f"    tls_config: {{ca_file: {bundle}}}\n") for i, url in enumerate(urls)]
        assert sources[0].prober.source.prober.ssl_context is sources[1].prober.source.prober.ssl_context
        for _ in range(5):
            assert await asyncio.gather(*(s.probe() for s in sources)) == ["success", "success"]
            page = render_store(store)
            assert [page.value("probe_ssl_earliest_cert_expiry", target=f"s{i}") for i in (0, 1)] == expiries
            for i in (0, 1):
                phases = page.by("probe_http_duration_seconds", "phase", target=f"s{i}")
                assert phases["tls"] > 0 and phases["connect"] > 0
    finally:
        for runner in runners:
            await runner.cleanup()


async def test_a_reload_that_changes_max_concurrent_probes_takes_effect(server, tmp_path):
    """Issue 9, 3: one slot, taken most of the time by a hanging target, starves a healthy one (its probes
    are skipped, never failed); a reload to more slots lets it through, without rebuilding either source.
    Skips are compared as shares of the healthy target's probes before and after the reload: a machine so busy
    that a tick comes too late is skipped too, but rarely, not for most probes."""
    from agent.config.agent import load_config
    from agent.runtime.agent import Agent
    from tests.helpers import Exposition, ascrape, until

    config = tmp_path / "agent.yaml"
    # hang holds the slot 1.15 s of every 1.2 s; fine waits at most its 120 ms timeout for it, then is skipped
    sources = (f"http:\n  - {{name: hang, url: '{server}/hang', interval: 1200ms, timeout: 1150ms}}\n"
               f"  - {{name: fine, url: '{server}/ok', interval: 150ms, timeout: 120ms}}\n")
    config.write_text("global: {max_concurrent_probes: 1}\n" + sources)
    agent = Agent(lambda: load_config(config)[0], "127.0.0.1:0")
    await agent.start()
    metrics = f"http://127.0.0.1:{agent.bound_port}/metrics"

    def fine(page: Exposition) -> tuple[float, float]:
        return (page.value("probes_total", target="fine", result="success"),
                page.value("kpi_agent_probes_skipped_total", source="fine"))

    async def grown(since: Exposition, successes: float = 0, skipped: float = 0) -> Exposition | None:
        page = await ascrape(metrics)
        (ok, skips), (ok_then, skips_then) = fine(page), fine(since)
        return page if ok - ok_then >= successes and skips - skips_then >= skipped else None

    try:
        start_page = await ascrape(metrics)
        start = await until(lambda: grown(start_page, skipped=1), what="hang to take the slot")
        starved = await until(lambda: grown(start, skipped=5), what="skipped probes")
        assert starved.value("probes_total", target="fine", result="timeout") == 0
        assert starved.value("kpi_agent_source_collection_errors_total", source="fine") == 0
        ok, skips = (now - then for now, then in zip(fine(starved), fine(start), strict=True))
        starved_share = skips / (ok + skips)
        assert starved_share > 0.5, (ok, skips)  # one slot: most of fine's probes skipped
        source = agent.sources[("http", "fine")].source
        config.write_text("global: {max_concurrent_probes: 4}\n" + sources)
        assert await agent.reload() is None
        assert agent.sources[("http", "fine")].source is source  # the sources were not rebuilt
        # a probe waiting for the slot when the reload came may still be skipped: count from 2 successes on
        before = await until(lambda: grown(starved, successes=2), what="probes through")
        after = await until(lambda: grown(before, successes=10), what="10 more probes through")
        ok, skips = (now - then for now, then in zip(fine(after), fine(before), strict=True))
        # quiet, none is skipped now; a machine so busy that ticks come late skips some (3 of 13 at load 12),
        # but far fewer than one slot held by hang skips: the share at least halves
        assert skips / (ok + skips) < starved_share / 2, (ok, skips, starved_share)
        assert after.value("probes_total", target="fine", result="timeout") == 0
    finally:
        await agent.stop()
