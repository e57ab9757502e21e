"""The exposition contract, for every source kind at once: a real agent scraped over HTTP in both formats.

Every series is unique (the strict parser fails on a duplicate), every data series carries its source's
identity label and exactly the static labels configured for it, every source reports its kpi_agent_source_*
series once, and promtool accepts the page. A new source kind is added to KINDS and to SOURCES below.
"""

import subprocess
from pathlib import Path

import pytest
from aiohttp import web

from agent.config.agent import load_config
from agent.runtime.agent import Agent
from agent.sources.base import STATS_FAMILIES
from agent.sources.kinds import KINDS
from tests.helpers import Exposition, ascrape, serve, until
from tests.sources.journal.conftest import Journal, entry
from tests.tools import require_tool


def _journal(log: Path) -> str:
    """Two journal sources over a journal file written here (the sandbox has no journald)."""
    directory = log.parent / "journal"
    directory.mkdir()
    require_tool("journalctl")
    Journal(directory, require_tool("systemd-journal-remote")).write(entry(priority=3), entry("sshd.service"))
    return "".join(
        f"  - {{name: journal-{variant}, directory: '{directory}', start_at: beginning,{labels}"
        f" metrics: [{{name: journal_entries_total, type: counter, labels: [{{unit: _SYSTEMD_UNIT}}]}},"
        f" {{name: journal_priority, type: histogram, value: PRIORITY, buckets: [3, 6]}}]}}\n"
        for variant, labels in (("labelled", " labels: {team: shop},"), ("plain", "")))


# Per kind: a source with static labels and one without; both collect something within a second.
SOURCES = {
    "http": lambda target, log: (
        f"http:\n"
        f"  - {{name: probe-labelled, url: '{target}/json', interval: 300ms, timeout: 250ms, labels: {{team: shop}},"
        f" json_metrics: [{{name: shop_orders_total, type: counter, path: $.orders}}]}}\n"
        f"  - {{name: probe-plain, url: '{target}/json', interval: 300ms, timeout: 250ms,"
        f" json_metrics: [{{name: shop_orders_total, type: counter, path: $.orders}}]}}\n"
        # a discovering source probing the same URL: its series differ by source, and by target (the address)
        f"  - {{name: probe-discovered, interval: 300ms, timeout: 250ms, labels: {{team: shop}},"
        f" static_configs: [{{targets: ['{target}/json'], labels: {{le: clash}}}}],"
        f" json_metrics: [{{name: shop_orders_total, type: counter, path: $.orders}}]}}\n"),
    "tcp": lambda target, log: (
        f"tcp:\n"
        f"  - {{name: tcp-labelled, target: '{target.removeprefix('http://')}', interval: 300ms, timeout: 250ms,"
        f" labels: {{team: shop}}, preferred_ip_protocol: ip4}}\n"
        f"  - {{name: tcp-plain, target: '{target.removeprefix('http://')}', interval: 300ms, timeout: 250ms,"
        f" query_response: [{{send: 'GET /json HTTP/1.0\\r'}}, {{send: '\\r'}},"
        f" {{expect: 'HTTP/1.. ([0-9]+)', labels: [{{name: status, value: '$1'}}]}}]}}\n"),
    # the other prober kinds need no server of their own here: a failed probe writes its series too
    "dns": lambda target, log: (
        f"dns:\n"
        f"  - {{name: dns-labelled, target: '{target.removeprefix('http://')}', query_name: example.test,"
        f" transport_protocol: tcp, preferred_ip_protocol: ip4, interval: 300ms, timeout: 250ms,"
        f" labels: {{team: shop}}}}\n"
        f"  - {{name: dns-plain, target: '{target.removeprefix('http://')}', query_name: example.test,"
        f" transport_protocol: tcp, preferred_ip_protocol: ip4, interval: 300ms, timeout: 250ms}}\n"),
    "icmp": lambda target, log: (
        "icmp:\n"
        "  - {name: icmp-labelled, target: 127.0.0.1, interval: 300ms, timeout: 250ms, labels: {team: shop}}\n"
        "  - {name: icmp-plain, target: 127.0.0.1, interval: 300ms, timeout: 250ms}\n"),
    "grpc": lambda target, log: (
        f"grpc:\n"
        f"  - {{name: grpc-labelled, target: '{target.removeprefix('http://')}', interval: 300ms, timeout: 250ms,"
        f" preferred_ip_protocol: ip4, labels: {{team: shop}}}}\n"
        f"  - {{name: grpc-plain, target: '{target.removeprefix('http://')}', interval: 300ms, timeout: 250ms,"
        f" preferred_ip_protocol: ip4}}\n"),
    "logs": lambda target, log: (
        f"logs:\n"
        f"  - {{name: logs-labelled, paths: ['{log}'], start_at: beginning, format: logfmt, labels: {{team: shop}},"
        f" metrics: [{{name: events_total, type: counter, labels: [level]}},"
        f" {{name: took_seconds, type: histogram, value: took}}]}}\n"
        f"  - {{name: logs-plain, paths: ['{log}'], start_at: beginning, format: logfmt,"
        f" metrics: [{{name: events_total, type: counter, labels: [level]}},"
        f" {{name: took_seconds, type: histogram, value: took}}]}}\n"),
    "journal": lambda target, log: "journal:\n" + _journal(log),
}
DATA = {"http": ("probe_success", "shop_orders_total"), "tcp": ("probe_success", "probe_ip_protocol"),
        "dns": ("probe_success",), "icmp": ("probe_success",), "grpc": ("probe_success",),
        "logs": ("events_total", "took_seconds_count"),
        "journal": ("journal_entries_total", "journal_priority_count")}
