"""Service discovery for HTTP sources, read from /metrics of a real agent: static_configs, file_sd_configs
(watched files), http_sd_configs (a real SD endpoint on loopback), relabel_configs (checked against a real
Prometheus), and ``kpi-agent check`` on target files."""

import asyncio
import contextlib
import gc
import json
import subprocess
import sys
import threading
import weakref
from pathlib import Path

import pytest
from aiohttp import web

from agent.config.agent import load_config, parse_config
from agent.config.problems import ConfigError
from agent.config.yaml import load_text
from agent.discovery.targetgroup import read_target_file
from agent.discovery.targets import resolve
from agent.runtime.agent import Agent
from agent.runtime.shard import Shard
from agent.sources.http import KIND
from tests.helpers import Exposition, ascrape, fetch, free_port, serve, until, wait_until
from tests.tools import require_tool


@pytest.fixture
async def target():
    """A target with a handful of paths; /hits counts requests per path."""
    hits: dict[str, int] = {}

    async def ok(request: web.Request) -> web.Response:
        hits[request.path_qs] = hits.get(request.path_qs, 0) + 1
        return web.Response(text="fine")

    app = web.Application()
    app.router.add_get("/{tail:.*}", ok)
    runner, port = await serve(app)
    yield f"127.0.0.1:{port}", hits
    await runner.cleanup()


@pytest.fixture
async def agent_at(tmp_path):
    agents = []

    async def start(config_text: str) -> tuple[Agent, str]:
        config = tmp_path / "agent.yaml"
        config.write_text(config_text)
        agent = Agent(lambda: load_config(config)[0], "127.0.0.1:0")
        await agent.start()
        agents.append(agent)
        return agent, f"http://127.0.0.1:{agent.bound_port}/metrics"

    yield start
    for agent in agents:
        await agent.stop()


def probed(page: Exposition, source: str) -> dict[str, dict[str, str]]:
    """target -> labels of the probe_success series of one discovering source."""
    return {s.labels["target"]: s.labels for s in page.find("probe_success", source=source)}


SOURCE = """global: {interval: 200ms, timeout: 150ms}
http:
  - name: fleet
    file_sd_configs: [{files: ['targets/*.json', 'targets/*.yml']}]
"""


async def test_file_sd_targets_appear_change_and_vanish_without_a_reload(tmp_path, target, agent_at):
    address, _ = target
    files = tmp_path / "targets"
    files.mkdir()
    (files / "a.json").write_text(json.dumps([{"targets": [f"http://{address}/a", f"{address}"],
                                               "labels": {"team": "a"}}]))
    _, metrics = await agent_at(SOURCE)

    async def seen(expected: set[str]):
        page = await ascrape(metrics)
        found = probed(page, "fleet")
        return (page, found) if set(found) == expected and \
            all(page.value("probe_success", source="fleet", target=t) == 1 for t in found) else None

    page, found = await until(lambda: seen({f"http://{address}/a", address}), what="the first file's targets")
    assert found[address] == {"source": "fleet", "target": address, "team": "a"}  # host:port -> http://host:port/
    assert page.value("kpi_agent_sd_targets", source="fleet", state="probed") == 2

    (files / "b.yml").write_text(f"- targets: ['http://{address}/b']\n  labels: {{team: b}}\n")
    await until(lambda: seen({f"http://{address}/a", address, f"http://{address}/b"}), what="a new file")

    (files / "a.json").write_text(json.dumps([{"targets": [f"http://{address}/a"], "labels": {"team": "c"}}]))
    page, found = await until(lambda: seen({f"http://{address}/a", f"http://{address}/b"}), what="a changed file")
    await until(lambda: _team_is(metrics, f"http://{address}/a", "c"), what="the changed labels")
    (files / "b.yml").unlink()
    page, found = await until(lambda: seen({f"http://{address}/a"}), what="a removed file")
    assert page.find("probes_total", target=f"http://{address}/b") == []  # vanished from /metrics entirely
    assert len(page.find("probes_total", target=f"http://{address}/a")) == len(KIND.result_labels)  # no stale copy
    assert page.value("kpi_agent_config_reloads_total", result="success") == 0  # no reload was needed


