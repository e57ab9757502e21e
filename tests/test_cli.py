"""The kpi-agent command as a user runs it: a real process, real signals, real HTTP."""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from agent import __version__
from tests.helpers import fetch, free_port, scrape, wait_until

AGENT = [sys.executable, "-m", "agent"]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*AGENT, *args], capture_output=True, text=True, timeout=60)


def test_version():
    result = run_cli("--version")
    assert result.returncode == 0 and __version__ in result.stdout


def test_check_accepts_a_valid_config_and_reports_every_error_of_a_bad_one(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("global: {interval: 30s}\nhttp:\n  - name: a\n    url: http://127.0.0.1:1/\n")
    result = run_cli("check", "--config.file", str(good))
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout

    bad = tmp_path / "bad.yaml"
    bad.write_text("global:\n  interval: soon\nhttp:\n  - name: a\n    url: http://127.0.0.1:1/\n    timeout: 5x\n")
    result = run_cli("check", "--config.file", str(bad), "--config.file", str(good))
    assert result.returncode == 1
    assert f"{bad}:2: global.interval: 'soon' is not a duration" in result.stderr
    assert f"{bad}:6: http[0].timeout: '5x' is not a duration" in result.stderr
    assert f"{good}: OK" in result.stdout


def test_example_config_command_prints_a_config_that_checks(tmp_path):
    result = run_cli("example-config")
    assert result.returncode == 0
    path = tmp_path / "example.yaml"
    path.write_text(result.stdout)
    assert run_cli("check", "--config.file", str(path)).returncode == 0


@pytest.fixture
def agent_process():
    processes = []

    def start(*args: str, port: int) -> subprocess.Popen:
        process = subprocess.Popen([*AGENT, "run", "--web.listen-address", f"127.0.0.1:{port}", *args],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        processes.append(process)
        wait_until(lambda: fetch(f"http://127.0.0.1:{port}/-/ready")[0] == 200, what="agent ready")
        return process

    yield start
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=10)


@pytest.mark.slow
def test_run_without_config_probes_itself(agent_process):
    port = free_port()
    agent_process(port=port)
    base = f"http://127.0.0.1:{port}"

    def probed():
        page = scrape(base + "/metrics")
        return page.value("probe_success", target="self-health") == 1 and \
            page.value("example_agent_uptime_seconds") is not None and page

    page = wait_until(probed, timeout=15, what="self probes")
    assert page.value("probe_success", target="self-status", env="example") == 1
    assert page.value("example_agent_sources", kind="http") == 2


def test_sighup_reload_json_logs_and_clean_sigterm(agent_process, tmp_path):
    port = free_port()
    config = tmp_path / "agent.yaml"
    config.write_text(f"http:\n  - name: me\n    url: http://127.0.0.1:{port}/-/healthy\n    interval: 1s\n")
    process = agent_process("--config.file", str(config), "--log.format", "json", port=port)
    base = f"http://127.0.0.1:{port}"

    config.write_text("http: [oops\n")
    process.send_signal(signal.SIGHUP)
    wait_until(lambda: scrape(base + "/metrics").value("kpi_agent_config_last_reload_successful") == 0,
               what="failed reload visible")
    config.write_text(f"http:\n  - name: me2\n    url: http://127.0.0.1:{port}/-/healthy\n    interval: 1s\n")
    process.send_signal(signal.SIGHUP)
    wait_until(lambda: scrape(base + "/metrics").value("probe_success", target="me2") == 1,
               what="new source after reload")
    assert scrape(base + "/metrics").value("kpi_agent_config_last_reload_successful") == 1

    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=10)
    assert process.returncode == 0, stderr
    records = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    messages = [r["msg"] for r in records]
    assert "agent started" in messages and "agent stopped" in messages
    failed = next(r for r in records if r["msg"].startswith("reload failed"))
    assert failed["level"] == "error" and str(config) in failed["error"]


def test_secrets_never_reach_logs_or_metrics(agent_process, tmp_path):
    port = free_port()
    config = tmp_path / "agent.yaml"
    config.write_text(f"http:\n  - name: guarded\n    url: http://127.0.0.1:{port}/-/healthy\n    interval: 1s\n"
                      f"    basic_auth: {{username: bob, password: hunter2-secret}}\n")
    process = agent_process("--config.file", str(config), "--log.level", "debug", port=port)
    base = f"http://127.0.0.1:{port}"
    wait_until(lambda: scrape(base + "/metrics").value("probe_success", target="guarded") is not None)
    config.write_text(config.read_text() + "    timeout: 5x\n")
    process.send_signal(signal.SIGHUP)
    wait_until(lambda: scrape(base + "/metrics").value("kpi_agent_config_last_reload_successful") == 0)
    metrics = fetch(base + "/metrics")[1]
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=10)
    assert "hunter2-secret" not in metrics and "hunter2-secret" not in stderr


