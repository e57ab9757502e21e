"""The running agent: /metrics, lifecycle endpoints, reload semantics, crash supervision."""

import asyncio
import gzip
import subprocess
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from agent.config.agent import load_config
from agent.runtime import agent as runtime
from agent.runtime.agent import Agent
from agent.sources.base import Source
from agent.sources.kinds import KINDS
from tests.helpers import Exposition, ascrape, serve


async def start_target() -> tuple[web.AppRunner, str]:
    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="fine")

    app = web.Application()
    app.router.add_get("/ok", ok)
    runner, port = await serve(app)
    return runner, f"http://127.0.0.1:{port}"


@pytest.fixture
async def target():
    runner, url = await start_target()
    yield url
    await runner.cleanup()


def write_config(path: Path, target: str, names: list[str], interval: str = "100ms") -> None:
    sources = "".join(f"  - name: {n}\n    url: {target}/ok\n    interval: {interval}\n    timeout: 90ms\n"
                      for n in names)
    path.write_text("global:\n  labels: {site: test}\nhttp:\n" + sources if names else "global: {}\n")


@pytest.fixture
async def agent_factory(tmp_path):
    agents = []

    async def make(names: list[str], target: str = "http://127.0.0.1:9") -> tuple[Agent, str, Path]:
        config_file = tmp_path / "agent.yaml"
        write_config(config_file, target, names)
        agent = Agent(lambda: load_config(config_file)[0], "127.0.0.1:0")
        await agent.start()
        agents.append(agent)
        return agent, f"http://127.0.0.1:{agent.bound_port}", config_file

    yield make
    for agent in agents:
        await agent.stop()


async def scrape(base: str) -> Exposition:
    return await ascrape(f"{base}/metrics")


def value(page: Exposition, name: str, **labels) -> float | None:
    return page.value(name, **labels)


