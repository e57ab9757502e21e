"""What `kpi-agent run` of a log-only agent loads before its first scrape: every CLI command and every test that
starts an agent pays for each module (README "Performance" of the log source: start-up)."""

import gc

from agent.runtime import heap


def test_the_collector_paused_for_start_resumes_at_the_first_freeze():
    assert gc.isenabled()
    try:
        heap.pause_for_start()
        assert not gc.isenabled()
        with heap.building_long_lived():
            assert not gc.isenabled()
        assert gc.isenabled()
        heap.resume_after_start()  # nothing left to resume
        assert gc.isenabled()
    finally:
        gc.enable()


def test_the_collector_paused_for_a_command_that_built_nothing_resumes_with_the_command():
    try:
        heap.pause_for_start()
        heap.resume_after_start()
        assert gc.isenabled()
        gc.disable()  # paused by someone else: not resumed by the start's pause
        heap.pause_for_start()
        heap.resume_after_start()
        with heap.building_long_lived():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_a_run_refused_in_process_leaves_the_collector_running(tmp_path):
    """`kpi-agent run` pauses the collector before its imports; a flag refused before anything is built (here
    in this process, as CliRunner runs commands) must not leave it paused."""
    from click.testing import CliRunner

    from agent.cli import main

    assert gc.isenabled()
    try:
        result = CliRunner().invoke(main, ["run", "--config.file", str(tmp_path / "agent.yaml"),
                                           "--web.listen-address", "127.0.0.1:99999"])
        assert result.exit_code == 2 and "99999" in result.output
        assert gc.isenabled()
    finally:
        gc.enable()
