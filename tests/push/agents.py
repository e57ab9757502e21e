"""Agent processes for the push tests: started with a config, restarted, SIGKILLed, read through /metrics."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

from tests.helpers import Exposition, fetch, free_port, scrape, stop_processes, wait_until

# 40 nginx lines: two methods, three statuses, a histogram of request times
NGINX_PATTERN = r'^(?P<ip>\S+) \S+ \S+ \[[^\]]+\] "(?P<method>[A-Z]+) (?P<path>[^\s?]+)\S* [^"]*" ' \
                r'(?P<status>\d{3}) (?P<bytes>\d+) (?P<rt>[0-9.]+)$'


def nginx_lines(count: int = 40) -> str:
    lines = []
    for i in range(count):
        method = "GET" if i % 3 else "POST"
        status = ("200", "404", "503")[i % 3 if i % 5 else 0]
        lines.append(f'10.0.0.{i % 7} - - [06/Dec/2026:11:00:00 +0000] "{method} /p/{i % 4} HTTP/1.1" {status} '
                     f"{100 + i} {0.003 * i:.3f}\n")
    return "".join(lines)


def log_source(path: Path, name: str = "nginx") -> str:
    return json.dumps({
        "name": name, "paths": [str(path)], "start_at": "beginning", "format": "regex", "pattern": NGINX_PATTERN,
        "metrics": [
            {"name": "http_requests_total", "type": "counter", "labels": ["method", "status"]},
            {"name": "http_response_bytes_total", "type": "counter", "value": "bytes"},
            {"name": "http_request_duration_seconds", "type": "histogram", "value": "rt", "labels": ["method"],
             "buckets": [0.01, 0.05, 0.1]},
        ]})


class AgentProcess:
    def __init__(self, config: Path, *args: str):
        self.config = config
        self.args = args
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        self.log = config.with_suffix(f".{self.port}.log")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> AgentProcess:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "agent", "run", "--config.file", str(self.config), "--web.listen-address",
                 f"127.0.0.1:{self.port}", *self.args], stdout=log, stderr=subprocess.STDOUT)
        wait_until(lambda: fetch(f"{self.url}/-/ready")[0] == 200, timeout=30,
                   what=f"the agent to be ready (log: {self.log})")
        return self

    def metrics(self) -> Exposition:
        return scrape(f"{self.url}/metrics")

    def remote_write(self) -> list[dict]:
        return json.loads(fetch(f"{self.url}/api/v1/remote_write")[1])

    def reload(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGHUP)

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait()
        self.process = None

    def stop(self) -> None:
        if self.process is not None:
            stop_processes([self.process])
            self.process = None

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")
