"""The wiring: ``create_app`` builds every object of the proxy for one worker process,
and ``LazyApp`` is the WSGI callable gunicorn loads, which builds it after the fork."""

from __future__ import annotations

import gc
import logging
import os
import threading
from collections.abc import Iterable
from typing import Any

from wsgi_proxy.core import threads
from wsgi_proxy.core.config import Config

__all__ = ["LazyApp", "create_app"]

# The garbage collector's thresholds in a process that serves requests: Python's own for
# the young generations (700 allocations, 10), a full collection at most every 100 second-
# generation ones instead of 10. A full collection walks every object the worker holds
# (its memos: about 100,000 with hits spread over a large cache) with the GIL held: 0.08 s
# of CPU, and 0.25 to 0.5 s of wall time on a busy CPU, during which no thread of the
# worker runs. With hits spread over 100,000 entries they came three times in 20 s and set
# the p99 (docs/performance.md, "Where the time goes"). Still run, about once a minute at
# full load, so cyclic garbage is still freed; the young generations free most of it.
COLLECTOR_THRESHOLDS = (700, 10, 100)

# gunicorn started without -c gunicorn.conf.py, away from the folder holding it (README).
SINGLE_THREADED = (
    "gunicorn runs wsgi_proxy without its settings (gunicorn.conf.py), in a single-threaded "
    "worker: one request at a time per process, which a client slow to send its request "
    "stops until the worker timeout; start gunicorn with -c gunicorn.conf.py, or caching-proxy"
)


def create_app(config: Config | None = None) -> Any:
    """Build the proxy for this process, each object given what it uses when it is made:
    store folder checked, evictor started, cluster caught up."""
    from wsgi_proxy.cluster.nodes import Cluster  # noqa: PLC0415
    from wsgi_proxy.flow.proxy_app import ProxyApp  # noqa: PLC0415
    from wsgi_proxy.ops.metrics import Metrics  # noqa: PLC0415
    from wsgi_proxy.store.cache import Store  # noqa: PLC0415
    from wsgi_proxy.store.eviction import Evictor, cache_gauges  # noqa: PLC0415 - light import
    from wsgi_proxy.upstream.origin_client import Upstream  # noqa: PLC0415

    config = config or Config.from_env()
    store = Store(
        config.cache_dir,
        lock_stripes=config.lock_stripes,
        max_variants=config.max_variants,
        touch_interval=config.touch_interval,
    )
    try:
        store.prepare()
    except OSError as exc:
        # Start-up already refused an unusable folder; one that broke since (full, read
        # only) degrades to pass-through: each cache operation fails on its own, logged.
        logging.getLogger(__name__).warning("cache folder unusable (%s): passing through", exc)
    metrics = Metrics(config.metrics_dir, lambda: cache_gauges(store, config.max_size))
    metrics.start()
    store.on_error = metrics.count_cache_error
    # Without a cache manager process, one worker's thread runs the manager's rounds,
    # the ban lurker's included (store/eviction.py).
    Evictor(store, config.max_size, metrics_dir=config.metrics_dir,
            on_purged=metrics.count_purged).start()  # fmt: skip
    # Several nodes as one cache (WSGI_PROXY_PEERS, WSGI_PROXY_REDIS_URL): purges for every
    # node, and the shared tier; it catches up with the purge log before the first request.
    cluster = Cluster(config, store, metrics)
    app = ProxyApp(config, store, Upstream(config), metrics, cluster=cluster)
    cluster.start()
    return app


class LazyApp:
    """The WSGI callable gunicorn loads: builds the real app once per process, so nothing
    made before a fork (``--preload``) is used after it."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._app: Any = None
        self._lock = threading.Lock()
        # A fork (gunicorn's, after --preload) forgets the app: the child builds its own.
        # Asking os.getpid() on every request instead would cost a syscall each.
        os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        self._app = None
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        app = self._app
        if app is None:
            with self._lock:
                if self._app is None:
                    self._app = create_app(self.config)
                    gc.set_threshold(*COLLECTOR_THRESHOLDS)
                    pool = threads.process_pool()  # the worker's (server/worker.py)
                    if pool is not None:
                        self._app.metrics.watch_pool(pool)
                    elif "gunicorn.socket" in environ and not environ.get("wsgi.multithread"):
                        logging.getLogger(__name__).warning(SINGLE_THREADED)
                app = self._app
        result: Iterable[bytes] = app(environ, start_response)
        return result
