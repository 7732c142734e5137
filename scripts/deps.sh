#!/usr/bin/env bash
# Installs what the tests need on a fresh Debian machine: Debian's nats-server (the
# reference peer the tests compare midge with), jq (bench script), nats-py with pytest
# (tests/python), and the Rust components the checks use. Safe to run again; it only
# installs what is missing.
set -euo pipefail

SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi

missing=()
command -v nats-server >/dev/null 2>&1 || [[ -x /usr/sbin/nats-server ]] || missing+=(nats-server)
command -v jq >/dev/null 2>&1 || missing+=(jq)
if ((${#missing[@]})); then
  echo "deps: installing ${missing[*]} from Debian"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi

# The official Python client and pytest, for tests/python; nkeys for its nkey and .creds
# logins, aiohttp for its WebSocket tests.
if ! python3 -c 'import nats, nkeys, pytest, pytest_asyncio, aiohttp' >/dev/null 2>&1; then
  echo "deps: installing nats-py, nkeys, pytest, pytest-asyncio, aiohttp with pip"
  python3 -m pip install --quiet nats-py nkeys pytest pytest-asyncio aiohttp
fi

# Offline validation of the Kubernetes manifests the operator renders.
if ! command -v kubernetes-validate >/dev/null 2>&1; then
  echo "deps: installing kubernetes-validate with pip"
  python3 -m pip install --quiet kubernetes-validate
fi

# The chart and manifest checks (scripts/check-chart.sh) in their own virtualenv: checkov
# pins old versions of common packages (botocore, packaging) that would break other
# Python tools if installed beside them. helm-python-sdk is Helm's SDK as a library.
tools=${MIDGE_PY_TOOLS:-$HOME/.cache/midge-py-tools}
if ! [[ -x $tools/bin/checkov ]] || ! "$tools/bin/python" -c 'import helm_python, jsonschema, yaml' >/dev/null 2>&1; then
  echo "deps: installing helm-python-sdk, checkov, jsonschema into $tools"
  python3 -m venv "$tools"
  "$tools/bin/python" -m pip install --quiet helm-python-sdk checkov jsonschema pyyaml
fi

if command -v rustup >/dev/null 2>&1; then
  rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
  rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy
fi
