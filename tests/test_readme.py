"""The README's YAML is what users copy: every ```yaml block parses, and every complete agent config and KPI
spec in it passes `kpi-agent check` / `kpi-agent rules check`, as a user would run them on the copied text."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).parents[1]
CONFIG_KEYS = {"global", "positions_file", "http", "logs", "journal", "remote_write", "remote_write_buffer",
               "external_labels"}
# Paths of the user's machine (certificates, secrets, log files) that this one does not have
MACHINE_SPECIFIC = re.compile(r"does not exist or is not a file")


def yaml_blocks() -> list[tuple[int, str]]:
    """(line, text) of every ```yaml block of README.md."""
    text = (ROOT / "README.md").read_text()
    return [(text[:m.start()].count("\n") + 2, m.group(1))
            for m in re.finditer(r"^```yaml\n(.*?)^```", text, re.MULTILINE | re.DOTALL)]


def _elided(node) -> bool:
    """Whether a block leaves things out (``http: [...]``): a reference, not a file to copy."""
    if isinstance(node, dict):
        return any(_elided(v) for v in node.values())
    if isinstance(node, list):
        return "..." in node or any(_elided(v) for v in node)
    return False


def complete_documents(kind: str) -> list[tuple[int, str]]:
    found = []
    for line, text in yaml_blocks():
        document = yaml.safe_load(text)
        if not isinstance(document, dict) or _elided(document):
            continue
        if kind == "spec" and {"service", "kpis"} <= set(document):
            found.append((line, text))
        if kind == "config" and set(document) <= CONFIG_KEYS:
            found.append((line, text))
    return found


def test_every_yaml_block_parses():
    blocks = yaml_blocks()
    assert len(blocks) >= 6
    for line, text in blocks:
        try:
            yaml.safe_load(text)
        except yaml.YAMLError as exc:
            pytest.fail(f"README.md:{line}: the YAML block does not parse: {exc}")


def test_every_complete_agent_config_passes_check(tmp_path):
    configs = complete_documents("config")
    assert len(configs) >= 4  # HTTP, discovery, logs, journal
    for line, text in configs:
        path = tmp_path / f"readme-{line}.yaml"
        path.write_text(text)
        result = subprocess.run([sys.executable, "-m", "agent", "check", "--config.file", str(path)],
                                capture_output=True, text=True, timeout=60)
        problems = [p for p in result.stderr.splitlines() if p.startswith(str(path))]
        unexpected = [p for p in problems if not MACHINE_SPECIFIC.search(p) and ": warning: " not in p]
        assert not unexpected, f"README.md:{line}: the config fails `kpi-agent check`:\n" + "\n".join(unexpected)
        assert result.returncode == 0 or problems, result.stderr


def test_every_complete_kpi_spec_passes_rules_check(promtool, tmp_path):
    specs = complete_documents("spec")
    assert specs
    for line, text in specs:
        path = tmp_path / f"readme-{line}.yaml"
        path.write_text(text)
        result = subprocess.run([sys.executable, "-m", "agent", "rules", "check", str(path)],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, f"README.md:{line}: the spec fails `kpi-agent rules check`:\n{result.stderr}"
