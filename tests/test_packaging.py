"""Installing kpi-agent as the README says (issue 19.7): the package builds with metadata setuptools will keep
accepting, and `scripts/setup.sh` without --with-tools installs what running needs and nothing of the tests."""

import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _checkout_copy(target: Path) -> Path:
    """The working tree's files (tracked and new, not ignored) copied to ``target``: a fresh clone, with no venv."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


@pytest.mark.slow
def test_the_package_builds_with_an_spdx_license_and_no_deprecated_metadata(tmp_path):
    """setuptools refuses `license = {text = ...}` after 2027-02-18; until then it warns while building, which
    is what a user installing the package sees."""
    copy = _checkout_copy(tmp_path / "src")
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(tmp_path / "dist"),
                             str(copy)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    assert "project.license` as a TOML table is deprecated" not in output
    assert "SetuptoolsDeprecationWarning" not in output
    (wheel,) = (tmp_path / "dist").glob("kpi_agent-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        metadata = next(archive.read(n).decode() for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        licenses = [n for n in archive.namelist() if n.endswith(".dist-info/licenses/LICENSE")]
    assert "License-Expression: Apache-2.0" in metadata
    assert "License-File: LICENSE" in metadata and licenses


@pytest.mark.slow
def test_setup_without_tools_installs_what_running_needs_and_nothing_of_the_tests(tmp_path):
    """The README's "run it" command: `bash scripts/setup.sh`, then `kpi-agent run`."""
    copy = _checkout_copy(tmp_path / "clone")
    result = subprocess.run(["bash", "scripts/setup.sh"], cwd=copy, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stderr
    assert "kpi-agent is set up" in result.stdout
    installed = subprocess.run([str(copy / ".venv/bin/python"), "-m", "pip", "list", "--format", "freeze"],
                               capture_output=True, text=True, check=True).stdout
    names = {line.split("==")[0].lower().replace("_", "-") for line in installed.splitlines()}
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    tools = {"pytest", "pytest-asyncio", "pytest-xdist", "hypothesis", "aiosmtpd", "ruff", "mypy", "types-pyyaml",
             "grpcio", "grpcio-health-checking", "prometheus-client", "pypdf"}
    declared = {req.split(">")[0].split("=")[0].strip().lower() for reqs in extras.values() for req in reqs}
    assert tools <= declared  # the list above is what the extras hold (pillow also comes with matplotlib)
    assert not tools & names, sorted(tools & names)
    version = subprocess.run([str(copy / ".venv/bin/kpi-agent"), "--version"], capture_output=True, text=True)
    assert version.returncode == 0 and "kpi-agent" in version.stdout
    check = subprocess.run([str(copy / ".venv/bin/kpi-agent"), "check", "--config.file", "deploy/agent.yaml"],
                           cwd=copy, capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
