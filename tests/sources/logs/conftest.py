
import pytest

from agent.config.agent import parse_config
from agent.config.yaml import load_text
from agent.sources.logs import source as source_module
from agent.sources.logs import tailer

NGINX_PATTERN = (r'^(?P<ip>\S+) \S+ \S+ \[[^\]]+\] "(?P<method>[A-Z]+) (?P<path>\S+) [^"]*" (?P<status>\d{3}) '
                 r'(?P<bytes>\d+) .* (?P<rt>[0-9.]+)$')


def nginx_line(method: str = "GET", status: int = 200, size: int = 512, rt: float = 0.042, path: str = "/") -> str:
    return (f'10.0.0.1 - - [24/Nov/2026:10:00:00 +0000] "{method} {path} HTTP/1.1" {status} {size} "-" "curl/8" '
            f'{rt}\n')


def log_config(paths: list[str], start_at: str = "beginning", extra: str = "", metrics: str | None = None,
               fmt: str = "regex") -> str:
    metrics = metrics or (
        "      - {name: http_requests_total, type: counter, labels: [method, status]}\n"
        "      - {name: http_response_bytes_total, type: counter, value: bytes, labels: [method]}\n"
        "      - {name: http_server_errors_total, type: counter, match: {status: '5..'}}\n"
        "      - {name: http_request_duration_seconds, type: histogram, value: rt, labels: [method],"
        " buckets: [0.01, 0.1, 1]}\n")
    pattern = f"    pattern: '{NGINX_PATTERN}'\n" if fmt == "regex" else ""
    return (f"logs:\n  - name: nginx\n    paths: {paths}\n    start_at: {start_at}\n    format: {fmt}\n"
            f"{pattern}{extra}    metrics:\n{metrics}")


def parse(text: str):
    config, _ = parse_config(load_text(text, "agent.yaml"), "agent.yaml")
    return config


@pytest.fixture(autouse=True)
def fast_polling(monkeypatch):
    monkeypatch.setattr(source_module, "POLL_MIN", 0.01)
    monkeypatch.setattr(source_module, "POLL_MAX", 0.05)
    monkeypatch.setattr(tailer, "DRAIN_GRACE", 0.2)

