#!/usr/bin/env bash
# Installs everything pyantrea needs on a fresh Debian 12 machine (root), idempotently:
# Debian packages (Open vSwitch, iptables, CNI plugins, ...) and the Python package with its test tools.
set -euo pipefail
cd "$(dirname "$0")/.."

DEBS=(openvswitch-switch openvswitch-common iptables nftables ipset ethtool iperf3
      containernetworking-plugins iproute2 iputils-ping curl tcpdump procps
      chromium)  # chromium: the headless screenshot test of `antctl traceflow -o html`
missing=()
for p in "${DEBS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
if ! $PY -c 'import pyantrea, ovs, pyroute2, yaml, pytest, kubernetes, os_ken' 2>/dev/null \
   || [ pyproject.toml -nt "$($PY -c 'import pyantrea,os;print(os.path.dirname(pyantrea.__file__))' 2>/dev/null || echo /nonexistent)" ]; then
  echo "setup: installing pyantrea and its Python dependencies"
  $PY -m pip install -q --disable-pip-version-check -e '.[test]'
fi