NAME_PREFIX = {"http": "probe"}  # sources are named <prefix>-labelled and <prefix>-plain; the kind by default


def test_every_kind_is_covered():
    assert set(SOURCES) == set(KINDS) == set(DATA)


def test_what_the_kinds_table_knows_without_loading_a_kind_holds_for_every_kind():
    """The table answers the config's questions about kinds it has no source of without importing them: their
    identity labels (reserved for global labels) and the prefixes of their builtin families (a family a source
    declares itself can clash with one only if it has such a prefix)."""
    from agent.sources.kinds import BUILTIN_PREFIXES, IDENTITY_LABELS

    for kind in KINDS.values():
        assert kind.identity in IDENTITY_LABELS, kind.name
        assert all(spec.name.startswith(BUILTIN_PREFIXES) for spec in kind.builtin), kind.name


def test_a_misspelt_kind_is_told_the_nearest_though_no_kind_is_loaded_for_it():
    from agent.config.agent import parse_config
    from agent.config.problems import ConfigError
    from agent.config.yaml import load_text

    with pytest.raises(ConfigError) as error:
        parse_config(load_text("dsn:\n  - {name: zone, target: 127.0.0.1, query_name: example.com}\n", "agent.yaml"),
                     "agent.yaml")
    assert "agent.yaml:1: dsn: unknown field; did you mean 'dns'?" in str(error.value)


@pytest.fixture
async def target():
    async def orders(request: web.Request) -> web.Response:
        return web.json_response({"orders": 7})

    app = web.Application()
    app.router.add_get("/json", orders)
    runner, port = await serve(app)
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


@pytest.mark.parametrize("global_labels", [{}, {"site": "eu-1", "team": "everyone"}])
async def test_every_series_is_unique_labelled_and_reported_per_kind(tmp_path, target, promtool, global_labels):
    log = tmp_path / "app.log"
    log.write_text("level=info took=0.2\nlevel=warn took=1.5\nlevel=info\n")
    labels = ", ".join(f"{k}: {v}" for k, v in global_labels.items())
    config = tmp_path / "agent.yaml"
    config.write_text(f"global: {{labels: {{{labels}}}}}\n" + "".join(make(target, log) for make in SOURCES.values()))
    agent = Agent(lambda: load_config(config)[0], "127.0.0.1:0")
    await agent.start()
    base = f"http://127.0.0.1:{agent.bound_port}/metrics"
    try:
        declared = {sample: {*spec.labelnames, *(["le"] if sample.endswith("_bucket") else [])}
                    for kind, source in agent.config.sources for family in KINDS[kind].families(source)
                    for spec in [family.spec] for sample in spec.sample_names}

        async def collected() -> list[Exposition] | None:
            """Both formats, once every source has collected (a probe that timed out on a busy machine takes its
            json_metrics series away until the next one: then both are scraped again)."""
            pages = [await ascrape(base, openmetrics=openmetrics) for openmetrics in (False, True)]
            complete = all(page.find(metric, **{KINDS[kind].identity: name}) for page in pages
                           for kind, name in _names() for metric in DATA[kind])
            discovered = all(page.find("shop_orders_total", source="probe-discovered") for page in pages)
            return pages if complete and discovered else None

        for page in await until(collected, what="every source's series in both formats"):
            _check(page, global_labels, declared)  # duplicates failed inside the parser already
            (discovered,) = page.find("shop_orders_total", source="probe-discovered")
            assert discovered.labels == {**global_labels, "team": "shop", "source": "probe-discovered",
                                         "target": f"{target}/json", "exported_le": "clash"}, discovered
        text = (await ascrape(base)).text
        checked = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
        assert checked.returncode == 0 and not (checked.stdout + checked.stderr).strip(), checked.stdout
    finally:
        await agent.stop()


def _names() -> list[tuple[str, str]]:
    return [(kind, f"{NAME_PREFIX.get(kind, kind)}-{variant}") for kind in KINDS
            for variant in ("labelled", "plain")]


def _check(page: Exposition, global_labels: dict[str, str], declared: dict[str, set[str]]) -> None:
    for kind_name, name in _names():
        kind = KINDS[kind_name]
        expected = {**global_labels, **({"team": "shop"} if name.endswith("labelled") else {}), kind.identity: name}
        for metric in DATA[kind_name]:
            found = page.find(metric, **{kind.identity: name})
            assert found, (metric, name)
            for series in found:
                assert {k: v for k, v in series.labels.items() if k in expected} == expected, series
                assert set(series.labels) - set(expected) == declared[metric], series
        for spec in STATS_FAMILIES:
            (series,) = page.find(spec.sample_names[0], source=name)
            assert series.labels == {**global_labels, "source": name, "kind": kind_name}, series