def test_bad_listen_address_and_bad_config_exit_nonzero(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("nonsense: 1\n")
    result = subprocess.run([*AGENT, "run", "--config.file", str(bad)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 1 and f"{bad}:1: nonsense: unknown field" in result.stderr
    for address, message in ((":99999", "port '99999' is not a number from 0 to 65535"),
                             ("localhost", "has no port"),
                             ("::1:9910", "an IPv6 address goes in brackets"),
                             ("[::zz]:9910", "is not an IPv6 address"),
                             ("256.1.1.1:1", None)):  # well-formed, but not an address of this machine
        result = subprocess.run([*AGENT, "run", "--web.listen-address", address], capture_output=True, text=True,
                                timeout=30)
        assert result.returncode != 0, address
        assert "Traceback" not in result.stderr, result.stderr
        if message:
            assert message in result.stderr, (address, result.stderr)
    port = free_port()
    result = subprocess.run([*AGENT, "run", "--web.listen-address", f"127.0.0.1:{port}", "--web.listen-address",
                             f"127.0.0.1:{port}"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "is given twice" in result.stderr


def test_several_listen_addresses_and_ipv6_are_served(agent_process, tmp_path):
    first, second = free_port(), free_port()
    config = tmp_path / "agent.yaml"
    config.write_text("global: {}\n")
    agent_process("--config.file", str(config), "--web.listen-address", f"[::1]:{second}", port=first)
    assert scrape(f"http://127.0.0.1:{first}/metrics").value("kpi_agent_build_info") == 1
    assert scrape(f"http://[::1]:{second}/metrics").value("kpi_agent_build_info") == 1


def test_a_config_that_would_fail_to_start_fails_check_and_run_with_its_line(tmp_path):
    not_pem = tmp_path / "ca.pem"
    not_pem.write_text("this is not a certificate\n")
    config = tmp_path / "agent.yaml"
    config.write_text("http:\n  - name: api\n    url: https://127.0.0.1:1/\n"
                      f"    tls_config:\n      ca_file: {not_pem}\n"
                      "logs:\n  - name: app\n    paths: [/tmp/x.log]\n    format: json\n    metrics:\n"
                      "      - {name: req_total, type: counter}\n"
                      "      - {name: req, type: gauge, value: n}\n")
    for command in ("check", "run"):
        result = subprocess.run([*AGENT, command, "--config.file", str(config)], capture_output=True, text=True,
                                timeout=30)
        assert result.returncode == 1, (command, result.stderr)
        assert "Traceback" not in result.stderr
        assert f"{config}:5: http[0].tls_config.ca_file: " in result.stderr, result.stderr
        assert f"{config}:12: logs[0].metrics[1].name: req is a gauge without labels here, but req_total is a " \
               "counter without labels in logs[0]" in result.stderr, result.stderr


def test_readme_commands_are_the_scripts_ci_runs():
    readme = Path(__file__).parents[1].joinpath("README.md").read_text()
    ci = Path(__file__).parents[1].joinpath(".ci", "run").read_text()
    assert "bash scripts/test.sh" in readme and "bash scripts/test.sh" in ci
    assert "bash scripts/setup.sh && .venv/bin/kpi-agent run" in readme


def _answers(url: str) -> bool:
    try:
        return fetch(url, timeout=0.5)[0] == 200
    except OSError:  # not listening yet
        return False


def test_sighup_during_start_up_is_one_reload_never_a_death(tmp_path):
    """`systemctl reload` right after `systemctl start`: SIGHUP from the moment the agent's own code runs (the
    command's first import, `agent.config`, seen on stderr through python -X importtime) and every 2 ms until
    the agent is ready. The agent survives, then reloads once, with what the config says by then."""
    port = free_port()
    config = tmp_path / "agent.yaml"
    config.write_text(f"http:\n  - name: before\n    url: http://127.0.0.1:{port}/-/healthy\n    interval: 1s\n")
    process = subprocess.Popen([sys.executable, "-X", "importtime", "-m", "agent", "run", "--config.file",
                                str(config), "--web.listen-address", f"127.0.0.1:{port}"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    sent = 0
    try:
        assert process.stderr is not None
        for line in process.stderr:  # (the marker is read before any SIGHUP, so it cannot be missed)
            if line.startswith("import time:") and line.split("|")[-1].strip() == "agent.config":
                break
        rest: list[str] = []  # read on, or the pipe fills and the agent blocks writing to it
        reader = threading.Thread(target=lambda: rest.extend(process.stderr), daemon=True)  # type: ignore[arg-type]
        reader.start()
        config.write_text(f"http:\n  - name: after\n    url: http://127.0.0.1:{port}/-/healthy\n    interval: 1s\n")
        deadline = time.monotonic() + 60
        while not _answers(base + "/-/ready"):
            assert process.poll() is None, f"the agent died of SIGHUP number {sent}: {process.returncode}"
            assert time.monotonic() < deadline, "the agent never became ready"
            process.send_signal(signal.SIGHUP)
            sent += 1
            time.sleep(0.002)  # start-up from agent.config to ready can take under 100 ms on a quiet machine
        for _ in range(5):
            process.send_signal(signal.SIGHUP)
            time.sleep(0.01)
        page = wait_until(lambda: (page := scrape(base + "/metrics")).value("probe_success", target="after") == 1
                          and page, what="the config as it was changed during start-up")
        assert page.value("probe_success", target="before") is None
        assert page.value("kpi_agent_config_reloads_total", result="failure") == 0
        assert sent > 10, sent  # start-up was caught, not missed
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=15)
        reader.join(timeout=15)
        stderr = "".join(rest)
        assert process.returncode == 0, stderr
        assert 'msg="reloading: SIGHUP arrived while the agent was starting"' in stderr
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def test_systemd_hears_ready_once_the_agent_serves_and_stopping_as_it_stops(tmp_path):
    """Type=notify (deploy/systemd): systemd holds `systemctl reload` until READY=1, read here from the
    datagram socket systemd would give the agent in NOTIFY_SOCKET."""
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.settimeout(30)
    port = free_port()
    process = subprocess.Popen([*AGENT, "run", "--web.listen-address", f"127.0.0.1:{port}"],
                               env={**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify")},
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert notify.recv(100) == b"READY=1"
        assert _answers(f"http://127.0.0.1:{port}/-/ready")  # ready when it says so
        process.send_signal(signal.SIGTERM)
        assert notify.recv(100) == b"STOPPING=1"
        _, stderr = process.communicate(timeout=15)
        assert process.returncode == 0 and "cannot notify systemd" not in stderr, stderr
    finally:
        notify.close()
        if process.poll() is None:
            process.kill()
            process.communicate()
