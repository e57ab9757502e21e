"""Issue 18.1 against a real agent process: a regex that backtracks catastrophically in Python's re, fed the
text that triggers it (a discovered label, a log line, a target_label), must not freeze the agent or `check`;
a Python-only regex feature is refused at load with its file and line."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

from tests.helpers import fetch, free_port, scrape, wait_until

AGENT = [sys.executable, "-m", "agent"]
ATTACK = "a" * 40 + "!"  # Python's re: about 2^40 steps against (a+)+$


def _relabel_config(tmp_path: Path) -> Path:
    (tmp_path / "targets.json").write_text(json.dumps([{"targets": ["127.0.0.1:9"], "labels": {"comment": ATTACK}}]))
    config = tmp_path / "agent.yaml"
    config.write_text(
        "http:\n  - name: fleet\n    interval: 1h\n"
        f"    file_sd_configs: [{{files: ['{tmp_path}/targets.json']}}]\n"
        "    relabel_configs:\n"
        "      - {source_labels: [comment], regex: '(a+)+$', action: keep}\n"
        "logs:\n  - name: app\n"
        f"    paths: ['{tmp_path}/app.log']\n    start_at: beginning\n"
        "    pattern: '^(?P<word>(a+)+)$'\n"
        "    metrics: [{name: words_total, type: counter, labels: [word]}]\n")
    (tmp_path / "app.log").write_text(ATTACK + "\n" + "aaa\n")
    return config


def test_the_relabel_and_log_pattern_attack_neither_freezes_the_agent_nor_check(tmp_path):
    config = _relabel_config(tmp_path)
    # Python's re: hours. The deadlines here are minutes, so that a machine busy with other work (load 18 ran out
    # of 30 s once) never fails a passing agent; a passing run waits no longer.
    checked = subprocess.run([*AGENT, "check", "--config.file", str(config)], capture_output=True, text=True,
                             timeout=120)
    assert checked.returncode == 0, checked.stderr

    port = free_port()
    agent = subprocess.Popen([*AGENT, "run", "--config.file", str(config), "--web.listen-address",
                              f"127.0.0.1:{port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: fetch(f"http://127.0.0.1:{port}/-/healthy")[0] == 200, timeout=120, what="healthy")

        def counted():  # the log source and the discovery run apart: either may come first
            page = scrape(f"http://127.0.0.1:{port}/metrics")
            discovered = sum(page.value("kpi_agent_sd_targets", source="fleet", state=state)
                             for state in ("probed", "other_shard", "dropped", "refused"))
            return page if page.value("kpi_agent_log_lines_total", source="app") == 2 and discovered else None

        page = wait_until(counted, timeout=120, what="both lines read and the target discovered")
        assert page.value("words_total", source="app", word="aaa") == 1
        assert page.value("kpi_agent_log_lines_unmatched_total", source="app") == 1
        assert page.value("kpi_agent_sd_targets", source="fleet", state="dropped") == 1
        assert fetch(f"http://127.0.0.1:{port}/-/healthy")[0] == 200
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(timeout=20) == 0
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()


def test_a_python_only_regex_feature_is_refused_with_file_and_line(tmp_path):
    config = tmp_path / "agent.yaml"
    config.write_text("logs:\n  - name: app\n    paths: [/var/log/app.log]\n"
                      "    pattern: '(?P<user>\\w+)(?=@)'\n"
                      "    metrics: [{name: users_total, type: counter, labels: [user]}]\n"
                      "http:\n  - name: site\n    url: http://127.0.0.1:9/\n"
                      "    fail_if_body_matches_regexp: ['(a)\\1']\n"
                      "  - name: fleet\n    static_configs: [{targets: ['127.0.0.1:9']}]\n"
                      f"    relabel_configs: [{{target_label: {'b' * 30}!, replacement: x}}]\n")
    # Python's re took 20 s for 20 letters and a "!" in target_label, so about 2^10 times that for these 30: a
    # check that backtracks runs out of the two minutes given here, and a busy machine does not fail a passing one
    checked = subprocess.run([*AGENT, "check", "--config.file", str(config)], capture_output=True, text=True,
                             timeout=120)
    assert checked.returncode != 0
    assert f"{config}:4: logs[0].pattern: regular expression '(?P<user>\\\\w+)(?=@)': a lookaround" in checked.stderr
    assert "linear" in checked.stderr
    assert f"{config}:9: http[0].fail_if_body_matches_regexp: item 0: regular expression '(a)\\\\1': a " \
           "backreference" in checked.stderr
    assert f"{config}:12: http[1].relabel_configs[0].target_label: '{'b' * 30}!' is not a label name" \
        in checked.stderr
    assert "Traceback" not in checked.stderr
