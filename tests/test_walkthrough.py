"""README's "From zero to paged" (issue 19.3), as a reader runs it with the installed Debian packages: every
command of its block works and every URL it names answers; the test page reaches the receiver it tells you to
run. The block is read from README.md, so the README cannot drift from what works.

What the test changes, and only that: the ports (free ones, so that tests run side by side), the storage
directories, the positions file and `rules generate --out` (in a copy of deploy/ and rules/, never the
checkout), and Alertmanager's group_wait (1 s instead of 30 s). `rules test` is left out (the KPI tests run
it) and so is `setup.sh` (tests/test_packaging.py runs it).
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from tests.helpers import fetch, free_port, stop_processes, wait_until
from tests.tools import require_tool

pytestmark = pytest.mark.slow  # Prometheus, Alertmanager, the agent and the receiver, as the README runs them

ROOT = Path(__file__).resolve().parent.parent
KPI_AGENT = str(Path(sys.executable).parent / "kpi-agent")
PORTS = ("9910", "9090", "9093", "5001")  # the agent, Prometheus, Alertmanager, the receiver


def walkthrough() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## From zero to paged"):]
    return section[section.index("```sh\n") + 6:section.index("\n```", section.index("```sh\n"))]


def commands(block: str) -> list[list[str]]:
    """Each command line, without its comment and its `&` (the test runs what the README backgrounds in the
    background, whatever it is told)."""
    lines = [shlex.split(line, comments=True) for line in block.splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    return [words[:-1] if words[-1] == "&" else words for words in lines]


def urls(block: str) -> list[str]:
    return sorted({url.rstrip(".,;:") for url in re.findall(r"http://127\.0\.0\.1:\d+[^\s)`'\"]*", block)})


class Output:
    """A background process's stdout, line by line, as it comes."""

    def __init__(self, process: subprocess.Popen):
        self.lines: list[str] = []
        threading.Thread(target=lambda: self.lines.extend(process.stdout), daemon=True).start()  # type: ignore


