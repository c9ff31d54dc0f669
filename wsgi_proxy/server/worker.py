"""The proxy's gunicorn worker class (gunicorn's ``worker_class`` hook): gthread tuned
(tuning/gthread_worker.py), with the proxy's elastic thread pool. Used where the seam is on
for the installed gunicorn; elsewhere ``plain_worker.PlainWorker`` (server/settings.py
chooses). Imported by gunicorn only when chosen: the tuned worker imports names that not
every gunicorn has."""

from __future__ import annotations

from wsgi_proxy.core import threads as pool_registry
from wsgi_proxy.core.config import Config
from wsgi_proxy.core.server_config import ServerConfig
from wsgi_proxy.server.error_pages import PlainErrorPages
from wsgi_proxy.server.thread_pool import ElasticPool
from wsgi_proxy.tuning.gthread_worker import TunedThreadWorker


class ProxyWorker(PlainErrorPages, TunedThreadWorker):
    """gthread, tuned, with gunicorn's error pages in plain text (error_pages.py) and the
    proxy's thread pool (thread_pool.py): ``--threads``
    threads, of which WSGI_PROXY_ACTIVE_THREADS start and run requests at once; request
    heads bounded by WSGI_PROXY_CLIENT_TIMEOUT, no thread waiting on one."""

    def init_process(self) -> None:
        self.head_timeout = Config.from_env().client_timeout
        super().init_process()

    def thread_pool(self, threads: int) -> ElasticPool:
        active = min(ServerConfig.from_env().active_threads, threads)
        pool = ElasticPool(active, threads)
        pool_registry.set_process_pool(pool)  # its counts go to the metrics (wiring.py)
        return pool
