"""wsgi_proxy: an HTTP caching reverse proxy for gunicorn.

``gunicorn wsgi_proxy:app`` loads ``app``: reading it validates the configuration and the
cache folder (a bad ``WSGI_PROXY_*`` value or an unusable folder fails the worker's boot
with an error naming it, and gunicorn stops). The folder is checked once: where the
master's start-up hook (server/settings.py) found it usable, a worker started later on a
folder broken since passes through instead of stopping the server. The proxy itself,
its origin pool, cache folder and evictor thread, is built in each worker process on its
first request, after the fork. Importing the package does nothing else.
"""

from __future__ import annotations

from typing import Any

from wsgi_proxy.core.config import Config
from wsgi_proxy.wiring import LazyApp, create_app

__all__ = ["LazyApp", "create_app"]


def __getattr__(name: str) -> Any:
    if name == "app":
        from wsgi_proxy.store.cache import check_folder_once  # noqa: PLC0415

        config = Config.from_env()
        check_folder_once(config.cache_dir)
        app = LazyApp(config)
        globals()["app"] = app
        return app
    raise AttributeError(f"module 'wsgi_proxy' has no attribute {name!r}")
