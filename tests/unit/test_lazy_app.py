"""The WSGI callable gunicorn loads: one app per process, built after any fork."""

from __future__ import annotations

import os
from pathlib import Path

from wsgi_proxy import LazyApp
from wsgi_proxy.config import Config


def test_a_forked_child_builds_its_own_app_and_the_parent_keeps_its_own(tmp_path: Path) -> None:
    lazy = LazyApp(Config.from_env({"WSGI_PROXY_CACHE_DIR": str(tmp_path)}))
    built = object()
    lazy._app = built  # as if the parent had served a request (gunicorn --preload)
    pid = os.fork()
    if pid == 0:  # the child: must not use the parent's app, its pool or its threads
        os._exit(0 if lazy._app is None else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert lazy._app is built
