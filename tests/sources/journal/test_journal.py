"""Journal sources on real journal files read by the real journalctl: fields as labels, unit and field matches,
MESSAGE formats, following, the cursor across restarts and SIGKILL, new journal files, a missing journal."""

import asyncio
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from agent.config.agent import parse_config
from agent.config.problems import ConfigError
from agent.config.yaml import load_text
from agent.series.store import Store
from agent.sources.journal.source import journalctl_command
from tests.helpers import Exposition, build_source, free_port, render_store, scrape, use_positions, wait_until
from tests.sources.journal.conftest import entry
from tests.tools import require_tool

RETRY_SECONDS_IN_TESTS = 0.2  # the conftest's fast_retry
BY_UNIT = ("      - {name: journal_entries_total, type: counter,"
           " labels: [{unit: _SYSTEMD_UNIT}, {priority: PRIORITY}]}\n")


def journal_config(directory, metrics: str = BY_UNIT, extra: str = "", start_at: str = "beginning") -> str:
    return (f"journal:\n  - name: system\n    directory: {directory}\n    start_at: {start_at}\n{extra}"
            f"    metrics:\n{metrics}")


def parse(text: str):
    config, _ = parse_config(load_text(text, "agent.yaml"), "agent.yaml")
    return config


class Running:
    """A journal source running on the test's loop, read through the rendered exposition."""

    def __init__(self, config_text: str, context):
        self.store = Store()
        self.source = build_source(self.store, context, parse(config_text).of_kind("journal")[0], "journal")
        self.task = asyncio.create_task(self.source.run())

    def page(self) -> Exposition:
        return render_store(self.store)

    def by_unit(self) -> dict[tuple[str, str], float]:
        return {(s.labels["unit"], s.labels["priority"]): s.value for s in self.page().find("journal_entries_total")}

    def count(self, name: str, **labels: str) -> float:
        return self.page().value(name, source="system", **labels) or 0

    async def wait(self, check, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            assert time.monotonic() < deadline, "timed out"
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


async def test_entries_are_counted_by_their_fields_and_followed(journal, context):
    journal.write(entry(), entry(priority=3), entry("sshd.service", 3), entry("sshd.service"), entry("cron.service"))
    run = Running(journal_config(journal.directory), context)
    await run.wait(lambda: run.count("kpi_agent_log_lines_total") == 5)
    assert run.by_unit() == {("nginx.service", "6"): 1, ("nginx.service", "3"): 1, ("sshd.service", "3"): 1,
                             ("sshd.service", "6"): 1, ("cron.service", "6"): 1}
    journal.write(entry(priority=3), entry(priority=3))  # while the source follows the journal
    await run.wait(lambda: run.by_unit().get(("nginx.service", "3")) == 3)
    await asyncio.sleep(0.3)
    assert sum(run.by_unit().values()) == 7
    assert run.count("kpi_agent_source_collection_errors_total", kind="journal") == 0
    await run.stop()


async def test_label_sets_expire_while_the_journal_is_quiet(journal, context):
    """expire_after counts from the last entry: a unit that stops logging loses its series with nothing else
    written to the journal (journalctl then writes nothing for the source to wake on)."""
    metrics = ("      - {name: journal_entries_total, type: counter, labels: [{unit: _SYSTEMD_UNIT}],"
               " expire_after: 1s}\n")
    journal.write(entry(), entry("sshd.service"))
    run = Running(journal_config(journal.directory, metrics=metrics), context)
    await run.wait(lambda: run.count("kpi_agent_log_lines_total") == 2)
    assert len(run.page().find("journal_entries_total")) == 2
    await run.wait(lambda: run.page().find("journal_entries_total") == [], timeout=4)
    assert run.page().value("kpi_agent_log_series_expired_total", metric="journal_entries_total") == 2
    await run.stop()


async def test_units_and_matches_select_entries(journal, context):
    journal.write(entry(), entry(priority=2), entry("sshd.service", 3), entry("sshd.service", 6),
                  entry("cron.service", 1), entry(priority=0, SYSLOG_IDENTIFIER="other"))
    extra = ("    units: [nginx.service, sshd.service]\n"
             "    matches: {PRIORITY: [0, 1, 2, 3], SYSLOG_IDENTIFIER: [nginx, sshd]}\n")
    run = Running(journal_config(journal.directory, extra=extra), context)
    await run.wait(lambda: run.count("kpi_agent_log_lines_total") == 2)
    await asyncio.sleep(0.3)
    assert run.by_unit() == {("nginx.service", "2"): 1, ("sshd.service", "3"): 1}
    await run.stop()


async def test_message_formats_and_binary_messages(journal, context):
    metrics = ("      - {name: ssh_failed_logins_total, type: counter, labels: [user, {unit: _SYSTEMD_UNIT}]}\n")
    extra = "    format: regex\n    pattern: 'Failed password for (?P<user>\\S+) from (?P<ip>\\S+)'\n"
    journal.write(entry("sshd.service", message="Failed password for root from 10.0.0.1 port 22"),
                  entry("sshd.service", message="Accepted publickey for deploy from 10.0.0.2"),
                  entry("sshd.service", message=b"Failed password for r\xffoot from 10.0.0.3"),  # not UTF-8
                  entry("sshd.service", message="Failed password for root\nfrom 10.0.0.4"))  # a newline in it
    run = Running(journal_config(journal.directory, metrics=metrics, extra=extra), context)
    await run.wait(lambda: run.count("kpi_agent_log_lines_total") == 4)
    failed = {(s.labels["user"], s.labels["unit"]): s.value for s in run.page().find("ssh_failed_logins_total")}
    assert failed == {("root", "sshd.service"): 1, ("r\ufffdoot", "sshd.service"): 1}
    assert run.count("kpi_agent_log_lines_unmatched_total") == 2
    await run.stop()

    metrics = ("      - {name: app_requests_total, type: counter, labels: [http.status]}\n"
               "      - {name: app_seconds, type: histogram, value: took, buckets: [0.1, 1]}\n")
    journal.write(entry("app.service", message=json.dumps({"http": {"status": 200}, "took": 0.05})),
                  entry("app.service", message=json.dumps({"http": {"status": 500}, "took": 2})),
                  entry("app.service", message="not json"))
    # same source name, other units: the saved cursor is an entry these filters do not select (journalctl 252's
    # --after-cursor would then skip the first entry after it)
    extra = "    format: json\n    units: [app.service]\n"
    run = Running(journal_config(journal.directory, metrics=metrics, extra=extra), context)
    await run.wait(lambda: run.count("kpi_agent_log_lines_total") == 3)
    assert run.page().by("app_requests_total", "http_status") == {"200": 1, "500": 1}
    assert run.page().value("app_seconds_bucket", le="0.1") == 1 and run.page().value("app_seconds_count") == 2
    assert run.count("kpi_agent_log_lines_malformed_total") == 1
    await run.stop()


async def test_lines_journalctl_gives_that_are_not_json_are_each_counted_once(tmp_path, context, monkeypatch):
    """A journalctl that writes something other than JSON objects (a wrapper, a broken build): every such line
    is counted as malformed exactly once, in a chunk that holds nothing else too."""
    fake = tmp_path / "bin" / "journalctl"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\nprintf 'not json\\n[1]\\n\\n'\nexec sleep 30\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")
    run = Running(journal_config(tmp_path), context)
    await run.wait(lambda: run.count("kpi_agent_log_lines_total") == 3)
    await asyncio.sleep(0.2)
    assert run.count("kpi_agent_log_lines_malformed_total") == 3
    assert run.count("kpi_agent_log_records_total") == 0
    await run.stop()


async def test_start_at_end_skips_the_history(journal, context):
    journal.write(entry(), entry())
    run = Running(journal_config(journal.directory, start_at="end"), context)
    await asyncio.sleep(1.0)  # journalctl is running and has printed nothing
    assert run.by_unit() == {}
    journal.write(entry(priority=4))
    await run.wait(lambda: run.by_unit() == {("nginx.service", "4"): 1})
    await run.stop()


async def test_restart_resumes_after_the_saved_cursor(journal, context, tmp_path):
    positions_file = tmp_path / "positions.json"
    journal.write(*[entry()] * 20)
    positions = use_positions(context, str(positions_file))
    run = Running(journal_config(journal.directory), context)
    await run.wait(lambda: run.by_unit() == {("nginx.service", "6"): 20})
    await run.stop()
    positions.flush()
    assert json.loads(positions_file.read_text())["cursors"]["system"].startswith("s=")

    journal.write(*[entry(priority=3)] * 7)  # written while the agent is down
    positions = use_positions(context, str(positions_file))
    again = Running(journal_config(journal.directory), context)
    await again.wait(lambda: again.by_unit() == {("nginx.service", "3"): 7})
    await asyncio.sleep(0.5)
    assert again.by_unit() == {("nginx.service", "3"): 7}  # nothing before the cursor, nothing lost
    await again.stop()


async def test_a_new_journal_file_in_the_directory_is_followed(journal, context):
    journal.write(entry(), file="system.journal")
    run = Running(journal_config(journal.directory), context)
    await run.wait(lambda: run.by_unit() == {("nginx.service", "6"): 1})
    journal.write(entry(priority=3), file="system@0000000000000001-0000000000000002.journal")  # as journald rotates
    journal.write(entry(priority=2), file="system.journal")
    await run.wait(lambda: run.by_unit() == {("nginx.service", "6"): 1, ("nginx.service", "3"): 1,
                                             ("nginx.service", "2"): 1})
    await run.stop()


async def test_journal_files_instead_of_a_directory(journal, context):
    journal.write(entry(), file="a.journal")
    journal.write(entry(priority=3), file="b.journal")
    extra = f"    files: ['{journal.directory}/b.journal']\n"
    run = Running(journal_config(journal.directory, extra=extra).replace(f"    directory: {journal.directory}\n", ""),
                  context)
    await run.wait(lambda: run.by_unit() == {("nginx.service", "3"): 1})
    journal.write(entry(priority=2), file="b.journal")
    await run.wait(lambda: run.by_unit() == {("nginx.service", "3"): 1, ("nginx.service", "2"): 1})
    await run.stop()


async def test_a_missing_journal_is_an_error_until_it_appears(journal, context):
    journal.directory.rmdir()
    run = Running(journal_config(journal.directory), context)
    await run.wait(lambda: run.count("kpi_agent_source_collection_errors_total", kind="journal") >= 2)
    journal.directory.mkdir()
    journal.write(entry())
    await run.wait(lambda: run.by_unit() == {("nginx.service", "6"): 1})
    await run.stop()


@pytest.mark.slow
def test_sigkill_then_restart_loses_and_doubles_nothing(journal, tmp_path, start_agent):
    positions = tmp_path / "positions.json"
    config = tmp_path / "agent.yaml"
    config.write_text(journal_config(journal.directory) + f"positions_file: {positions}\n")
    journal.write(*[entry()] * 20)

    def entries(base: str, priority: str) -> float | None:
        return scrape(base + "/metrics").value("journal_entries_total", unit="nginx.service", priority=priority)

    process, base = start_agent(config)
    wait_until(lambda: entries(base, "6") == 20)
    newest = [require_tool("journalctl"), f"--directory={journal.directory}", "--output=json", "--lines=1"]
    last = json.loads(subprocess.run(newest, capture_output=True, text=True, check=True).stdout)
    wait_until(lambda: positions.exists() and json.loads(positions.read_text())["cursors"].get("system") ==
               last["__CURSOR"], timeout=15, what="the last entry's cursor to be saved")
    children = subprocess.run(["ps", "-o", "pid=", "--ppid", str(process.pid)], capture_output=True,
                              text=True).stdout.split()
    assert len(children) == 1  # journalctl
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)
    wait_until(lambda: subprocess.run(["kill", "-0", children[0]], capture_output=True).returncode != 0,
               what="journalctl to die with the agent")
    journal.write(*[entry(priority=3)] * 7)
    _, base = start_agent(config)
    wait_until(lambda: entries(base, "3") == 7)
    time.sleep(0.5)
    assert entries(base, "6") is None  # nothing before the saved cursor was read again
    assert entries(base, "3") == 7


