"""The ``caching-proxy`` command as an operator runs it beside a server: ``python -m
wsgi_proxy`` with the arguments and environment a test gives, in a subprocess, its output
captured as text. A non-zero exit is returned, not raised: tests assert on it."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping, Sequence

CLI = [sys.executable, "-m", "wsgi_proxy"]
TIMEOUT = 60.0  # seconds; a command that hangs fails the test rather than the whole run


def run_cli(args: Sequence[str], env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    """``caching-proxy ARGS`` run to its end with exactly ``env`` as its environment."""
    return subprocess.run(
        [*CLI, *args], env=env, capture_output=True, text=True, timeout=TIMEOUT, check=False
    )
