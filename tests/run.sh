#!/usr/bin/env bash
# Installs everything the tests need into .venv (pinned), then runs lint, types and tests.
# This is the README's test command and what CI runs (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
# The conformance tests drive the npm package http-cache-tests with Node.js.
if ! command -v npm >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  apt-get update -qq && apt-get install -y -qq nodejs npm >/dev/null
fi
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt -e .
.venv/bin/ruff check wsgi_proxy tests gunicorn.conf.py
.venv/bin/ruff format --check wsgi_proxy tests gunicorn.conf.py
.venv/bin/mypy
.venv/bin/python -m pytest "$@"