async def wait_for(predicate, timeout: float = 5.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = await predicate()
        if result:
            return result
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_metrics_health_ready_and_self_metrics(agent_factory):
    agent, base, _ = await agent_factory([])
    samples = await scrape(base)
    assert value(samples, "kpi_agent_build_info") == 1
    assert value(samples, "kpi_agent_config_last_reload_successful") == 1
    assert value(samples, "process_cpu_seconds_total") is not None
    async with aiohttp.ClientSession() as session:
        for path, status in (("/-/healthy", 200), ("/-/ready", 200), ("/probe?target=http://example.com", 404)):
            async with session.get(base + path) as response:
                assert response.status == status, path
        async with session.get(base + "/-/reload") as response:
            assert response.status == 405


async def test_content_negotiation_openmetrics_and_gzip(agent_factory):
    _, base, _ = await agent_factory([])
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        headers = {"Accept": "application/openmetrics-text;version=1.0.0", "Accept-Encoding": "gzip"}
        async with session.get(base + "/metrics", headers=headers) as response:
            assert response.headers["Content-Type"].startswith("application/openmetrics-text")
            assert response.headers["Content-Encoding"] == "gzip"
            body = gzip.decompress(await response.read()).decode()
        assert body.endswith("# EOF\n")
        async with session.get(base + "/metrics", headers={"Accept-Encoding": "identity"}) as response:
            assert response.headers["Content-Type"].startswith("text/plain")
            assert "Content-Encoding" not in response.headers


async def test_promtool_accepts_live_metrics(agent_factory, target, promtool):
    _, base, _ = await agent_factory(["shop"], target)
    await wait_for(lambda: _probed(base, "shop"))
    async with aiohttp.ClientSession() as session, session.get(base + "/metrics") as response:
        text = await response.text()
    checked = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
    assert checked.returncode == 0 and not (checked.stdout + checked.stderr).strip(), checked.stdout + checked.stderr


async def _probed(base: str, name: str) -> bool:
    return value(await scrape(base), "probe_success", target=name) == 1


async def test_reload_keeps_unchanged_sources_and_rejects_bad_config(agent_factory, target):
    agent, base, config_file = await agent_factory(["keep", "change", "drop"], target)
    await wait_for(lambda: _probed(base, "keep"))
    kept_source = agent.sources[("http", "keep")].source
    changed_source = agent.sources[("http", "change")].source

    write_config(config_file, target, ["keep", "change", "new"])
    config_file.write_text(config_file.read_text().replace("name: change\n    url: " + target + "/ok",
                                                           "name: change\n    url: " + target + "/ok?v=2"))
    async with aiohttp.ClientSession() as session, session.post(base + "/-/reload") as response:
        assert response.status == 200, await response.text()
    assert agent.sources[("http", "keep")].source is kept_source
    assert agent.sources[("http", "change")].source is not changed_source
    await wait_for(lambda: _probed(base, "new"))
    samples = await scrape(base)
    assert value(samples, "probe_success", target="drop") is None
    assert value(samples, "kpi_agent_config_reloads_total", result="success") == 1

    probes_before = value(samples, "probes_total", target="keep", result="success")
    config_file.write_text("http:\n  - name: broken\n    url: http://x/\n    timeout: 5x\n")
    async with aiohttp.ClientSession() as session, session.post(base + "/-/reload") as response:
        assert response.status == 500
        assert "http[0].timeout: '5x' is not a duration" in await response.text()
    samples = await scrape(base)
    assert value(samples, "kpi_agent_config_last_reload_successful") == 0
    assert agent.sources[("http", "keep")].source is kept_source
    await asyncio.sleep(0.3)
    samples = await scrape(base)
    assert value(samples, "probes_total", target="keep", result="success") > probes_before

    write_config(config_file, target, ["keep"])
    assert await agent.reload() is None
    assert value(await scrape(base), "kpi_agent_config_last_reload_successful") == 1


async def test_one_url_sources_self_metrics_are_rows_of_one_table(agent_factory, target):
    """A one-URL source's kpi_agent_source_* and kpi_agent_probes_skipped_total series are a row of one table
    shared by such sources (no store group and four families per source: issue 23), read on /metrics as
    before; a source whose prober counts series of its own (json_metrics errors) keeps its group."""
    agent, base, config_file = await agent_factory(["a", "b"], target)
    config_file.write_text(config_file.read_text() + f"  - name: c\n    url: {target}/ok\n    json_metrics:\n"
                           "      - {name: c_value, help: v, type: gauge, path: $.v}\n")
    assert await agent.reload() is None
    await wait_for(lambda: _probed(base, "a"))
    await wait_for(lambda: _probed(base, "b"))

    async def c_failed() -> bool:  # its body is not JSON
        return (value(await scrape(base), "kpi_agent_source_collection_errors_total", source="c", kind="http") or 0) > 0

    await wait_for(c_failed)
    page = await scrape(base)
    for name in ("a", "b"):
        assert value(page, "kpi_agent_source_collections_total", source=name, kind="http", site="test") >= 1
        assert value(page, "kpi_agent_source_collection_errors_total", source=name, kind="http") is not None
        assert value(page, "kpi_agent_source_last_collection_duration_seconds", source=name, kind="http") > 0
        assert value(page, "kpi_agent_probes_skipped_total", source=name, site="test") is not None  # born at 0
    assert page.find("kpi_agent_json_extract_errors_total", source="c")  # its own family, in its group
    assert page.find("kpi_agent_json_extract_errors_total", source="a") == []
    assert [owner for owner in agent.store.groups if owner.startswith("http/")] == ["http/c/self"]
    rows = [row for owner, row in agent.store.rows.items() if owner.endswith("/self")]
    assert len(rows) == 2 and rows[0].table is rows[1].table is not None


async def test_sources_configured_alike_share_one_module_and_one_prober(agent_factory, target):
    """Ten thousand one-URL sources with the same settings hold one module object and one compiled prober, also
    across a reload; a source with other settings has its own."""
    agent, _, config_file = await agent_factory(["a", "b"], target)
    config_file.write_text(config_file.read_text() + f"  - name: c\n    url: {target}/ok\n    method: HEAD\n")
    assert await agent.reload() is None

    def probe_of(name: str):  # noqa: ANN202 - a SourceProbe
        return agent.sources[("http", name)].source.prober.source  # type: ignore[attr-defined]

    a, b, c = (probe_of(name) for name in "abc")
    assert a.config.module is b.config.module and a.prober is b.prober
    assert c.config.module is not a.config.module and c.prober is not a.prober
    assert c.config.module.method == "HEAD" and a.config.module.method == "GET"
    config_file.write_text(config_file.read_text().replace("name: a\n", "name: a2\n"))
    assert await agent.reload() is None
    assert probe_of("a2").prober is probe_of("b").prober is b.prober  # the reloaded source joins the running one


class _CrashingSource(Source):
    kind = "http"
    runs = 0

    async def run(self) -> None:
        type(self).runs += 1
        raise RuntimeError("injected bug")


async def test_crashing_source_is_restarted_and_counted_without_stopping_others(agent_factory, monkeypatch):
    monkeypatch.setattr(runtime, "_RESTART_BACKOFF", (0.01, 0.02))
    monkeypatch.setattr(KINDS["http"], "build", lambda config, group, stats, context: _CrashingSource(
        config, group, stats, context))
    _CrashingSource.runs = 0
    _, base, _ = await agent_factory(["buggy"])
    await wait_for(lambda: _async(_CrashingSource.runs >= 3))
    samples = await scrape(base)
    assert value(samples, "kpi_agent_source_crashes_total", source="buggy") >= 2
    async with aiohttp.ClientSession() as session, session.get(base + "/-/healthy") as response:
        assert response.status == 200


async def test_a_one_url_source_has_no_task_and_a_bug_in_its_probe_restarts_it_with_backoff(agent_factory, target,
                                                                                            monkeypatch, caplog):
    """The agent's schedule starts a one-URL source's probes: the source holds no task between them. A probe
    that raises (a bug, not a target's fault) is logged with its traceback and counted; the source stops and is
    started again after the backoff, while the others go on; a reload that removes it meanwhile cancels the
    restart."""
    from agent.sources.probe.target import ProbeTarget

    monkeypatch.setattr(runtime, "_RESTART_BACKOFF", (0.05, 0.1))
    attempts = {"buggy": 0}
    real_attempt = ProbeTarget._attempt

    async def attempt(self, result):
        if self.name == "buggy":
            attempts["buggy"] += 1
            raise RuntimeError("injected bug")
        return await real_attempt(self, result)

    monkeypatch.setattr(ProbeTarget, "_attempt", attempt)
    agent, base, config_file = await agent_factory(["buggy", "fine"], target)
    assert all(running.task is None and running.running for running in agent.sources.values())
    assert not {task.get_name() for task in asyncio.all_tasks()} & {"http/buggy", "http/fine"}
    await wait_for(lambda: _async(attempts["buggy"] >= 3))
    page = await scrape(base)
    assert value(page, "kpi_agent_source_crashes_total", source="buggy", kind="http") >= 2
    assert value(page, "kpi_agent_source_crashes_total", source="fine", kind="http") is None
    fine = value(page, "probes_total", target="fine", result="success")
    assert fine is not None and fine >= 1
    crashes = [r for r in caplog.records if r.getMessage() == "source crashed; restarting"]
    assert crashes and crashes[0].exc_info is not None and "injected bug" in str(crashes[0].exc_info[1])
    await wait_for(lambda: _async(not agent.sources[("http", "buggy")].running))  # waiting for its restart
    write_config(config_file, target, ["fine"])
    assert await agent.reload() is None
    seen = attempts["buggy"]
    await asyncio.sleep(0.3)  # longer than the backoff: a restart would have probed it again
    assert attempts["buggy"] == seen
    page = await scrape(base)
    assert value(page, "kpi_agent_source_crashes_total", source="buggy", kind="http") is None
    assert value(page, "probes_total", target="fine", result="success") > fine  # never stopped


async def _async(result):
    return result


@pytest.fixture(scope="module")
def test_ca(tmp_path_factory) -> str:
    """A CA certificate (PEM text) that loads."""
    directory = tmp_path_factory.mktemp("ca")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=test",
                    "-keyout", str(directory / "key.pem"), "-out", str(directory / "cert.pem")], check=True,
                   capture_output=True)
    return (directory / "cert.pem").read_text()


