import pytest

from tests.tools import require_tool


@pytest.fixture
def promtool() -> str:
    return require_tool("promtool")


@pytest.fixture
def prometheus_bin() -> str:
    return require_tool("prometheus")


@pytest.fixture
def chromium() -> str:
    return require_tool("chromium")
