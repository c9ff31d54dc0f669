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


COLLECTOR = """
import gc, sys
from werkzeug.test import create_environ
from wsgi_proxy import LazyApp
from wsgi_proxy.core.config import Config
from wsgi_proxy.wiring import COLLECTOR_THRESHOLDS

settings = {"WSGI_PROXY_CACHE_DIR": sys.argv[1], "WSGI_PROXY_ORIGIN": "http://127.0.0.1:9"}
lazy = LazyApp(Config.from_env(settings))
before = gc.get_threshold()
body = lazy(create_environ("/x"), lambda status, headers, exc_info=None: None)
b"".join(body)
sys.exit(0 if (before, gc.get_threshold()) == ((700, 10, 10), COLLECTOR_THRESHOLDS) else 1)
"""


def test_the_process_that_builds_the_app_collects_in_full_less_often(tmp_path: Path) -> None:
    """wiring.COLLECTOR_THRESHOLDS, set as the app is built for the process (the first
    request); Python's own thresholds until then."""
    done = subprocess.run([sys.executable, "-c", COLLECTOR, str(tmp_path)], check=False)
    assert done.returncode == 0