async def test_stopping_as_journalctl_dies_of_the_same_signal_stops_the_source(journal, context, monkeypatch):
    """Issue 18.6: SIGTERM to the process group kills journalctl and stops the agent at once. The source's task
    is cancelled in the loop iteration in which journalctl's output ends: the cancellation must not be lost
    (asyncio.wait_for on Python 3.11 returned the read's empty result instead, and the source restarted
    journalctl and ran on)."""
    started: list[asyncio.subprocess.Process] = []
    spawn = asyncio.create_subprocess_exec

    async def recorded(*args, **kwargs):
        started.append(await spawn(*args, **kwargs))
        return started[-1]

    monkeypatch.setattr(asyncio, "create_subprocess_exec", recorded)
    journal.write(entry())
    run = Running(journal_config(journal.directory), context)
    await run.wait(lambda: run.count("kpi_agent_log_lines_total") == 1)
    journalctl = started[0]
    loop = asyncio.get_running_loop()
    cancelled = loop.create_future()

    def cancel_once_output_ends() -> None:  # checked once per loop iteration
        if journalctl.stdout.at_eof():
            run.task.cancel()
            cancelled.set_result(None)
        else:
            loop.call_soon(cancel_once_output_ends)

    journalctl.send_signal(signal.SIGTERM)
    loop.call_soon(cancel_once_output_ends)
    await cancelled
    done, _ = await asyncio.wait([run.task], timeout=RETRY_SECONDS_IN_TESTS * 10)
    assert done, "the source ignored its cancellation"
    assert len(started) == 1, "journalctl was started again after the source was cancelled"