async def _team_is(metrics: str, target: str, team: str) -> bool:
    return [s.labels.get("team") for s in (await ascrape(metrics)).find("probe_success", target=target)] == [team]


@pytest.mark.slow
async def test_a_bad_target_file_keeps_its_last_good_targets_and_is_counted(tmp_path, target, agent_at):
    address, hits = target
    files = tmp_path / "targets"
    files.mkdir()
    good = f"- targets: ['http://{address}/kept']\n".encode()
    write_atomically(files / "a.yml", good)
    _, metrics = await agent_at(SOURCE)
    await until(lambda: _probed_ok(metrics, f"http://{address}/kept"), what="the target")
    failures = 0.0
    for broken in (b"- targets: [unclosed\n", b"- {targets: [a], extra: 1}\n", b"\xff\xfe", b"{}"):
        write_atomically(files / "a.yml", broken)
        failures = await until(lambda seen=failures: _failures_above(metrics, seen), what=f"a failure for {broken}")
        before = hits.get("/kept", 0)
        await until(lambda seen=before: _more(hits, "/kept", seen), what="probes of the last good target going on")
        assert set(probed(await ascrape(metrics), "fleet")) == {f"http://{address}/kept"}
        write_atomically(files / "a.yml", good)  # mended: the same targets as before, nothing changes
        await asyncio.sleep(1.5)  # two looks at the file
        page = await ascrape(metrics)
        assert page.value("kpi_agent_sd_refresh_failures_total", source="fleet", mechanism="file") == failures
        assert set(probed(page, "fleet")) == {f"http://{address}/kept"}


def write_atomically(path: Path, content: bytes) -> None:
    """How target files should be written (Prometheus says the same): a reader never sees half a file."""
    temporary = path.with_suffix(".tmp")
    temporary.write_bytes(content)
    temporary.replace(path)


async def _probed_ok(metrics: str, target: str) -> bool:
    return (await ascrape(metrics)).value("probe_success", target=target) == 1


async def _failures_above(metrics: str, before: float) -> float | None:
    count = (await ascrape(metrics)).value("kpi_agent_sd_refresh_failures_total", source="fleet", mechanism="file")
    return count if count is not None and count > before else None


async def _more(hits: dict[str, int], path: str, before: int) -> bool:
    return hits.get(path, 0) > before + 1


@pytest.fixture
async def sd_endpoint():
    """An HTTP SD endpoint whose answer the test sets: (status, content type, body)."""
    answer = {"now": (200, "application/json", "[]")}

    async def targets(request: web.Request) -> web.Response:
        status, content_type, body = answer["now"]
        return web.Response(status=status, text=body, content_type=content_type)

    app = web.Application()
    app.router.add_get("/targets", targets)
    runner, port = await serve(app)
    yield f"http://127.0.0.1:{port}/targets", answer
    await runner.cleanup()


async def test_http_sd_refreshes_and_keeps_the_last_good_targets_on_failure(target, agent_at, sd_endpoint):
    address, _ = target
    url, answer = sd_endpoint
    answer["now"] = (200, "application/json", json.dumps([{"targets": [f"{address}"], "labels": {"app": "one"}}]))
    _, metrics = await agent_at(
        "global: {interval: 200ms, timeout: 150ms}\nhttp:\n  - name: fleet\n"
        f"    http_sd_configs: [{{url: '{url}', refresh_interval: 300ms}}]\n"
        "    relabel_configs:\n"
        "      - {source_labels: [__meta_url], regex: '.*/(\\w+)$', target_label: sd_path}\n"
        "      - {target_label: __metrics_path__, replacement: /health}\n")

    async def labels_of(expected: set[str]):
        found = probed(await ascrape(metrics), "fleet")
        return found if set(found) == expected else None

    found = await until(lambda: labels_of({address}), what="the endpoint's targets")
    assert found[address] == {"source": "fleet", "target": address, "app": "one", "sd_path": "targets"}
    answer["now"] = (200, "application/json", json.dumps([{"targets": [f"http://{address}/x", f"http://{address}/y"]}]))
    await until(lambda: labels_of({f"http://{address}/x", f"http://{address}/y"}), what="refreshed targets")
    before = (await ascrape(metrics)).value("kpi_agent_sd_refresh_failures_total", source="fleet", mechanism="http")
    for status, content_type, body in ((500, "application/json", "[]"), (200, "text/plain", "[]"),
                                       (200, "application/json", '[{"targets": "not a list"}]'),
                                       (200, "application/json", "{")):
        answer["now"] = (status, content_type, body)

        async def failed_once_more(seen: float = before):
            page = await ascrape(metrics)
            count = page.value("kpi_agent_sd_refresh_failures_total", source="fleet", mechanism="http")
            return page if count > seen else None

        page = await until(failed_once_more, what=f"a counted failure for {status} {content_type} {body}")
        before = page.value("kpi_agent_sd_refresh_failures_total", source="fleet", mechanism="http")
        assert set(probed(page, "fleet")) == {f"http://{address}/x", f"http://{address}/y"}  # the last good list
    assert page.value("kpi_agent_sd_refreshes_total", source="fleet", mechanism="http") > before


