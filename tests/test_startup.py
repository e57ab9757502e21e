"""What `kpi-agent run` of a log-only agent loads before its first scrape: every CLI command and every test that
starts an agent pays for each module (README "Performance" of the log source: start-up)."""

import gc
import signal
import weakref

from agent.runtime import heap
from tests.helpers import Exposition, fetch, start_log_agent_import_timed, wait_until

# Every agent module a log agent with a regex pattern has imported by its first scrape. A module that joins this
# list costs every start: import it where it is used (a kind, a command, a branch), or add it here with a reason.
# (-X importtime does not list what importlib.import_module loads: agent.cli.run, agent.sources.logs.)
LOG_AGENT_MODULES = {
    "agent", "agent.cli", "agent.cli.flags",
    "agent.config", "agent.config.agent", "agent.config.fields", "agent.config.files", "agent.config.model",
    "agent.config.printable", "agent.config.problems", "agent.config.regex", "agent.config.regex_python",
    "agent.config.regex_search", "agent.config.regex_syntax", "agent.config.validation", "agent.config.values",
    "agent.config.yaml",
    "agent.formatting", "agent.text",
    "agent.runtime", "agent.runtime.agent", "agent.runtime.hangup", "agent.runtime.heap", "agent.runtime.lazyssl",
    "agent.runtime.logconfig", "agent.runtime.shard", "agent.runtime.systemd",
    "agent.series", "agent.series.exposition", "agent.series.family", "agent.series.group", "agent.series.index",
    "agent.series.pagesize", "agent.series.selfmetrics", "agent.series.store", "agent.series.table",
    "agent.server", "agent.server.listener", "agent.server.protocol", "agent.server.routes",
    "agent.sources", "agent.sources.base", "agent.sources.kinds",
    "agent.sources.logs.config", "agent.sources.logs.fields", "agent.sources.logs.framing",
    "agent.sources.logs.metrics", "agent.sources.logs.pipeline", "agent.sources.logs.positions",
    "agent.sources.logs.source", "agent.sources.logs.tailer",
}


def test_a_log_only_agent_imports_only_its_modules_and_no_import_hook(tmp_path):
    agent = start_log_agent_import_timed(tmp_path, 3)
    try:
        page = wait_until(lambda: (p := _page(agent.port)) and p.value("lines_total", status="200") == 3 and p,
                          timeout=30, what="the log counted")
        assert page.value("lines_total", status="200") == 3
        loaded = agent.imported()
    finally:
        agent.process.send_signal(signal.SIGTERM)
        agent.process.wait(timeout=15)
    agent_modules = {name for name in loaded if name == "agent" or name.startswith("agent.")}
    assert agent_modules == LOG_AGENT_MODULES, (f"new: {sorted(agent_modules - LOG_AGENT_MODULES)}, "
                                                f"gone: {sorted(LOG_AGENT_MODULES - agent_modules)}")
    # a development checkout starts like an installed agent: `pip install -e .` adds a path, not an import hook
    # whose finder (setuptools' for flat layouts) took ~10 ms of each start
    assert not [name for name in loaded if name.startswith("__editable__")], \
        "an import hook of an older editable install: run bash scripts/setup.sh (pip install -e .) again"
    # log sources prepare nothing in a worker thread: no thread pool is started for them
    assert "concurrent.futures.thread" not in loaded


def _page(port: int) -> Exposition | None:
    status, body = fetch(f"http://127.0.0.1:{port}/metrics")
    return Exposition(body.encode()) if status == 200 else None


class _Node:
    """An object in a reference cycle of its own: only the collector frees it."""

    def __init__(self) -> None:
        self.itself = self


def test_the_collector_paused_for_start_resumes_at_the_first_freeze_which_does_not_scan_the_imports():
    assert gc.isenabled()
    try:
        heap.pause_for_start()
        assert not gc.isenabled()
        imported = _Node()  # as importing leaves garbage: kept, not scanned for
        left_by_import = weakref.ref(imported)
        del imported
        frozen = gc.get_freeze_count()
        with heap.building_long_lived():
            assert not gc.isenabled()
            assert gc.get_freeze_count() > frozen  # the imports are frozen as the first build begins
            left_by_build = weakref.ref(_Node())
        assert gc.isenabled()
        assert left_by_import() is not None and left_by_build() is None
        heap.resume_after_start()  # nothing left to resume
        assert gc.isenabled()
    finally:
        gc.enable()
        gc.unfreeze()  # the rest of this test process's heap back in the collector's view


def test_the_collector_paused_for_a_command_that_built_nothing_resumes_with_the_command():
    try:
        heap.pause_for_start()
        heap.resume_after_start()
        assert gc.isenabled()
        gc.disable()  # paused by someone else: not resumed by the start's pause
        heap.pause_for_start()
        heap.resume_after_start()
        with heap.building_long_lived():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_a_run_refused_in_process_leaves_the_collector_running(tmp_path):
    """`kpi-agent run` pauses the collector before its imports; a flag refused before anything is built (here
    in this process, as CliRunner runs commands) must not leave it paused."""
    from click.testing import CliRunner

    from agent.cli import main

    assert gc.isenabled()
    try:
        result = CliRunner().invoke(main, ["run", "--config.file", str(tmp_path / "agent.yaml"),
                                           "--web.listen-address", "127.0.0.1:99999"])
        assert result.exit_code == 2 and "99999" in result.output
        assert gc.isenabled()
    finally:
        gc.enable()
