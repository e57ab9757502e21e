import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest

from tests.tools import require_tool

GROUPS = pytest.StashKey[Path]()


@pytest.fixture
def promtool() -> str:
    return require_tool("promtool")


@pytest.fixture
def prometheus_bin() -> str:
    return require_tool("prometheus")


@pytest.fixture
def chromium() -> str:
    return require_tool("chromium")


# Under pytest-xdist (pyproject.toml's addopts: -n auto --dist loadgroup), the tests that share a module- or
# session-scoped fixture of ours (the report stack with its 45 s of history, the backfilled history, a module's
# servers), directly or through another test, run in one worker, so each is set up once, not once per worker;
# the other tests go to whichever worker is free. Each worker writes the groups it collected to a file the
# controller's scheduler reads (xdist's own xdist_group marks rename node ids, which pytest 9 no longer allows).


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``-n auto`` (pyproject.toml's addopts): two workers per core, at most 4 (each may run a Prometheus or a
    Chromium; most tests wait on servers and subprocesses: the full suite took 239 s with 4 workers on 2 quiet
    cores, 358 s with 2); none with ``-s`` (what a test prints is wanted: workers' output is not shown) or for
    the benchmarks, which time themselves alone and print their ratios."""
    if config.getoption("capture") == "no":
        return 0
    if config.args and all("benchmarks" in Path(arg.split("::")[0]).parts for arg in config.args):
        return 0
    return min(2 * len(os.sched_getaffinity(0)), 4)


def pytest_configure(config: pytest.Config) -> None:
    if config.pluginmanager.hasplugin("xdist") and not hasattr(config, "workerinput"):
        config.stash[GROUPS] = Path(tempfile.mkdtemp(prefix="kpi-test-groups-"))


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    node.workerinput["kpi_test_groups"] = str(node.config.stash[GROUPS])


def pytest_unconfigure(config: pytest.Config) -> None:
    if GROUPS in config.stash:
        shutil.rmtree(config.stash[GROUPS], ignore_errors=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    workerinput = getattr(config, "workerinput", {})
    if "kpi_test_groups" not in workerinput:
        return
    parent: dict[str, str] = {}

    def root(key: str) -> str:
        while parent.setdefault(key, key) != key:
            key = parent[key]
        return key

    shared_by: dict[str, list[str]] = {}
    for item in items:
        keys = [name if definition.scope == "session" else f"{name}@{definition.baseid}"
                for name, definitions in item._fixtureinfo.name2fixturedefs.items()
                for definition in definitions[-1:]
                if definition.scope in ("module", "package", "session")
                and definition.func.__module__.startswith("tests.")]
        for key in keys[1:]:
            parent[root(key)] = root(keys[0])
        if keys:
            shared_by[item.nodeid] = keys
    groups = {nodeid: root(keys[0]) for nodeid, keys in shared_by.items()}
    target = Path(workerinput["kpi_test_groups"]) / f"{workerinput['workerid']}.json"
    target.with_suffix(".tmp").write_text(json.dumps(groups))
    target.with_suffix(".tmp").rename(target)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    if config.getvalue("dist") != "loadgroup" or GROUPS not in config.stash:
        return None
    from xdist.scheduler import LoadGroupScheduling

    directory: Path = config.stash[GROUPS]

    class SharedFixtureScheduling(LoadGroupScheduling):
        """xdist's loadgroup, its groups read from the workers' files (each worker collected them all)."""

        groups: dict[str, str] | None = None

        def _split_scope(self, nodeid: str) -> str:
            if self.groups is None:  # read once every worker has collected: when tests are first scheduled
                files = sorted(directory.glob("*.json"))
                self.groups = json.loads(files[0].read_text()) if files else {}
            return self.groups.get(nodeid, nodeid)

    return SharedFixtureScheduling(config, log)