@pytest.mark.slow
def test_sigterm_to_the_process_group_stops_the_agent_every_time(journal, tmp_path):
    """The whole group signalled, as a service manager or a terminal does: journalctl dies of the signal while
    the agent stops; every one of several rounds must end within seconds."""
    config = tmp_path / "agent.yaml"
    config.write_text(journal_config(journal.directory))
    journal.write(*[entry()] * 5)
    for _ in range(5):
        port = free_port()
        agent = subprocess.Popen([sys.executable, "-m", "agent", "run", "--config.file", str(config),
                                  "--web.listen-address", f"127.0.0.1:{port}"], stderr=subprocess.DEVNULL,
                                 start_new_session=True)
        try:
            url = f"http://127.0.0.1:{port}/metrics"
            wait_until(lambda url=url: scrape(url).value("journal_entries_total", unit="nginx.service",
                                                         priority="6") == 5, what="entries counted")
            os.killpg(agent.pid, signal.SIGTERM)
            assert agent.wait(timeout=15) == 0
        finally:
            if agent.poll() is None:
                os.killpg(agent.pid, signal.SIGKILL)
                agent.wait()


def test_the_journalctl_command_follows_what_the_config_selects():
    config = parse(journal_config("/var/log/journal", extra="    units: [a.service]\n    matches: {PRIORITY: [0, 1]}\n"
                                  "    format: regex\n    pattern: '(?P<word>\\w+)'\n",
                                  metrics="      - {name: x_total, type: counter, labels: [word, PRIORITY]}\n")
                   ).of_kind("journal")[0]
    command = journalctl_command(config, ("word", "PRIORITY"), None)
    assert command == ["journalctl", "--output=json", "--follow", "--no-pager", "--quiet",
                       "--output-fields=MESSAGE,PRIORITY", "--directory=/var/log/journal", "--unit=a.service",
                       "--no-tail", "PRIORITY=0", "PRIORITY=1"]
    assert "--cursor=s=1" in journalctl_command(config, (), "s=1")


def test_config_errors_name_file_line_and_field():
    with pytest.raises(ConfigError) as info:
        parse("journal:\n"
              "  - name: j\n"
              "    directory: relative/dir\n"
              "    files: [/var/log/journal/system.journal]\n"
              "    units: ['bad unit']\n"
              "    matches: {priority: 3}\n"
              "    pattern: '(?P<x>.)'\n"
              "    metrics:\n"
              "      - {name: x_total, type: counter, labels: [{unit: _SYSTEMD_UNIT}], expire_after: soon}\n")
    problems = [str(p) for p in info.value.problems]
    expected = [
        "agent.yaml:3: journal[0].directory: 'relative/dir' is not an absolute path",
        "agent.yaml:4: journal[0].files: journalctl reads a directory or files, not both",
        "agent.yaml:5: journal[0].units: item 0: 'bad unit' is not a unit name",
        "agent.yaml:6: journal[0].matches: 'priority' is not a journal field name",
        "agent.yaml:7: journal[0].pattern: pattern applies to format regex: set format: regex",
        "agent.yaml:9: journal[0].metrics[0].expire_after: 'soon' is not a duration",
    ]
    for line in expected:
        assert any(p.startswith(line) for p in problems), (line, problems)
