"""The WSGI callable gunicorn loads: one app per process, built after any fork."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

# In a process of its own: forking the test process, which has threads, is deprecated.
FORK = """
import os, sys
from wsgi_proxy import LazyApp
from wsgi_proxy.core.config import Config

lazy = LazyApp(Config.from_env({"WSGI_PROXY_CACHE_DIR": sys.argv[1]}))
built, lock = object(), lazy._lock
lazy._app = built  # as if this process had served a request (gunicorn --preload)
pid = os.fork()
if pid == 0:  # the child must not use the parent's app, its pool, threads or lock
    os._exit(0 if lazy._app is None and lazy._lock is not lock else 1)
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status) or (0 if lazy._app is built else 2))
"""


def test_a_forked_child_builds_its_own_app_and_the_parent_keeps_its_own(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", FORK, str(tmp_path)], check=False)
    assert done.returncode == 0
