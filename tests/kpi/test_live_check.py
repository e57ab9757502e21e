"""`rules check --prometheus.url`: a real Prometheus scrapes a small exporter; every selector and value
expression that matches nothing is reported with its file, line and the matcher to blame."""

import base64
import json
import subprocess
import sys
import threading
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import bcrypt
import pytest

from tests.helpers import fetch, free_port, wait_until
from tests.tools import require_tool

pytestmark = pytest.mark.slow  # a real Prometheus scraping a real exporter

EXPOSITION = """\
# TYPE http_requests_total counter
http_requests_total{path="/a",status="200"} 5
# TYPE rpc_seconds histogram
rpc_seconds_bucket{le="0.1"} 1
rpc_seconds_bucket{le="1.0"} 3
rpc_seconds_bucket{le="+Inf"} 4
rpc_seconds_count 4
rpc_seconds_sum 2
# TYPE probe_success gauge
probe_success{target="home"} 1
# TYPE mrr_dollars gauge
mrr_dollars 5
"""

SPEC = """\
service: s
kpis:
  - name: fine
    window: 30d
    target: 99%
    ratio:
      numerator: http_requests_total{job="app",status="200"}
      denominator: http_requests_total{job="app"}
  - name: metric_typo
    window: 30d
    target: 99%
    ratio:
      numerator: http_request_total{job="app",status="200"}
      denominator: http_requests_total{job="app"}
  - name: label_typo
    window: 30d
    target: 99%
    ratio:
      numerator: http_requests_total{job="app",path="/b"}
      denominator: http_requests_total{job="app"}
  - name: no_such_bound
    window: 30d
    target: 99%
    latency: {histogram: 'rpc_seconds{job="app"}', le: 0.5}
  - name: nothing_failed_yet
    window: 30d
    target: 99%
    ratio:
      bad: http_requests_total{job="app",status=~"5.."}
      denominator: http_requests_total{job="app"}
  - name: probe
    window: 30d
    target: 99%
    bool_gauge: probe_success{job="app",target="home"}
  - name: revenue
    window: 30d
    target: 10
    value: sum(mrr_dolars{job="app"})
  - name: bad_metric_typo
    window: 30d
    target: 99%
    ratio:
      bad: http_request_total{job="app",status=~"5.."}
      denominator: http_requests_total{job="app"}
  - name: bad_label_typo
    window: 30d
    target: 99%
    ratio:
      bad: http_requests_total{job="app",code=~"5.."}
      denominator: http_requests_total{job="app"}
  - name: negative_label_typo
    window: 30d
    target: 99%
    ratio:
      numerator: http_requests_total{job="app",stauts!~"5.."}
      denominator: http_requests_total{job="app"}
"""


class Exporter(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        body = EXPOSITION.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


USER, PASSWORD = "checker", "s3cret-Pa55"


@pytest.fixture
def prometheus(tmp_path):
    """A Prometheus behind basic auth (as most shared ones are), scraping the exporter; its URL carries the
    credentials, as --prometheus.url takes them."""
    binary = require_tool("prometheus")
    exporter = ThreadingHTTPServer(("127.0.0.1", 0), Exporter)
    threading.Thread(target=exporter.serve_forever, daemon=True).start()
    port = free_port()
    (tmp_path / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s}\nscrape_configs:\n  - job_name: app\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{exporter.server_address[1]}']}}]\n")
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    (tmp_path / "web.yml").write_text(f"basic_auth_users:\n  {USER}: {hashed}\n")
    process = subprocess.Popen([binary, f"--config.file={tmp_path / 'prometheus.yml'}",
                                f"--web.config.file={tmp_path / 'web.yml'}",
                                f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    authorization = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()

    def scraped():
        query = urllib.request.Request(f"{url}/api/v1/query?query={urllib.parse.quote('mrr_dollars')}",
                                       headers={"Authorization": authorization})
        try:
            with urllib.request.urlopen(query, timeout=5) as response:
                return json.load(response)["data"]["result"]
        except OSError:
            return False

    try:
        # up, and refusing anyone without the password: the check below can only pass by sending it
        wait_until(lambda: fetch(f"{url}/api/v1/query?query=up")[0] == 401, timeout=60,
                   what="Prometheus to ask for a password")
        wait_until(scraped, timeout=60, interval=0.5, what="Prometheus to scrape the exporter")
        yield f"http://{USER}:{PASSWORD}@127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=15)
        exporter.shutdown()


def test_selectors_and_values_that_match_nothing_are_named(prometheus, promtool, tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text(SPEC)
    result = subprocess.run([sys.executable, "-m", "agent", "rules", "check", str(spec), "--prometheus.url",
                             prometheus], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stderr
    assert PASSWORD not in result.stderr + result.stdout
    lines = result.stderr.splitlines()
    assert lines == [
        f'{spec}:13: kpis[1].ratio.numerator: http_request_total{{job="app",status="200"}} matches no series in the '
        "last 1d: metric http_request_total has no series in the last 1d (a typo, or not scraped?)",
        f'{spec}:19: kpis[2].ratio.numerator: http_requests_total{{job="app",path="/b"}} matches no series in the '
        'last 1d: no series of http_requests_total has path="/b"',
        f'{spec}:24: kpis[3].latency.histogram: rpc_seconds_bucket{{job="app",le="0.5"}} matches no series in the '
        'last 1d: no series of rpc_seconds_bucket has le="0.5" (bucket bounds present: 0.1, 1.0, +Inf)',
        f'{spec}:29: warning: kpis[4].ratio.bad: http_requests_total{{job="app",status=~"5.."}} matches no series '
        'in the last 1d: no series of http_requests_total has status=~"5.."',
        f"{spec}:38: kpis[6].value: returns nothing now: no series of mrr_dolars in the last 1d",
        # a selector of failed events that no failure can ever match is an error, not a warning
        f'{spec}:43: kpis[7].ratio.bad: http_request_total{{job="app",status=~"5.."}} matches no series in the '
        "last 1d: metric http_request_total has no series in the last 1d (a typo, or not scraped?)",
        f'{spec}:49: kpis[8].ratio.bad: http_requests_total{{job="app",code=~"5.."}} matches no series in the '
        "last 1d: no series of http_requests_total has a label code (a typo?)",
        f'{spec}:55: kpis[9].ratio.numerator: no series of http_requests_total has a label stauts (a typo?): '
        'stauts!~"5.." matches every series',
    ]


def test_an_unreachable_prometheus_is_a_clear_error_without_the_password(promtool, tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text(SPEC)
    result = subprocess.run([sys.executable, "-m", "agent", "rules", "check", str(spec), "--prometheus.url",
                             f"http://{USER}:{PASSWORD}@127.0.0.1:{free_port()}"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2
    assert result.stderr.startswith("cannot reach Prometheus at http://127.0.0.1:"), result.stderr
    assert PASSWORD not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr
