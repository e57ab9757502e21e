"""Credentials never reach a log line, an error or a page (issue 18.4), whatever the command: `run` and `check`
(probe URLs with user:password, basic_auth, bearer token files, HTTP SD, remote_write), `rules check`,
`report` and `ui` (a real Prometheus behind basic auth, reached with the right password, a wrong one, and at
an address where nothing listens). Every text is searched for each planted secret, as written and as it
would travel (base64 in an Authorization header, percent-encoded in a URL).

`kpi-agent ui` once logged `msg="scoreboard listening" prometheus=http://admin:SECRET@...`.
"""

from __future__ import annotations

import base64
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import bcrypt
import pytest

from tests.helpers import fetch, free_port, stop_processes, wait_until
from tests.tools import require_tool

pytestmark = pytest.mark.slow  # real agents, a real Prometheus, a dozen commands

AGENT = [sys.executable, "-m", "agent"]
ROOT = Path(__file__).resolve().parent.parent
SPEC = str(ROOT / "rules" / "shop.yaml")
PROMETHEUS_PASSWORD = "PLANTED-prom-pass"
WRONG_PASSWORD = "PLANTED-wrong-pass"


def forms(user: str, secret: str) -> list[str]:
    """Every way ``secret`` could leak: as written, percent-encoded, and base64 inside a Basic header."""
    return [secret, urllib.parse.quote(secret, safe=""), base64.b64encode(f"{user}:{secret}".encode()).decode()]


def assert_clean(texts: dict[str, str], secrets: list[str]) -> None:
    leaks = [f"{where}: {secret!r}" for where, text in texts.items() for secret in secrets if secret in text]
    assert not leaks, leaks


def closed_port() -> int:
    return free_port()  # free: nothing listens there


def get(url: str) -> str:
    try:
        return fetch(url, timeout=30)[1]
    except OSError as exc:
        return f"<{exc}>"


