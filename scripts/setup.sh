#!/usr/bin/env bash
# Sets up kpi-agent in ./.venv on a fresh Debian machine with Python 3.11+.
# Without flags: what running the agent needs, nothing else.
#   --with-tools   also install what the tests and linters use (pytest, hypothesis, ruff, mypy...: the package's
#                  test and lint extras) and the tools the tests run (Debian: prometheus, prometheus-alertmanager,
#                  mtail, chromium, systemd-journal-remote, which writes the journal files the journal source tests
#                  read; prometheus-blackbox-exporter, dnsmasq, unbound and nftables for the dns, icmp and grpc
#                  tests; victoria-metrics: the remote_write receiver, vmagent and vmalert of the push tests)
set -euo pipefail
cd "$(dirname "$0")/.."

with_tools=false
[ "${1:-}" = "--with-tools" ] && with_tools=true

python=${PYTHON:-python3}
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || { echo "kpi-agent needs Python 3.11 or newer ($python is $("$python" --version 2>&1))" >&2; exit 1; }

apt_install() {
  if [ "$(id -u)" != 0 ]; then
    echo "missing Debian packages: $*; run as root or: sudo apt-get install $*" >&2
    return 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "$@"
}

# Debian's python3 has no venv/ensurepip until python3-venv is installed.
if ! "$python" -c 'import ensurepip, venv' 2>/dev/null; then
  apt_install python3-venv
fi

if $with_tools; then
  missing=()
  command -v promtool >/dev/null && command -v prometheus >/dev/null || missing+=(prometheus)
  command -v amtool >/dev/null && command -v prometheus-alertmanager >/dev/null || missing+=(prometheus-alertmanager)
  command -v mtail >/dev/null || missing+=(mtail)
  command -v victoria-metrics >/dev/null && command -v vmalert >/dev/null && command -v vmagent >/dev/null \
    || missing+=(victoria-metrics)
  command -v chromium >/dev/null || missing+=(chromium)
  command -v journalctl >/dev/null || missing+=(systemd)
  [ -x /lib/systemd/systemd-journal-remote ] || [ -x /usr/lib/systemd/systemd-journal-remote ] \
    || missing+=(systemd-journal-remote)
  command -v prometheus-blackbox-exporter >/dev/null || missing+=(prometheus-blackbox-exporter)
  command -v dnsmasq >/dev/null || [ -x /usr/sbin/dnsmasq ] || missing+=(dnsmasq)
  command -v unbound >/dev/null || [ -x /usr/sbin/unbound ] || missing+=(unbound)
  command -v nft >/dev/null || [ -x /usr/sbin/nft ] || missing+=(nftables)
  command -v ip >/dev/null || [ -x /usr/sbin/ip ] || missing+=(iproute2)
  command -v setpriv >/dev/null || missing+=(util-linux)
  command -v openssl >/dev/null || missing+=(openssl)
  command -v tinyproxy >/dev/null || missing+=(tinyproxy)
  [ ${#missing[@]} -eq 0 ] || apt_install "${missing[@]}"
fi

[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
if $with_tools; then
  .venv/bin/python -m pip install -q -e '.[test,lint]'
else
  .venv/bin/python -m pip install -q -e .
fi
echo "kpi-agent is set up: .venv/bin/kpi-agent"