async def test_an_http_sd_response_arriving_in_pieces_is_read_whole(agent_at):
    """A large target list comes over several TCP segments: every one of its targets is discovered (a read that
    stopped at the first piece failed to parse, and each refresh was counted as a failure)."""
    body = json.dumps([{"targets": [f"10.0.{i // 250}.{i % 250}:80" for i in range(3000)]}]).encode()

    async def streamed(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        for start in range(0, len(body), 4096):
            await response.write(body[start:start + 4096])
            await asyncio.sleep(0.002)  # each piece on its own
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/targets", streamed)
    runner, port = await serve(app)
    try:
        _, metrics = await agent_at(
            "global: {interval: 1s, timeout: 500ms}\nhttp:\n  - name: fleet\n"
            f"    http_sd_configs: [{{url: 'http://127.0.0.1:{port}/targets', refresh_interval: 1s}}]\n"
            "    relabel_configs: [{source_labels: [__address__], regex: '.*', action: drop}]\n")

        async def discovered():  # a refresh is counted when the answer is read, its targets once resolved
            page = await ascrape(metrics)
            done = page.value("kpi_agent_sd_refreshes_total", source="fleet", mechanism="http") and (
                page.value("kpi_agent_sd_targets", source="fleet", state="dropped")
                or page.value("kpi_agent_sd_refresh_failures_total", source="fleet", mechanism="http"))
            return page if done else None

        page = await until(discovered, what="a refresh and its targets")
        assert page.value("kpi_agent_sd_refresh_failures_total", source="fleet", mechanism="http") == 0
        assert page.value("kpi_agent_sd_targets", source="fleet", state="dropped") == 3000
    finally:
        await runner.cleanup()


async def test_a_counted_refresh_has_its_targets_in_place(target, agent_at, sd_endpoint, monkeypatch):
    """Targets are resolved (relabelling, sharding) in a worker thread after a look. A scrape in between used to
    see kpi_agent_sd_refreshes_total go up while kpi_agent_sd_targets still counted the targets before that look,
    so whoever waits for a refresh (a person, a script, a test) read stale target counts."""
    import agent.sources.probe.source as probe_source

    address, _ = target
    url, answer = sd_endpoint
    answer["now"] = (200, "application/json", json.dumps([{"targets": [address, f"http://{address}/b"]}]))
    gate = threading.Event()

    def held_resolve(*args):
        gate.wait(timeout=30)
        return resolve(*args)

    monkeypatch.setattr(probe_source, "resolve", held_resolve)
    _, metrics = await agent_at("global: {interval: 200ms, timeout: 150ms}\nhttp:\n  - name: fleet\n"
                                f"    http_sd_configs: [{{url: '{url}', refresh_interval: 100ms}}]\n")

    def refreshes(page: Exposition) -> float:
        return page.value("kpi_agent_sd_refreshes_total", source="fleet", mechanism="http")

    try:  # the endpoint answers several times while the first resolution is held: nothing is counted yet
        await asyncio.sleep(0.5)
        page = await ascrape(metrics)
        assert refreshes(page) == 0
        assert page.value("kpi_agent_sd_targets", source="fleet", state="probed") == 0
    finally:
        gate.set()

    async def counted():
        page = await ascrape(metrics)
        return page if refreshes(page) else None

    page = await until(counted, what="a counted refresh")
    assert page.value("kpi_agent_sd_targets", source="fleet", state="probed") == 2


async def test_discovered_series_are_unique_and_clashing_labels_are_exported(target, agent_at):
    """Two sources may discover the same URL (two modules): their series differ by source. A discovered label
    the agent sets itself becomes exported_<name>; a target that is not a URL, or that takes another one's
    target label with other labels, is refused and counted."""
    address, _ = target
    url = f"http://{address}/same"
    agent, metrics = await agent_at(
        "global: {interval: 200ms, timeout: 150ms, labels: {site: eu}}\nhttp:\n"
        f"  - {{name: plain, url: '{url}'}}\n"
        f"  - name: module-a\n    static_configs: [{{targets: ['{url}'], labels: {{source: x, le: y, result: z}}}}]\n"
        f"  - name: module-b\n    static_configs:\n"
        f"      - {{targets: ['{url}', 'ftp://{address}/', ':::', '{url}'], labels: {{team: b}}}}\n"
        f"      - {{targets: ['{url}'], labels: {{team: other}}}}\n")

    async def all_probed():
        page = await ascrape(metrics)  # strictly parsed: a duplicate series fails here
        series = page.find("probe_success")
        return page if len(series) == 3 and all(s.value == 1 for s in series) else None

    page = await until(all_probed, what="three probes of one URL")
    assert sorted((s.labels.get("source", ""), s.labels["target"]) for s in page.find("probe_success")) == [
        ("", "plain"), ("module-a", url), ("module-b", url)]
    (labels,) = [s.labels for s in page.find("probe_success", source="module-a")]
    assert labels == {"source": "module-a", "target": url, "exported_source": "x", "exported_le": "y",
                      "exported_result": "z", "site": "eu"}
    assert page.by("kpi_agent_sd_targets", "state", source="module-b") == {
        "probed": 1, "other_shard": 0, "dropped": 0, "refused": 3}
    assert page.value("probe_success", source="module-b", team="b") == 1  # the first of the duplicates


@pytest.mark.slow
async def test_relabel_configs_shape_targets_exactly_as_prometheus_does(tmp_path):
    """The same target file and rules go to a real Prometheus and to the agent; the labels each keeps (and the
    targets each drops) are the same."""
    prometheus = require_tool("prometheus")
    groups = [
        {"targets": ["10.0.0.1:80", "10.0.0.2:8080"], "labels": {"team": "web", "tmp_a": "1", "zone": "z1"}},
        {"targets": ["10.0.0.3:80"], "labels": {"team": "web", "env": "dev"}},
        {"targets": ["10.0.0.4:9100", "db.example:5432"], "labels": {"team": "db"}},
        {"targets": ["api.example:443", "api.example:8443"], "labels": {"team": "api", "zone": "z2",
                                                                       "__keep_me": "yes", "keepme": "k"}},
    ]
    (tmp_path / "targets.json").write_text(json.dumps(groups))
    rules = """
      - {source_labels: [env], regex: dev, action: drop}
      - {source_labels: [__address__], regex: '(.*):(\\d+)', target_label: port, replacement: '$2'}
      - {source_labels: [__address__, team], separator: '@', regex: '([^:]+):.*@(.*)', target_label: owner,
         replacement: '${2}-$1x'}
      - {source_labels: [__address__], target_label: bucket, modulus: 7, action: hashmod}
      - {regex: '__meta_(file)path', replacement: 'from_$1', action: labelmap}
      - {regex: 'tmp_.*', action: labeldrop}
      - {source_labels: [team], regex: 'web|api', action: keep}
      - {source_labels: [zone], regex: 'z2', target_label: zone, replacement: ''}
      - {target_label: fixed, replacement: literal}
      - {source_labels: [missing], regex: '', target_label: empty_match, replacement: matched-empty}
      - {source_labels: [__keep_me], regex: '(y)(es)', target_label: '${2}_$1', replacement: '$1$2$$'}
      - {regex: '__.*|team|port|owner|bucket|from_.*|fixed|empty_match|zone|es_y|job|instance', action: labelkeep}
    """
    prom_port = free_port()
    (tmp_path / "prometheus.yml").write_text(
        "global: {scrape_interval: 1h}\nscrape_configs:\n  - job_name: sd\n"
        "    file_sd_configs: [{files: [targets.json]}]\n    relabel_configs:" + rules)
    (tmp_path / "agent.yaml").write_text(
        "http:\n  - name: sd\n    file_sd_configs: [{files: [targets.json]}]\n    relabel_configs:" + rules)
    process = subprocess.Popen([prometheus, f"--config.file={tmp_path / 'prometheus.yml'}",
                                f"--storage.tsdb.path={tmp_path / 'data'}",
                                f"--web.listen-address=127.0.0.1:{prom_port}"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def listed():
            status, body = fetch(f"http://127.0.0.1:{prom_port}/api/v1/targets")
            data = json.loads(body)["data"] if status == 200 else {}
            return data if len(data.get("activeTargets", [])) + len(data.get("droppedTargets", [])) == 7 else None

        data = wait_until(listed, timeout=60, interval=0.5, what="Prometheus's targets")
    finally:
        process.terminate()
        process.wait(timeout=10)
    theirs = {(t["labels"]["instance"], frozenset((k, v) for k, v in t["labels"].items() if k not in ("job",
                                                                                                       "instance")))
              for t in data["activeTargets"]}
    config, _ = load_config(tmp_path / "agent.yaml")
    (source,) = config.of_kind("http")
    groups_read = read_target_file(str(tmp_path / "targets.json"))
    result = resolve(KIND.target_rules(source), groups_read, Shard())
    ours = {(t.name, frozenset(t.labels)) for t in result.targets.values()}
    assert ours == theirs
    assert result.counts["dropped"] == len(data["droppedTargets"]) == 3
    assert len(ours) == 4 and any(("owner", "web-10.0.0.1x") not in labels for _, labels in ours)


def test_discovery_config_errors_name_file_line_and_field(tmp_path):
    text = (
        "http:\n"
        "  - name: both\n"
        "    url: http://x/\n"
        "    static_configs: [{targets: [a]}]\n"
        "  - name: stray\n"
        "    url: http://x/\n"
        "    relabel_configs: [{action: keep}]\n"
        "  - name: sd\n"
        "    file_sd_configs: [{files: ['targets/**/x.json', 'a.txt']}, {refresh_interval: 5m}]\n"
        "    http_sd_configs: [{url: 'ftp://sd/'}]\n"
        "    static_configs: [{targets: [a, 5], labels: {'bad-name': x}}, {targets: [b], extra: 1}]\n"
        "    labels: {source: x}\n"
        "    relabel_configs:\n"
        "      - {action: hashmod, source_labels: [a]}\n"
        "      - {action: replace}\n"
        "      - {action: labeldrop, source_labels: [a]}\n"
        "      - {action: frobnicate}\n"
        "      - {regex: '(', target_label: x}\n"
        "      - {target_label: 'no good', replacement: x}\n")
    with pytest.raises(ConfigError) as info:
        parse_config(load_text(text, "agent.yaml"), "agent.yaml")
    problems = [str(p) for p in info.value.problems]
    expected = [
        "agent.yaml:3: http[0].url: a source probes its url or the targets it discovers, not both",
        "agent.yaml:7: http[1].relabel_configs: applies to discovered targets",
        "agent.yaml:9: http[2].file_sd_configs[0].files: item 0: 'targets/**/x.json' is not a target file pattern",
        "agent.yaml:9: http[2].file_sd_configs[1].files: is required",
        "agent.yaml:10: http[2].http_sd_configs[0].url: 'ftp://sd/' is not an http:// or https:// URL",
        "agent.yaml:11: http[2].static_configs[0].targets: item 1: expected a non-empty string",
        "agent.yaml:11: http[2].static_configs[0].labels: 'bad-name' is not a valid label name",
        "agent.yaml:11: http[2].static_configs[1].extra: unknown field",
        "agent.yaml:12: http[2].labels: 'source' is a label of the probe metrics",
        "agent.yaml:14: http[2].relabel_configs[0]: action hashmod needs a target_label",
        "agent.yaml:14: http[2].relabel_configs[0]: action hashmod needs a modulus",
        "agent.yaml:15: http[2].relabel_configs[1]: action replace needs a target_label",
        "agent.yaml:16: http[2].relabel_configs[2].source_labels: action labeldrop takes only a regex",
        "agent.yaml:17: http[2].relabel_configs[3].action: 'frobnicate' is not one of: replace, keep, drop",
        "agent.yaml:18: http[2].relabel_configs[4].regex: regular expression '(' does not compile",
        "agent.yaml:19: http[2].relabel_configs[5].target_label: 'no good' is not a label name",
    ]
    for line in expected:
        assert any(p.startswith(line) for p in problems), (line, problems)
    assert len(problems) == len(expected), problems


def test_check_reports_target_file_problems_with_lines_and_counts_targets(tmp_path):
    targets = tmp_path / "targets"
    targets.mkdir()
    (targets / "good.yml").write_text("- targets: [http://a/, http://b/]\n  labels: {team: x}\n")
    (tmp_path / "agent.yaml").write_text("http:\n  - name: fleet\n    file_sd_configs: [{files: [targets/*.yml]}]\n"
                                         "    static_configs: [{targets: ['http://a/', 'not a url']}]\n")
    check = [sys.executable, "-m", "agent", "check", "--config.file", str(tmp_path / "agent.yaml")]
    result = subprocess.run(check, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("OK (1 http sources; 2 discovered targets)")
    assert f"{tmp_path / 'agent.yaml'}:2: warning: http[0]: refused target 'not a url'" in result.stderr
    (targets / "bad.yml").write_text("- targets: [http://c/]\n- targets: http://d/\n  labelz: {}\n")
    result = subprocess.run(check, capture_output=True, text=True)
    assert result.returncode == 1
    assert f"{targets / 'bad.yml'}:2: [1].targets: expected a list" in result.stderr
    assert f"{targets / 'bad.yml'}:3: [1].labelz: unknown field" in result.stderr
    assert "Traceback" not in result.stderr


def test_target_files_are_read_as_prometheus_writes_them(tmp_path):
    path = tmp_path / "t.json"
    path.write_text('[{"targets": ["a:1", "b:2"], "labels": {"__param_module": "x", "env": "prod"}}, {"targets": []}]')
    groups = read_target_file(str(path))
    assert [g.targets for g in groups] == [("a:1", "b:2"), ()]
    assert groups[0].labels == {"__param_module": "x", "env": "prod", "__meta_filepath": str(path)}
    path.write_text("")
    assert read_target_file(str(path)) == []
    missing = Path(tmp_path / "gone.json")
    with pytest.raises(ConfigError, match="cannot read"):
        read_target_file(str(missing))


async def test_lone_surrogates_in_a_target_file_or_sd_answer_read_as_replacement_characters(
        tmp_path, target, agent_at, sd_endpoint):
    """Issue 18.8: one "\\ud800" escape (valid JSON; Go's decoder, so Prometheus, reads it as U+FFFD) rejected the
    whole target file or HTTP SD answer. Now the label reads U+FFFD and a valid escaped pair is its character."""
    address, _ = target
    files = tmp_path / "targets"
    files.mkdir()
    labels = '{"owner": "x\\ud800y", "emoji": "\\ud83d\\ude00", "path": "C:\\\\ud800"}'  # JSON escapes, as written
    (files / "a.json").write_text(f'[{{"targets": ["{address}"], "labels": {labels}}}]')
    url, answer = sd_endpoint
    answer["now"] = (200, "application/json",
                     f'[{{"targets": ["http://{address}/sd"], "labels": {{"owner": "\\udfff"}}}}]')
    _, metrics = await agent_at(SOURCE + f"    http_sd_configs: [{{url: '{url}', refresh_interval: 1s}}]\n")

    async def both():
        found = probed(await ascrape(metrics), "fleet")
        return found if len(found) == 2 else None

    found = await until(both, what="the file's and the endpoint's targets")
    assert found[address]["owner"] == "x\ufffdy" and found[address]["emoji"] == "\U0001F600"
    assert found[address]["path"] == "C:\\ud800"  # an escaped backslash, then text: not an escape
    assert found[f"http://{address}/sd"]["owner"] == "\ufffd"
    page = await ascrape(metrics)
    assert page.value("kpi_agent_sd_refresh_failures_total", source="fleet", mechanism="file") == 0
    assert page.value("kpi_agent_sd_refresh_failures_total", source="fleet", mechanism="http") == 0


async def test_discovery_failures_show_on_the_status_page_and_the_sources_api(tmp_path, target, agent_at,
                                                                              sd_endpoint):
    """Issue 18.8: a target file that stops parsing or an SD endpoint that fails was only a log line and a
    counter; /api/v1/sources and the status page now say which one fails, why, and that its last good targets
    stay."""
    address, _ = target
    files = tmp_path / "targets"
    files.mkdir()
    write_atomically(files / "a.yml", f"- targets: ['{address}']\n".encode())
    url, answer = sd_endpoint
    answer["now"] = (503, "application/json", "[]")
    agent, metrics = await agent_at(SOURCE + f"    http_sd_configs: [{{url: '{url}', refresh_interval: 300ms}}]\n")
    base = metrics.removesuffix("/metrics")
    await until(lambda: _probed_ok(metrics, address), what="the file's target")
    write_atomically(files / "a.yml", b"- targets: [unclosed\n")

    async def failing():
        status, body = await asyncio.to_thread(fetch, base + "/api/v1/sources")
        (row,) = json.loads(body)
        return row["discovery_failures"] if len(row["discovery_failures"]) == 2 else None

    failures = {f["mechanism"]: f for f in await until(failing, what="both failures on /api/v1/sources")}
    assert failures["http"]["origin"] == url and "status 503, not 200" in failures["http"]["error"]
    assert failures["file"]["origin"] == str(files / "a.yml")
    assert failures["file"]["error"].startswith(f"{files / 'a.yml'}:2: invalid YAML")
    assert failures["file"]["since"] is not None
    status, text = await asyncio.to_thread(fetch, base + "/")
    assert status == 200
    assert f'data-discovery="{files / "a.yml"}"' in text and "keeping its last good targets" in text
    assert "status 503, not 200" in text
    write_atomically(files / "a.yml", f"- targets: ['{address}']\n".encode())
    answer["now"] = (200, "application/json", "[]")

    async def mended():
        status, body = await asyncio.to_thread(fetch, base + "/api/v1/sources")
        return json.loads(body)[0]["discovery_failures"] == []

    await until(mended, what="the failures to clear")


def _rss_mib() -> float:
    line = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmRSS"))
    return int(line.split()[1]) / 1024


@pytest.mark.slow
async def test_reloads_between_two_target_lists_do_not_grow_memory(tmp_path, agent_at):
    """Issue 18.7: reloads alternating between two 5,000-target lists grew RSS from 107 to 427 MiB: each replaced
    discovering source, built frozen and holding reference cycles, kept its targets for good (25 MiB a reload
    here before the fix)."""
    for name in "ab":
        (tmp_path / f"{name}.json").write_text(json.dumps([{"targets": [f"http://127.0.0.1:9/{name}{i}"
                                                                        for i in range(3000)]}]))
    texts = [f"global: {{interval: 2s, timeout: 1s}}\nhttp:\n  - name: fleet\n"
             f"    file_sd_configs: [{{files: ['{tmp_path / name}.json']}}]\n" for name in "ab"]
    agent, metrics = await agent_at(texts[0])
    config = tmp_path / "agent.yaml"

    async def settled(name: str) -> bool:  # read from the agent: a 120,000-series page parses slowly under load
        (running,) = agent.sources.values()
        table = running.source.table  # the source's targets are its table's rows
        targets = [table.key_of(row) for row in table.rows if row is not None]
        return len(targets) == 3000 and all(f"/{name}" in target for target in targets[:5])

    sizes = []
    for round_ in range(6):
        name = "ab"[(round_ + 1) % 2]
        config.write_text(texts[(round_ + 1) % 2])
        assert await agent.reload() is None
        await until(lambda name=name: settled(name), timeout=60, what=f"the targets of {name}.json")
        gc.collect()
        sizes.append(_rss_mib())
    assert sizes[-1] - sizes[1] < 10, sizes  # before the fix: about 15 MiB more with every reload


def _every_prober_kind(address: str, timeout: str) -> str:
    """One source per prober kind with one target, and one per kind discovering its targets (static_configs)."""
    port = address.rsplit(":", 1)[1]
    kinds = {"http": ("url", f"http://{address}/a", f"http://{address}/b", ""),
             "tcp": ("target", address, f"localhost:{port}", ""),
             "dns": ("target", address, f"localhost:{port}", "    query_name: example.com\n"),
             "icmp": ("target", "127.0.0.1", "localhost", ""), "grpc": ("target", address, f"localhost:{port}", "")}
    text = f"global: {{interval: 200ms, timeout: {timeout}}}\n"
    for kind, (key, where, other, module) in kinds.items():
        text += (f"{kind}:\n  - name: one-{kind}\n    {key}: {where}\n{module}"
                 f"  - name: many-{kind}\n    static_configs: [{{targets: ['{where}', '{other}']}}]\n{module}")
    return text


async def test_a_reload_frees_the_sources_it_replaces_by_reference_counting(tmp_path, target, agent_at):
    """A replaced source, its table and its probers are freed as it stops, with the cyclic collector off: the
    agent freezes long-lived objects (agent.runtime.heap), so an object of a reference cycle, once frozen, would
    stay for good (a discovering source and its discovery held each other: 2.7 MiB per reload of 3,000 targets).
    A prober is the module's, shared by the sources of that module (agent.sources.probe.resources): the new
    sources, whose modules did not change, run on it."""
    address, _ = target
    collect = gc.collect
    gc.disable()
    gc.collect = lambda generation=2: 0  # the agent's own calls (before each freeze) collect nothing either
    try:
        agent, _ = await agent_at(_every_prober_kind(address, "150ms"))

        async def probed() -> bool:
            probers = [prober for running in agent.sources.values()
                       for prober in ([running.source.prober] if hasattr(running.source, "prober")
                                      else [p for _, p in running.source._targets.values()])]
            return len(probers) == 5 + 5 * 2 and all(prober.last_result is not None for prober in probers)

        await until(probed, what="a probe of every target")
        replaced = list(agent.sources.values())
        kept, probers = {}, {}
        for running in replaced:
            source = running.source
            probe = source.probe_source if hasattr(source, "probe_source") else source.prober.source
            kept[f"{source.name} source"] = weakref.ref(source)
            probers[source.name] = weakref.ref(probe.prober)
            kept[f"{source.name} probe settings"] = weakref.ref(probe)
            if hasattr(source, "table"):
                kept[f"{source.name} table"] = weakref.ref(source.table)
        del running, source, probe
        (tmp_path / "agent.yaml").write_text(_every_prober_kind(address, "140ms"))
        assert await agent.reload() is None
        assert {running.source.name for running in agent.sources.values()} == \
            {running.source.name for running in replaced}
        tasks = [running.task for running in replaced if running.task is not None]  # one-target sources have none
        if tasks:
            await asyncio.wait(tasks)
        del replaced, tasks
        for running in agent.sources.values():  # a module's prober serves the new sources
            source = running.source
            probe = source.probe_source if hasattr(source, "probe_source") else source.prober.source
            assert probers.pop(source.name)() is probe.prober
        del running, source, probe

        async def freed() -> bool:
            return all(ref() is None for ref in kept.values())

        with contextlib.suppress(AssertionError):  # probes in flight end first
            await until(freed, timeout=10, what="the replaced sources to be freed")
        assert [name for name, ref in kept.items() if ref() is not None] == []
    finally:
        gc.collect = collect
        gc.enable()
