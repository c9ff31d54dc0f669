#!/usr/bin/env bash
# Installs everything the tests need into .venv (pinned), then runs lint, types and tests.
# This is the README's test command and what CI runs (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
# System packages the tests use: nginx in front of the proxy (tests/integration/test_nginx.py),
# redis-server for the cluster's shared tier (tests/integration/test_cluster.py) and Node.js
# for the conformance suite (the npm package http-cache-tests).
missing=()
[ -x /usr/sbin/nginx ] || command -v nginx >/dev/null 2>&1 || missing+=(nginx)
[ -x /usr/bin/redis-server ] || command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
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