def test_the_walkthrough_runs_with_the_installed_packages(tmp_path):
    block = walkthrough()
    ports = {port: str(free_port()) for port in PORTS}

    def local(text: str) -> str:
        for port, free in ports.items():
            text = text.replace(f"127.0.0.1:{port}", f"127.0.0.1:{free}")
        return text.replace("/tmp/", f"{tmp_path}/")

    work = tmp_path / "checkout"  # the parts of a clone the commands read and write
    shutil.copytree(ROOT / "deploy", work / "deploy")
    shutil.copytree(ROOT / "rules", work / "rules")
    shutil.copytree(ROOT / "scripts", work / "scripts")
    for path in (work / "deploy").rglob("*.y*ml"):
        path.write_text(local(path.read_text()))
    agent = yaml.safe_load((work / "deploy" / "agent.yaml").read_text())
    agent["positions_file"] = str(tmp_path / "positions.json")
    (work / "deploy" / "agent.yaml").write_text(yaml.safe_dump(agent, sort_keys=False))
    alertmanager = yaml.safe_load((work / "deploy" / "alertmanager" / "alertmanager.yml").read_text())
    alertmanager["route"]["group_wait"] = "1s"
    (work / "deploy" / "alertmanager" / "alertmanager.yml").write_text(yaml.safe_dump(alertmanager))

    background: list[subprocess.Popen] = []
    agent: subprocess.Popen | None = None
    agent_log = tmp_path / "agent.log"
    receiver: Output | None = None
    ran: list[str] = []
    try:
        for command in commands(block):
            program = command[0]
            if program == "sudo" and command[1:3] == ["apt-get", "install"]:
                for package in command[3:]:
                    installed = subprocess.run(["dpkg", "-s", package], capture_output=True, text=True)
                    assert "Status: install ok installed" in installed.stdout, package
            elif program == "sudo" and command[1:3] == ["systemctl", "stop"]:
                for unit in command[3:]:  # the units Debian's packages install and start
                    files = subprocess.run(["dpkg", "-L", unit], capture_output=True, text=True).stdout
                    assert f"/{unit}.service" in files, unit
            elif command[:2] == ["bash", "scripts/setup.sh"] or command[1:3] == ["rules", "test"]:
                continue  # run by tests/test_packaging.py and the KPI tests
            elif program == "python3" and command[1] == "scripts/alert-receiver.py":
                process = subprocess.Popen([sys.executable, *command[1:], "--listen", f"127.0.0.1:{ports['5001']}"],
                                           cwd=work, stdout=subprocess.PIPE, text=True)
                background.append(process)
                receiver = Output(process)
            elif program == ".venv/bin/kpi-agent" and command[1] == "run":
                agent = subprocess.Popen([KPI_AGENT, *command[1:], "--web.listen-address",
                                          f"127.0.0.1:{ports['9910']}"], cwd=work, stderr=agent_log.open("w"))
                background.append(agent)
            elif program == ".venv/bin/kpi-agent":
                args = [local(arg) for arg in command[1:]]
                result = subprocess.run([KPI_AGENT, *args], cwd=work, capture_output=True, text=True, timeout=600)
                assert result.returncode == 0, (command, result.stderr)
            elif program in ("prometheus", "prometheus-alertmanager"):
                port = ports["9090" if program == "prometheus" else "9093"]
                extra = [f"--web.listen-address=127.0.0.1:{port}"]
                if program == "prometheus-alertmanager":
                    extra.append("--cluster.listen-address=")  # no gossip port: tests run side by side
                background.append(subprocess.Popen([require_tool(program), *map(local, command[1:]), *extra],
                                                   cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
                ready = f"http://127.0.0.1:{port}/-/ready"
                wait_until(lambda: fetch(ready)[0] == 200, 60, what=program)  # noqa: B023 - called at once
            elif program == "amtool":
                result = subprocess.run([require_tool("amtool"), *map(local, command[1:])], capture_output=True,
                                        text=True, timeout=60)
                assert result.returncode == 0, (command, result.stderr)
            else:
                raise AssertionError(f"the walkthrough runs {command}: teach this test what it does")
            ran.append(program if program != ".venv/bin/kpi-agent" else f"kpi-agent {command[1]}")
        assert {"prometheus", "prometheus-alertmanager", "amtool", "python3", "kpi-agent run"} <= set(ran), ran

        try:
            wait_until(lambda: fetch(local("http://127.0.0.1:9910/-/ready"))[0] == 200, 60, what="the agent")
        except AssertionError as exc:  # say why, in the agent's own words (a port taken since free_port, a crash)
            state = f"exited {agent.returncode}" if agent is not None and agent.poll() is not None else "runs"
            raise AssertionError(f"{exc}; the agent {state}; its log ends: {agent_log.read_text()[-2000:]}") from None
        for url in urls(block):
            status, page = fetch(local(url), timeout=30)
            assert status == 200, (url, status)
            assert page
        status, _ = fetch(local("http://127.0.0.1:9090/alerts"))
        assert status == 404  # what the README says of Debian's Prometheus: the classic pages only

        assert receiver is not None
        page = "page FIRING KPIErrorBudgetBurn shop/checkout_availability: a test page"
        deadline = time.monotonic() + 60
        while not any(page in line for line in receiver.lines):
            assert time.monotonic() < deadline, f"the test page never reached the receiver: {receiver.lines}"
            time.sleep(0.2)
    finally:
        stop_processes(background)


def test_the_receiver_prints_each_alert_firing_and_resolved(tmp_path):
    """scripts/alert-receiver.py behind the shipped Alertmanager config (waits of a second): a page with its
    runbook, then its resolution, one line each, on the receiver of the route that took it."""
    ports = {"9093": str(free_port()), "5001": str(free_port())}
    config = yaml.safe_load((ROOT / "deploy" / "alertmanager" / "alertmanager.yml").read_text())
    for route in (config["route"], *config["route"]["routes"]):
        for key in ("group_wait", "group_interval"):
            route[key] = "1s"
    for receiver in config["receivers"]:
        for hook in receiver["webhook_configs"]:
            hook["url"] = hook["url"].replace("127.0.0.1:5001", f"127.0.0.1:{ports['5001']}")
    (tmp_path / "alertmanager.yml").write_text(yaml.safe_dump(config))
    receiver = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "alert-receiver.py"), "--listen",
                                 f"127.0.0.1:{ports['5001']}"], stdout=subprocess.PIPE, text=True)
    alertmanager = subprocess.Popen([require_tool("prometheus-alertmanager"),
                                     f"--config.file={tmp_path / 'alertmanager.yml'}",
                                     f"--storage.path={tmp_path / 'am'}", "--cluster.listen-address=",
                                     f"--web.listen-address=127.0.0.1:{ports['9093']}"],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    output = Output(receiver)
    try:
        url = f"http://127.0.0.1:{ports['9093']}"
        wait_until(lambda: fetch(f"{url}/-/ready")[0] == 200, 60, what="Alertmanager")
        end = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 4))
        added = subprocess.run([require_tool("amtool"), f"--alertmanager.url={url}", "alert", "add",
                                "KPIErrorBudgetBurn", "kpi_severity=page", "kpi_service=shop",
                                "kpi=checkout_availability", "--annotation=summary=checkouts fail",
                                "--annotation=runbook_url=https://runbooks.example.com/shop/checkout", f"--end={end}"],
                               capture_output=True, text=True, timeout=60)
        assert added.returncode == 0, added.stderr
        wait_until(lambda: any(" page RESOLVED " in line for line in output.lines), 60, what="the resolution")
    finally:
        stop_processes([alertmanager, receiver])
    lines = [re.sub(r"^\S+ \S+ ", "", line.rstrip("\n")) for line in output.lines]  # the time stamp
    assert lines == [
        "page FIRING KPIErrorBudgetBurn shop/checkout_availability: checkouts fail",
        "  runbook: https://runbooks.example.com/shop/checkout",
        "page RESOLVED KPIErrorBudgetBurn shop/checkout_availability: checkouts fail",
        "  runbook: https://runbooks.example.com/shop/checkout",
    ], output.lines


