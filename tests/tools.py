"""Finds the real Prometheus tools for tests, installing Debian's packages when they are missing.

In CI (``CI=true``) a missing tool fails the test; elsewhere it skips with the reason.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading

import pytest

# command -> Debian package that ships it
PACKAGES = {
    "prometheus": "prometheus",
    "promtool": "prometheus",
    "prometheus-alertmanager": "prometheus-alertmanager",
    "amtool": "prometheus-alertmanager",
    "mtail": "mtail",
    "prometheus-blackbox-exporter": "prometheus-blackbox-exporter",
    "chromium": "chromium",
    "dnsmasq": "dnsmasq",  # serves the DNS prober's test zone
    "unbound": "unbound",  # serves it over DNS over TLS
    "nft": "nftables",  # drops a share of ICMP packets in a test namespace
    "journalctl": "systemd",
    "systemd-journal-remote": "systemd-journal-remote",  # writes journal files from journal export format
    "victoria-metrics": "victoria-metrics",  # single node: a remote_write receiver with an export API
    "vmalert": "victoria-metrics",
    "vmagent": "victoria-metrics",
    "tinyproxy": "tinyproxy",  # the forward proxy HTTP probes go through (proxy_url, CONNECT)
}
# Debian installs some tools outside PATH (systemd's helpers)
EXTRA_DIRS = ("/usr/lib/systemd", "/lib/systemd", "/usr/sbin", "/sbin")

_lock = threading.Lock()
_tried: set[str] = set()


def _install(package: str) -> str:
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return "not root or no apt-get, cannot install"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", package]
    for command in (["apt-get", "update", "-q"], install):
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
        if result.returncode != 0:
            return f"{' '.join(command)} failed: {result.stderr.strip()[-500:]}"
    return ""


def _which(command: str) -> str | None:
    return shutil.which(command, path=os.pathsep.join([os.environ.get("PATH", os.defpath), *EXTRA_DIRS]))


def require_tool(command: str) -> str:
    """The path of ``command``; installs its Debian package once if missing; fails in CI, skips elsewhere."""
    with _lock:
        path = _which(command)
        package = PACKAGES[command]
        why = ""
        if path is None and package not in _tried:
            _tried.add(package)
            why = _install(package)
            path = _which(command)
    if path:
        return path
    message = f"{command} (Debian package {package}) is not installed and could not be installed: {why or 'see above'}"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)
