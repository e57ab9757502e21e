"""Every call of promtool: it judges whether the PromQL a user wrote parses, whether the generated rule files
load, and runs the generated unit tests. Its failures are mapped back to the spec's file, line and field."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from agent.config.problems import Problem
from agent.kpi.model import Expression, Kpi, ServiceSpec
from agent.kpi.render import render_prometheus, to_yaml

_PROMTOOL_RULE_RE = re.compile(r"rule (\d+),")


class PromtoolMissing(RuntimeError):
    pass


def promtool_path() -> str:
    path = shutil.which("promtool")
    if not path:
        raise PromtoolMissing("promtool not found: install Debian's prometheus package (apt-get install prometheus)")
    return path


def check_rules(path: Path) -> subprocess.CompletedProcess:
    """``promtool check rules FILE``."""
    return subprocess.run([promtool_path(), "check", "rules", str(path)], capture_output=True, text=True,
                          timeout=120)


def check_expressions(specs: list[ServiceSpec]) -> list[Problem]:
    """Has promtool parse every expression a user wrote, each as its own rule, and maps failures back to
    the spec's file, line and field."""
    expressions: list[tuple[ServiceSpec, Kpi, Expression]] = [
        (spec, kpi, expression) for spec in specs for kpi in spec.kpis for expression in kpi.expressions]
    if not expressions:
        return []
    rules = [{"record": f"kpi_check_{index}", "expr": expr} for index, (*_, (_, _, expr)) in enumerate(expressions)]
    problems = []
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "expressions.yml"
        path.write_text(to_yaml({"groups": [{"name": "check", "rules": rules}]}))
        result = check_rules(path)
        if result.returncode == 0:
            return []
        for line in (result.stdout + result.stderr).splitlines():
            match = _PROMTOOL_RULE_RE.search(line)
            if not match:
                continue
            spec, _, (field, source_line, _) = expressions[int(match.group(1)) - 1]
            message = re.sub(r'^.*?"kpi_check_\d+": ', "", line)
            problems.append(Problem(spec.file, source_line, field, f"PromQL does not parse: {message}"))
        if not problems:
            problems.append(Problem("promtool", None, "", (result.stdout + result.stderr).strip()))
    return problems


def check_compiled(specs: list[ServiceSpec]) -> list[Problem]:
    """promtool's verdict on the generated files themselves (a failure here is a kpi-agent bug)."""
    problems = []
    with tempfile.TemporaryDirectory() as directory:
        for spec in specs:
            path = Path(directory) / f"{spec.service}.rules.yml"
            path.write_text(render_prometheus(spec, spec.file))
            result = check_rules(path)
            output = (result.stdout + result.stderr).strip()
            if result.returncode != 0 or "warning" in output.lower():
                problems.append(Problem(spec.file, None, "", f"generated rules rejected by promtool: {output}"))
    return problems


def run_unit_tests(jobs: list[tuple[Path, str]],
                   on_done: Callable[[int, subprocess.CompletedProcess, float], None] | None = None,
                   ) -> list[subprocess.CompletedProcess]:
    """``promtool test rules FILE`` for each (directory, file) of ``jobs``, as many at once as there are CPUs
    (each is single-threaded evaluation), started in the order given; ``on_done(index, result, seconds)`` is
    called as each finishes. The results, in the order of ``jobs``."""
    promtool = promtool_path()

    def run(index: int) -> tuple[int, subprocess.CompletedProcess, float]:
        directory, name = jobs[index]
        started = time.monotonic()
        result = subprocess.run([promtool, "test", "rules", name], cwd=directory, capture_output=True, text=True,
                                timeout=1800)
        return index, result, time.monotonic() - started

    results: dict[int, subprocess.CompletedProcess] = {}
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        for future in as_completed([pool.submit(run, index) for index in range(len(jobs))]):
            index, result, seconds = future.result()
            results[index] = result
            if on_done:
                on_done(index, result, seconds)
    return [results[index] for index in range(len(jobs))]
