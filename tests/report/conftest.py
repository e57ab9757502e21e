import pytest

from tests.report.stack import Stack
from tests.tools import require_tool

HISTORY = 45.0  # seconds of recorded KPI history before the tests read it; reports cover the last 30


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    """One shop, agent and Prometheus for every report and scoreboard test (they only read from it)."""
    running = Stack(tmp_path_factory.mktemp("report-stack"))
    try:
        running.start(require_tool("prometheus"))
        running.wait_for_history(HISTORY)
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="session")
def history(tmp_path_factory):
    """Fifteen months of a store's KPI series backfilled into a real Prometheus (tests/report/history.py)."""
    from tests.report.history import History

    backfilled = History(tmp_path_factory.mktemp("report-history"))
    try:
        backfilled.start(require_tool("prometheus"), require_tool("promtool"))
        yield backfilled
    finally:
        backfilled.stop()
