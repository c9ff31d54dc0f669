#!/usr/bin/env bash
# Installs everything the tests need into .venv (pinned), then runs lint, types and tests;
# then the integration tests again in .venv-oldest, on the oldest supported gunicorn and
# urllib3 (requirements-oldest.txt). This is the README's test command and what CI runs
# (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
# System packages the tests use: nginx in front of the proxy (tests/integration/test_nginx.py),
# redis-server for the cluster's shared tier (tests/integration/test_cluster.py), Node.js
# for the conformance suite (the npm package http-cache-tests), Chromium for the status
# page in a real browser (tests/integration/test_status_page.py), openssl for the
# self-signed certificate of the nginx site's TLS example (tests/integration/test_nginx.py)
# and promtool (Debian package prometheus) for the alert rules in deploy/prometheus
# (tests/integration/test_monitoring.py).
missing=()
[ -x /usr/sbin/nginx ] || command -v nginx >/dev/null 2>&1 || missing+=(nginx)
[ -x /usr/bin/redis-server ] || command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
[ -x /usr/bin/promtool ] || command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
if ((${#missing[@]})); then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "tests/run.sh: please install ${missing[*]} (Debian: apt-get install ${missing[*]})" >&2
    exit 1
  fi
fi
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt -e .
.venv/bin/ruff check wsgi_proxy tests gunicorn.conf.py
.venv/bin/ruff format --check wsgi_proxy tests gunicorn.conf.py
.venv/bin/mypy
.venv/bin/python -m pytest "$@"
# The oldest supported set: the seam (wsgi_proxy/tuning/) is off on it, so the integration
# tests run the libraries' own behaviour; the tests that need a tuning, or a newer gunicorn,
# skip, saying why. The test tools as requirements-dev.txt pins them.
if [ ! -x .venv-oldest/bin/python ]; then
  python3 -m venv .venv-oldest
fi
mapfile -t test_tools < <(grep -E '^pytest(-timeout)?==' requirements-dev.txt)
.venv-oldest/bin/python -m pip install --quiet --disable-pip-version-check \
  -r requirements-oldest.txt "${test_tools[@]}" -e .
.venv-oldest/bin/python -m pytest tests/integration
