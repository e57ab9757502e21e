"""Every command with every kind of bad flag value (issue 19.1): a real `kpi-agent` process each time, read as a
user reads it. The command stops before anything starts (no Prometheus asked, no port bound, no file written)
with click's usage error naming the flag, exit status 2, and never a traceback; `ui` never says "listening".

Before agent/cli/flags.py, `--prometheus.url 127.0.0.1:9090` gave a traceback in `rules check` and `report`,
and `ui` started, said "listening", then answered every page with 500.
"""

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SPEC = str(ROOT / "rules" / "shop.yaml")
URL = "http://127.0.0.1:9"  # valid, and never asked: nothing listens there
NOT_A_DIRECTORY = "/dev/null/out"

# (command and arguments, the flag named in the error, what the message says)
CASES = [
    (["report", SPEC, "--out", "{tmp}/r.html", "--prometheus.url", "127.0.0.1:9090"], "--prometheus.url",
     "'127.0.0.1:9090' has no scheme: give http://127.0.0.1:9090 (or https://)"),
    (["report", SPEC, "--out", "{tmp}/r.html", "--prometheus.url", "ftp://prometheus:9090"], "--prometheus.url",
     "the scheme must be http or https, not 'ftp'"),
    (["report", SPEC, "--out", "{tmp}/r.html", "--prometheus.url", "http://"], "--prometheus.url", "has no host"),
    (["report", SPEC, "--out", "{tmp}/r.html", "--prometheus.url", "http://[::1:9090"], "--prometheus.url",
     "is not a URL"),
    (["report", SPEC, "--out", "{tmp}/r.html", "--prometheus.url", "http://prometheus:99999"], "--prometheus.url",
     "is not a URL"),
    (["report", SPEC, "--out", "{tmp}/r.html", "--prometheus.url", "http://admin:SECRET@prometheus:9090/?x=1"],
     "--prometheus.url", "'http://prometheus:9090/?x=1': give the base URL only"),
    (["report", SPEC, "--prometheus.url", URL, "--out", "/nonexistent/r.html"], "--out",
     "the directory /nonexistent does not exist"),
    (["report", SPEC, "--prometheus.url", URL, "--out", "{tmp}"], "--out", "is a directory; name the file"),
    (["report", SPEC, "--prometheus.url", URL, "--out", "{tmp}/r.html", "--at", "yesterday"], "--at",
     "'yesterday' is neither RFC 3339"),
    (["report", SPEC, "--prometheus.url", URL, "--out", "{tmp}/r.html", "--at", "2026-03-01T00:00:00"], "--at",
     "has no time zone"),
    (["report", SPEC, "--prometheus.url", URL, "--out", "{tmp}/r.html", "--at", "nan"], "--at",
     "'nan' is not a time"),
    (["report", SPEC, "--prometheus.url", URL, "--out", "{tmp}/r.html", "--period", "fortnight"], "--period", ""),
    (["report", SPEC, "--prometheus.url", URL, "--out", "{tmp}/r.html", "--time-zone", "Mars/Olympus"],
     "--time-zone", "Mars/Olympus"),
    (["report", SPEC, "--prometheus.url", URL, "--out", "{tmp}/r.html", "--history", "61"], "--history", "61"),
    (["ui", SPEC, "--prometheus.url", "127.0.0.1:9090", "--web.listen-address", "127.0.0.1:0"], "--prometheus.url",
     "has no scheme"),
    (["ui", SPEC, "--prometheus.url", URL, "--refresh", "0s"], "--refresh", "'0s' must be longer than zero"),
    (["ui", SPEC, "--prometheus.url", URL, "--web.listen-address", "nope"], "--web.listen-address",
     "'nope' has no port"),
    (["ui", SPEC, "--prometheus.url", URL, "--web.config.file", "/nonexistent.yml"], "--web.config.file",
     "does not exist"),
    (["ui", SPEC, "--prometheus.url", URL, "--reports.file", "/nonexistent.yml"], "--reports.file", "does not exist"),
    (["ui", SPEC, "--prometheus.url", URL, "--log.level", "verbose"], "--log.level", "'verbose' is not one of"),
    (["rules", "check", SPEC, "--prometheus.url", "127.0.0.1:9090"], "--prometheus.url", "has no scheme"),
    (["rules", "check", SPEC, "--prometheus.lookback", "5x"], "--prometheus.lookback", "'5x' is not a duration"),
    (["rules", "check", SPEC, "--config.file", "/nonexistent.yml"], "--config.file", "does not exist"),
    (["rules", "generate", SPEC, "--out", NOT_A_DIRECTORY], "--out", "cannot be made: /dev/null is not a directory"),
    (["rules", "generate", SPEC, "--out", "{tmp}/rules", "--interval", "7s"], "--interval", "must divide 5m"),
    (["rules", "generate", SPEC, "--out", "{tmp}/rules", "--interval", "soon"], "--interval", "is not a duration"),
    (["rules", "generate", SPEC, "--out", "{tmp}/rules", "--format", "prometheus-operator", "--namespace",
      "Monitoring_NS"], "--namespace", "is not a Kubernetes namespace"),
    (["rules", "test", SPEC, "--out", NOT_A_DIRECTORY], "--out", "/dev/null is not a directory"),
    (["rules", "import", "--from", "sloth", SPEC, "--out", "{tmp}/imported", "--window", "0s"], "--window",
     "must be longer than zero"),
    (["rules", "import", "--from", "sloth", SPEC, "--out", NOT_A_DIRECTORY], "--out", "is not a directory"),
    (["dashboards", "generate", SPEC, "--out", NOT_A_DIRECTORY], "--out", "is not a directory"),
    (["dashboards", "generate", SPEC, "--out", "{tmp}/boards", "--alert-datasource-uid", "my datasource"],
     "--alert-datasource-uid", "is not a Grafana uid"),
    (["run", "--web.listen-address", ":99999"], "--web.listen-address", "port '99999' is not a number"),
    (["run", "--web.listen-address", "127.0.0.1:0", "--web.listen-address", "127.0.0.1:0"],
     "--web.listen-address", "'127.0.0.1:0' is given twice"),
    (["run", "--web.listen-address", "127.0.0.1:0", "--web.max-connections", "0"], "--web.max-connections", "0"),
    (["run", "--web.listen-address", "127.0.0.1:0", "--web.read-header-timeout", "nan"],
     "--web.read-header-timeout", "'nan' is not a number of seconds from 0.1 up"),
    (["run", "--web.listen-address", "127.0.0.1:0", "--shard.index", "3", "--shard.count", "2"], "--shard.index",
     "3 is not below --shard.count 2"),
    (["run", "--web.listen-address", "127.0.0.1:0", "--log.format", "xml"], "--log.format", "'xml' is not one of"),
    (["run", "--web.listen-address", "127.0.0.1:0", "--web.config.file", "/nonexistent.yml"], "--web.config.file",
     "does not exist"),
]


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> dict[int, tuple[subprocess.CompletedProcess, Path]]:
    """Every case run once, four at a time (each is a process start: about a second)."""
    # made here, not in the pool: pytest makes its base directory on first use, which is not thread-safe (four
    # threads racing on a fresh xdist worker: FileExistsError)
    directories = [tmp_path_factory.mktemp(f"case{index}") for index in range(len(CASES))]

    def run(index: int) -> tuple[subprocess.CompletedProcess, Path]:
        tmp = directories[index]
        args = [arg.replace("{tmp}", str(tmp)) for arg in CASES[index][0]]
        command = [sys.executable, "-m", "agent", *args]
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=30, cwd=tmp)
        except subprocess.TimeoutExpired as exc:  # the command started instead of refusing the flag
            result = subprocess.CompletedProcess(command, -9, exc.stdout or "", f"still running after 30s: "
                                                 f"{exc.stderr or ''}")
        return result, tmp

    with ThreadPoolExecutor(4) as pool:
        return dict(enumerate(pool.map(run, range(len(CASES)))))


def _case_id(index: int) -> str:
    args, flag, _ = CASES[index]
    command = " ".join(word for word in args[:2] if not word.startswith("/"))
    return f"{index}: {command} {flag}"


@pytest.mark.parametrize("index", range(len(CASES)), ids=_case_id)
def test_a_bad_flag_value_stops_the_command_before_anything_starts(outcomes, index):
    args, flag, message = CASES[index]
    result, tmp = outcomes[index]
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert f"Error: Invalid value for '{flag}'" in result.stderr, result.stderr
    assert message in result.stderr, result.stderr
    assert "listening" not in result.stderr and result.stdout == ""
    assert "SECRET" not in result.stderr
    assert [p.name for p in tmp.iterdir()] == []  # nothing written