def test_the_shipped_page_holds_about_30_minutes_after_healing(tmp_path):
    """What the README says after the block, on the rules deploy/ ships, under promtool: checkouts failing at
    25% for an hour page; once they heal, the page's 6h/30m tier holds it until the failures have left the
    30-minute window (firing 28 minutes after, gone 32 minutes after)."""
    firing = ("          - labels: 'ALERTS{alertname=\"KPIErrorBudgetBurn\",alertstate=\"firing\","
              "kpi=\"checkout_availability\",kpi_service=\"shop\",kpi_severity=\"page\",severity=\"critical\","
              "team=\"payments\"}'\n            value: 1\n")
    checks = "".join(
        f"      - expr: ALERTS{{kpi_severity=\"page\"}}\n        eval_time: {minutes}m\n        exp_samples:"
        + ("\n" + firing if paging else " []\n")
        for minutes, paging in ((61, True), (88, True), (92, False)))
    test = tmp_path / "page.test.yml"
    shutil.copy(ROOT / "deploy" / "prometheus" / "rules" / "shop.rules.yml", tmp_path)
    test.write_text(f"""rule_files: [shop.rules.yml]
evaluation_interval: 30s
tests:
  - interval: 30s
    input_series:  # 200 checkouts a minute; a quarter fail for an hour, then none
      - series: 'http_requests_total{{job="kpi-agent",path="/api/checkout",status="200"}}'
        values: '0+75x120 9000+100x200'
      - series: 'http_requests_total{{job="kpi-agent",path="/api/checkout",status="500"}}'
        values: '0+25x120 3000+0x200'
    promql_expr_test:  # the page only: the ticket of the same KPI stays for hours
{checks}""")
    result = subprocess.run([require_tool("promtool"), "test", "rules", str(test)], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
