"""What a new user's first mistakes get (issue 19.5): a log path that matches no file, an empty config, a
misspelt key and a tab in the indentation each get words, in `check`, in `run`'s log and on the status page."""

import asyncio
import signal
import subprocess
import sys
import threading

from agent.config.agent import load_config
from agent.runtime.agent import Agent
from tests.browser import Browser
from tests.helpers import free_port

AGENT = [sys.executable, "-m", "agent"]


def check(path) -> subprocess.CompletedProcess:  # noqa: ANN001 - a Path
    return subprocess.run([*AGENT, "check", "--config.file", str(path)], capture_output=True, text=True,
                          timeout=60)


def run_until_started(path) -> str:  # noqa: ANN001 - a Path
    """`kpi-agent run` on ``path``: its log until the agent has started (then it is stopped)."""
    process = subprocess.Popen([*AGENT, "run", "--config.file", str(path), "--web.listen-address",
                                f"127.0.0.1:{free_port()}"], stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    timer = threading.Timer(60, process.kill)
    timer.start()
    try:
        for line in process.stderr:  # type: ignore[union-attr]
            lines.append(line)
            if 'msg="agent started"' in line:
                break
        process.send_signal(signal.SIGTERM)
        lines += process.communicate(timeout=30)[1].splitlines(keepends=True)
    finally:
        timer.cancel()
        if process.poll() is None:
            process.kill()
            process.communicate()
    return "".join(lines)


def test_a_misspelt_key_says_which_one_was_meant(tmp_path):
    config = tmp_path / "agent.yaml"
    config.write_text("global:\n  intervl: 30s\nhttp:\n  - name: a\n    url: http://127.0.0.1:1/\n    timout: 5s\n"
                      "    valid_status_code: [200]\n    colour: blue\n")
    result = check(config)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"{config}:2: global.intervl: unknown field; did you mean 'interval'?",
        f"{config}:6: http[0].timout: unknown field; did you mean 'timeout'?",
        f"{config}:7: http[0].valid_status_code: unknown field; did you mean 'valid_status_codes'?",
        f"{config}:8: http[0].colour: unknown field",  # nothing close: no guess
    ]


def test_a_tab_in_the_indentation_is_named(tmp_path):
    for text, line in (("global:\n\tinterval: 30s\n", 2), ("global:\n  \tinterval: 30s\n", 2),
                       ("http:\n  - name: a\n\t  url: http://127.0.0.1:1/\n", 3)):
        config = tmp_path / "agent.yaml"
        config.write_text(text)
        result = check(config)
        assert result.returncode == 1
        assert result.stderr.strip() == (f"{config}:{line}: invalid YAML: this line is indented with a tab; YAML "
                                         "indents with spaces only"), text


def test_an_empty_config_is_a_warning_in_check_and_in_the_log(tmp_path):
    empty, sourceless = tmp_path / "empty.yaml", tmp_path / "global-only.yaml"
    empty.write_text("# to be written\n")
    sourceless.write_text("global: {interval: 30s}\n")
    result = check(empty)
    assert result.returncode == 0 and f"{empty}: OK (no sources)" in result.stdout
    assert result.stderr.strip() == (f"{empty}: warning: the file is empty: the agent collects nothing and serves "
                                     "only its own metrics (see `kpi-agent example-config` for a start)")
    assert f"{sourceless}: warning: no source is configured: the agent collects nothing" in check(sourceless).stderr
    log = run_until_started(empty)
    assert 'level=warn logger=agent msg="' + f"{empty}: warning: the file is empty" in log


def test_a_log_path_that_matches_no_file_is_said_in_check_and_in_the_log(tmp_path):
    (tmp_path / "app.log").write_text("")
    config = tmp_path / "agent.yaml"
    config.write_text(f"logs:\n  - name: app\n    paths: ['{tmp_path}/app.log', '{tmp_path}/ap.log', "
                      f"'{tmp_path}/nginx/*.log']\n    format: logfmt\n"
                      "    metrics: [{name: lines_total, type: counter}]\n")
    result = check(config)
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [
        f"{config}:2: warning: logs[0].paths: '{tmp_path}/ap.log' matches no file now; the agent reads it once one "
        "exists",
        f"{config}:2: warning: logs[0].paths: '{tmp_path}/nginx/*.log' matches no file now; the agent reads it "
        "once one exists"]
    log = run_until_started(config)
    assert log.count('msg="no file matches the path; reading it once one does"') == 2, log
    assert f"path={tmp_path}/ap.log" in log and f"path={tmp_path}/nginx/*.log" in log


async def test_a_log_source_reading_no_file_is_failing_on_the_status_page(tmp_path, chromium):
    """Before: "0 failing" in green, the row "not yet"."""
    config = tmp_path / "agent.yaml"
    config.write_text(f"logs:\n  - name: app\n    paths: ['{tmp_path}/typo.log']\n    format: logfmt\n"
                      "    metrics: [{name: lines_total, type: counter}]\n")
    agent = Agent(lambda: load_config(config)[0], "127.0.0.1:0")
    await agent.start()
    try:
        await asyncio.sleep(0.3)
        async with Browser(chromium) as browser:
            page = await browser.new_page()
            await page.goto(f"http://127.0.0.1:{agent.bound_port}/")
            summary = await page.evaluate("[...document.querySelectorAll('.meta b')].map(b => [b.innerText, "
                                          "getComputedStyle(b).color])")
            row = await page.evaluate("[...document.querySelector('tr[data-source=app]').cells].map(c => "
                                      "[c.innerText, c.firstElementChild ? getComputedStyle(c.firstElementChild)"
                                      ".color : ''])")
            listing = await page.evaluate("document.querySelector('tr.filerow').innerText")
        assert page.errors == []
        assert summary == [["1 failing", "rgb(179, 38, 30)"]], summary  # the page's red
        assert row[2] == ["no file", "rgb(179, 38, 30)"], row
        assert listing.strip() == f"no file matches {tmp_path}/typo.log"
    finally:
        await agent.stop()
