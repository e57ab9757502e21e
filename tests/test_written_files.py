"""Files the agent writes (issue 18.3): nobody who can write their directory can make the agent, often root,
write anywhere else, and nobody else can read them.

A real agent keeps its positions file in a directory where someone planted a symlink at the name the agent
used to write its temporary file to; the symlink's target must stay untouched.
"""

import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

from agent.config.files import write_atomically
from tests.helpers import fetch, free_port, scrape, wait_until

ROOT = Path(__file__).resolve().parent.parent
LOG_CONFIG = """\
positions_file: {positions}
logs:
  - name: app
    paths: [{log}]
    start_at: beginning
    format: regex
    pattern: '^(?P<status>\\d+)$'
    metrics:
      - {{name: app_lines_total, type: counter, labels: [status], help: Lines by status}}
"""


def test_a_symlink_planted_at_the_positions_temp_name_is_never_followed(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("root's precious file\n")
    state = tmp_path / "state"  # the directory an attacker can write to
    state.mkdir()
    positions = state / "positions.json"
    log = tmp_path / "app.log"
    lines = "200\n200\n500\n"
    log.write_text(lines)
    config = tmp_path / "agent.yaml"
    config.write_text(LOG_CONFIG.format(positions=positions, log=log))
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "agent", "run", "--config.file", str(config),
                                "--web.listen-address", f"127.0.0.1:{port}"], stderr=subprocess.PIPE, text=True)
    try:
        planted = state / f".positions.json.{process.pid}.tmp"  # the name the agent wrote through before
        planted.symlink_to(victim)
        wait_until(lambda: fetch(f"http://127.0.0.1:{port}/-/ready")[0] == 200, what="agent ready")
        wait_until(lambda: scrape(f"http://127.0.0.1:{port}/metrics").value("app_lines_total", status="500") == 1,
                   what="the log counted")
        process.send_signal(signal.SIGTERM)  # the agent writes its positions as it stops
        _, stderr = process.communicate(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, stderr
    assert victim.read_text() == "root's precious file\n"
    assert planted.is_symlink() and os.readlink(planted) == str(victim)  # left as it was found
    assert f'"offset": {len(lines)}' in positions.read_text()
    assert stat.S_IMODE(positions.stat().st_mode) == 0o600
    assert not positions.is_symlink()
    assert "cannot write positions file" not in stderr
    assert [p.name for p in state.iterdir() if p.name.endswith(".tmp")] == [planted.name]  # no leftovers


def test_a_symlink_at_the_file_itself_is_replaced_never_followed(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    path = tmp_path / "state.json"
    path.symlink_to(victim)
    write_atomically(path, b"{}")
    assert victim.read_text() == "precious\n"
    assert not path.is_symlink() and path.read_bytes() == b"{}"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_failed_write_leaves_the_old_file_and_no_temporary_file(tmp_path, monkeypatch):
    path = tmp_path / "state.json"
    write_atomically(path, b"old")

    def full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    try:
        write_atomically(path, b"new")
    except OSError as exc:
        assert exc.errno == 28
    else:
        raise AssertionError("the write should have failed")
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_rules_generate_replaces_a_planted_symlink_and_leaves_its_target_alone(tmp_path):
    """The rule files Prometheus reads: written as the umask allows (Prometheus may run as another user), but
    through the same exclusive temporary file, so a symlink planted at the output name is replaced, not
    followed to another generated file elsewhere."""
    elsewhere, out = tmp_path / "elsewhere", tmp_path / "out"

    def generate(directory, *flags: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "agent", "rules", "generate", str(ROOT / "rules"), "--out",
                               str(directory), *flags], capture_output=True, text=True, timeout=120)

    assert generate(elsewhere).returncode == 0
    (victim,) = elsewhere.glob("*.rules.yml")
    before = victim.read_text()
    out.mkdir()
    (out / victim.name).symlink_to(victim)
    result = generate(out, "--interval", "1m")
    assert result.returncode == 0, result.stderr
    assert victim.read_text() == before
    written = out / victim.name
    assert not written.is_symlink() and "interval: 1m" in written.read_text()
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(written.stat().st_mode) == 0o666 & ~umask


def test_the_remote_write_buffer_follows_no_link_planted_in_its_directory(tmp_path):
    """The buffer's directory (remote_write_buffer) with links planted at the names the buffer writes and reads:
    the writability probe and the cursor (then replaced), and, in a second directory, the segments (then the
    buffer says it cannot use the disk and keeps the records in memory). No target is written, truncated, or
    read into a record that would be sent."""
    from agent.push.buffer import Buffer, Record

    victim = tmp_path / "victim"
    victim.write_bytes(b"root's precious file\n")
    records = [Record(bytes([n]) * 100, 10, 1000 * n) for n in range(1, 4)]
    for planted in ((".writable", "cursor", f".cursor.{os.getpid()}.tmp", "cursor.tmp"),
                    tuple(f"{number:020d}.seg" for number in range(3))):
        directory = tmp_path / planted[0].strip(".")
        directory.mkdir()
        for name in planted:
            (directory / name).symlink_to(victim)
        buffer = Buffer(directory, 10 << 20, 1000)
        buffer.open()
        for record in records:
            buffer.append(record)
        sent = buffer.read(100)
        buffer.ack(sent)
        buffer.close()
        assert victim.read_bytes() == b"root's precious file\n"
        assert [record for _, record in sent] == records  # ours, and only ours
        if "cursor" in planted:
            cursor = directory / "cursor"
            assert not cursor.is_symlink() and stat.S_IMODE(cursor.stat().st_mode) == 0o600
        else:
            assert "Too many levels of symbolic links" in (buffer.disk_problem or ""), buffer.disk_problem