async def test_a_reload_that_cannot_build_its_sources_keeps_the_old_ones_and_says_so(agent_factory, target,
                                                                                       tmp_path, monkeypatch, test_ca):
    agent, base, config_file = await agent_factory(["keep", "change"], target)
    await wait_for(lambda: _probed(base, "change"))
    old = dict(agent.sources)
    # The CA file checks fine, then is broken between the check and the build (a deploy in progress).
    ca = tmp_path / "ca.pem"
    ca.write_text(test_ca)
    config_file.write_text(config_file.read_text().replace(
        "name: change\n", f"name: change\n    tls_config: {{ca_file: {ca}}}\n") + "  - name: new\n"
        f"    url: {target}/ok\n    interval: 100ms\n    timeout: 90ms\n")
    real_build = KINDS["http"].build

    def build(config, group, stats, context):
        if config.name == "new":
            raise OSError("ca.pem: no certificate found")
        return real_build(config, group, stats, context)

    monkeypatch.setattr(KINDS["http"], "build", build)
    error = await agent.reload()
    assert error is not None and "'new' cannot start" in error
    assert agent.sources == old and all(r.running for r in old.values())
    page = await scrape(base)
    assert value(page, "kpi_agent_config_last_reload_successful") == 0
    assert value(page, "kpi_agent_config_reloads_total", result="failure") == 1
    assert value(page, "probe_success", target="new") is None
    before = value(page, "probes_total", target="change", result="success")
    await asyncio.sleep(0.3)
    assert value(await scrape(base), "probes_total", target="change", result="success") > before  # still probing


async def test_a_reload_with_a_broken_ca_file_or_clashing_metrics_is_refused_with_lines(agent_factory, target,
                                                                                          tmp_path):
    agent, base, config_file = await agent_factory(["keep"], target)
    await wait_for(lambda: _probed(base, "keep"))
    not_pem = tmp_path / "ca.pem"
    not_pem.write_text("not a certificate\n")
    config_file.write_text(config_file.read_text() + f"    tls_config: {{ca_file: {not_pem}}}\n"
                           "logs:\n  - name: app\n    paths: [/tmp/x.log]\n    format: json\n    metrics:\n"
                           "      - {name: req_total, type: counter}\n      - {name: req, type: gauge, value: n}\n")
    error = await agent.reload()
    assert error is not None
    assert "http[0].tls_config.ca_file" in error and "logs[0].metrics[1].name: req is a gauge" in error
    page = await scrape(base)
    assert value(page, "kpi_agent_config_last_reload_successful") == 0
    assert agent.sources[("http", "keep")].running