def test_run_and_check_show_no_secret_of_the_config(tmp_path):
    port, nothing = free_port(), closed_port()
    token = tmp_path / "token"
    token.write_text("PLANTED-token\n")
    secrets = [*forms("bob", "PLANTED-url-pass"), *forms("bob", "PLANTED-basic-pass"), "PLANTED-token",
               *forms("sd", "PLANTED-sd-pass"), *forms("agent", "PLANTED-push-pass")]
    config = tmp_path / "agent.yaml"
    good = f"""\
global: {{interval: 200ms, timeout: 150ms}}
http:
  - name: in-url
    url: http://bob:PLANTED-url-pass@127.0.0.1:{nothing}/health
  - name: basic
    url: http://127.0.0.1:{port}/nope
    basic_auth: {{username: bob, password: PLANTED-basic-pass}}
  - name: bearer
    url: http://127.0.0.1:{nothing}/health
    bearer_token_file: {token}
  - name: discovered
    http_sd_configs: [{{url: 'http://sd:PLANTED-sd-pass@127.0.0.1:{nothing}/targets', refresh_interval: 1s}}]
remote_write:
  - url: http://127.0.0.1:{nothing}/api/v1/write
    basic_auth: {{username: agent, password: PLANTED-push-pass}}
    remote_timeout: 1s
remote_write_buffer: {tmp_path}/buffer
"""
    config.write_text(good)
    texts: dict[str, str] = {}
    process = subprocess.Popen([*AGENT, "run", "--config.file", str(config), "--web.listen-address",
                                f"127.0.0.1:{port}", "--log.level", "debug"], stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: fetch(base + "/-/ready")[0] == 200, 30, what="the agent")
        wait_until(lambda: "3 failing" in get(base + "/") and "discovery_failures\": [{" in
                   get(base + "/api/v1/sources"), 30, what="every probe and the discovery failing")
        time.sleep(2)  # remote_write tries and fails meanwhile
        for path in ("/", "/metrics", "/api/v1/sources", "/api/v1/status", "/api/v1/remote_write"):
            texts[f"run {path}"] = get(base + path)
        # a config broken right beside the secrets: the errors quote the lines they are about
        config.write_text(good.replace(f"127.0.0.1:{nothing}/health", "127.0.0.1:99999/health")
                          .replace("username: bob", "username: bob, passwrd: x"))
        texts["run POST /-/reload"] = fetch(base + "/-/reload", data=b"")[1]
        texts["run / after the failed reload"] = get(base + "/")
        process.send_signal(signal.SIGTERM)
        texts["run log"] = process.communicate(timeout=30)[1]
    finally:
        stop_processes([process])
    checked = subprocess.run([*AGENT, "check", "--config.file", str(config)], capture_output=True, text=True)
    texts["check"] = checked.stdout + checked.stderr
    assert checked.returncode == 1 and "99999" in checked.stderr, checked.stderr  # the errors were reached
    assert "reload failed" in texts["run log"] and "connection_refused" in texts["run /"]
    assert_clean(texts, secrets)


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory) -> str:
    """A real Prometheus that wants basic auth (admin, PROMETHEUS_PASSWORD): its address, host:port."""
    directory = tmp_path_factory.mktemp("prometheus")
    hashed = bcrypt.hashpw(PROMETHEUS_PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    (directory / "web.yml").write_text(f"basic_auth_users:\n  admin: '{hashed}'\n")
    (directory / "prometheus.yml").write_text("global: {scrape_interval: 1h}\n")
    port = free_port()
    process = subprocess.Popen([require_tool("prometheus"), f"--config.file={directory / 'prometheus.yml'}",
                                f"--storage.tsdb.path={directory / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
                                f"--web.config.file={directory / 'web.yml'}"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: fetch(f"http://127.0.0.1:{port}/-/ready")[0] in (200, 401), 60, what="Prometheus")
        yield f"127.0.0.1:{port}"
    finally:
        stop_processes([process])


def urls(prometheus: str) -> dict[str, str]:
    return {"right password": f"http://admin:{PROMETHEUS_PASSWORD}@{prometheus}",
            "wrong password": f"http://admin:{WRONG_PASSWORD}@{prometheus}",
            "nothing listening": f"http://admin:{PROMETHEUS_PASSWORD}@127.0.0.1:{closed_port()}"}


SECRETS = [*forms("admin", PROMETHEUS_PASSWORD), *forms("admin", WRONG_PASSWORD)]


def test_rules_check_and_report_show_no_password_of_the_prometheus_url(prometheus, tmp_path):
    texts: dict[str, str] = {}
    for case, url in urls(prometheus).items():
        checked = subprocess.run([*AGENT, "rules", "check", SPEC, "--prometheus.url", url], capture_output=True,
                                 text=True, timeout=300)
        texts[f"rules check, {case}"] = checked.stdout + checked.stderr
        for output in ("report.html", "report.json"):
            out = tmp_path / f"{case.replace(' ', '-')}-{output}"
            made = subprocess.run([*AGENT, "report", SPEC, "--prometheus.url", url, "--out", str(out)],
                                  capture_output=True, text=True, timeout=300)
            texts[f"report {output}, {case}"] = made.stdout + made.stderr + (out.read_text() if out.exists() else "")
            assert out.exists(), made.stderr
    assert "401" in texts["rules check, wrong password"] or "nauthorized" in texts["rules check, wrong password"]
    assert "cannot reach Prometheus" in texts["report report.html, nothing listening"]
    assert_clean(texts, SECRETS)


def test_ui_shows_no_password_of_the_prometheus_url(prometheus):
    texts: dict[str, str] = {}
    processes = []
    try:
        for case, url in urls(prometheus).items():
            port = free_port()
            process = subprocess.Popen([*AGENT, "ui", SPEC, "--prometheus.url", url, "--web.listen-address",
                                        f"127.0.0.1:{port}", "--log.level", "debug"], stderr=subprocess.PIPE,
                                       text=True)
            processes.append(process)
            base = f"http://127.0.0.1:{port}"
            wait_until(lambda base=base: fetch(f"{base}/-/healthy")[0] == 200, 30, what="the scoreboard")
            for path in ("/", "/report", "/summary.csv", "/history.csv", "/report.json", "/metrics"):
                texts[f"ui {path}, {case}"] = get(base + path)
            process.send_signal(signal.SIGTERM)
            texts[f"ui log, {case}"] = process.communicate(timeout=30)[1]
    finally:
        stop_processes(processes)
    assert "scoreboard listening" in texts["ui log, right password"]
    assert_clean(texts, SECRETS)
