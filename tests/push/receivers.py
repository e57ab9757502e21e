"""Real remote_write receivers for the tests, started on loopback: Debian's Prometheus with its receiver
enabled, and Debian's VictoriaMetrics single node. Both read back what they stored, by their own APIs."""

from __future__ import annotations

import base64
import json
import math
import ssl
import subprocess
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tests.helpers import free_port, stop_processes, wait_until
from tests.tools import require_tool

Key = tuple[str, frozenset[tuple[str, str]]]  # metric name, the other labels


@dataclass
class Receiver:
    name: str
    directory: Path
    port: int = 0
    process: subprocess.Popen | None = None
    log: Path = field(init=False)
    extra_args: list[str] = field(default_factory=list)
    auth: tuple[str, str] | None = None  # basic auth the receiver's API asks for
    context: ssl.SSLContext | None = None  # the receiver serves over TLS (its extra_args say how), trusted so

    def __post_init__(self) -> None:
        self.log = self.directory / f"{self.name}.log"

    @property
    def base(self) -> str:
        return f"{'http' if self.context is None else 'https'}://127.0.0.1:{self.port}"

    @property
    def write_url(self) -> str:
        return f"{self.base}/api/v1/write"

    def get(self, path: str, **params: str) -> bytes:
        query = urllib.parse.urlencode(params)
        request = urllib.request.Request(f"{self.base}{path}?{query}")
        if self.auth is not None:
            token = base64.b64encode(":".join(self.auth).encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        with urllib.request.urlopen(request, timeout=10, context=self.context) as response:
            return response.read()

    def stop(self) -> None:
        if self.process is not None:
            stop_processes([self.process])
            self.process = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self, port: int | None = None) -> Receiver:
        """Start (again, on the same port and data: a receiver back after an outage)."""
        self.port = port or self.port or free_port()
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT)
        wait_until(self.ready, timeout=30, what=f"{self.name} to start (log: {self.log})")
        return self

    def ready(self) -> bool:
        raise NotImplementedError

    def same(self, stored: float, sent: float) -> bool:
        """Whether the store holds the value sent (Prometheus keeps every bit)."""
        return stored == sent

    def latest(self, match: str) -> dict[Key, float]:
        """The newest sample of every series matching the selector."""
        return {key: values[-1][1] for key, values in self.samples(match).items()}

    def samples(self, match: str) -> dict[Key, list[tuple[int, float]]]:
        """Every stored sample (milliseconds, value) of every series matching the selector, oldest first."""
        raise NotImplementedError


def _key(metric: dict[str, str]) -> Key:
    labels = dict(metric)
    return labels.pop("__name__"), frozenset(labels.items())


class PrometheusReceiver(Receiver):
    def __init__(self, directory: Path):
        super().__init__("prometheus", directory)

    def command(self) -> list[str]:
        config = self.directory / "prometheus.yml"
        config.write_text("global: {scrape_interval: 1m}\n")
        return [require_tool("prometheus"), f"--config.file={config}", f"--storage.tsdb.path={self.directory / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}", "--web.enable-remote-write-receiver",
                "--storage.tsdb.retention.time=1d", *self.extra_args]

    def ready(self) -> bool:
        return self.get("/-/ready") is not None

    def samples(self, match: str) -> dict[Key, list[tuple[int, float]]]:
        # a range selector over the last hour returns raw samples (stale markers are not returned)
        body = json.loads(self.get("/api/v1/query", query=f"{match}[1h]", time=f"{time.time():.3f}"))
        return {_key(series["metric"]): [(round(float(t) * 1000), float(v)) for t, v in series["values"]]
                for series in body["data"]["result"]}

    def instant(self, match: str) -> dict[Key, float]:
        """What a query sees now: a series that got a stale marker is gone at once."""
        body = json.loads(self.get("/api/v1/query", query=match, time=f"{time.time():.3f}"))
        return {_key(series["metric"]): float(series["value"][1]) for series in body["data"]["result"]}


class VictoriaMetrics(Receiver):
    def __init__(self, directory: Path):
        super().__init__("victoria-metrics", directory)

    def command(self) -> list[str]:
        return [require_tool("victoria-metrics"), f"-storageDataPath={self.directory / 'vm'}",
                f"-httpListenAddr=127.0.0.1:{self.port}", "-retentionPeriod=100y", "-search.disableCache",
                "-search.latencyOffset=0s", "-loggerLevel=WARN"]

    def ready(self) -> bool:
        return self.get("/health") == b"OK"

    def same(self, stored: float, sent: float) -> bool:
        # VictoriaMetrics stores a float as a decimal of at most 12 significant digits (its documented
        # precision): 1.5210000000000001 is read back as 1.521
        return stored == sent or math.isclose(stored, sent, rel_tol=1e-12)

    def flush(self) -> None:
        self.get("/internal/force_flush")

    def samples(self, match: str) -> dict[Key, list[tuple[int, float]]]:
        self.flush()
        out: dict[Key, list[tuple[int, float]]] = {}
        for line in self.get("/api/v1/export", **{"match[]": match}).splitlines():
            series = json.loads(line)
            values = [float("nan") if v is None else float(v) for v in series["values"]]
            pairs = sorted(zip(series["timestamps"], values, strict=True))
            # VictoriaMetrics stores the stale marker as a sample: leave it out, as Prometheus's API does
            out[_key(series["metric"])] = [(t, v) for t, v in pairs if not math.isnan(v)]
        return out


def stop_all(receivers: list[Receiver]) -> None:
    for receiver in receivers:
        receiver.stop()
