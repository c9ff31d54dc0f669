"""The gunicorn worker class of the proxy (``worker_class``): gthread with the proxy's
thread pool, bounded request heads, and the tuned response writer."""

from __future__ import annotations

import time
from typing import Any

from wsgi_proxy.core.config import Config, ServerConfig
from wsgi_proxy.server.thread_pool import ElasticPool
from wsgi_proxy.tuning import gunicorn_response, origin_heads
from wsgi_proxy.tuning.gunicorn_config import settle
from wsgi_proxy.tuning.head_gathering import GatheringWorker
from wsgi_proxy.wiring import LazyApp

# Seconds a stopping worker with its own listening socket still accepts: a reload's new
# workers bind theirs right after their fork, well within it (ProxyWorker.set_accept_enabled).
STOP_LINGER = 1.0


class ProxyWorker(GatheringWorker):
    """gunicorn's gthread worker with the proxy's thread pool (pool.py): ``--threads``
    threads, of which WSGI_PROXY_ACTIVE_THREADS start and run requests at once; request
    heads bounded by WSGI_PROXY_CLIENT_TIMEOUT, no thread waiting on one (gathering.py); its
    responses written by ``response.LeanResponse``; the origin's response heads parsed by
    ``head_parser``; its settings read as a ``SettledConfig``."""

    _listeners_closed = False  # by set_accept_enabled, when stopping with reuse_port

    def init_process(self) -> None:
        # In this worker process only, after the fork.
        gunicorn_response.install()
        origin_heads.install()
        settle(self.cfg)
        self.head_timeout = Config.from_env().client_timeout
        super().init_process()

    def get_thread_pool(self) -> ElasticPool:
        threads: int = self.cfg.threads
        active = min(ServerConfig.from_env().active_threads, threads)
        return ElasticPool(active, threads)

    def load_wsgi(self) -> None:
        """gunicorn's, then the app is told the pool, to report its counts in the metrics
        (not when the app is wrapped in middleware: the pool's gauges then stay at zero)."""
        super().load_wsgi()
        if isinstance(self.wsgi, LazyApp):
            self.wsgi.pool = self.tpool

    def set_accept_enabled(self, enabled: bool) -> None:
        """gunicorn's; but a stopping worker with its own listening socket (``reuse_port``)
        goes on accepting for ``STOP_LINGER`` seconds (answering with ``Connection:
        close``), long enough for a reload's new workers to bind theirs, then accepts what
        is queued and closes it, so that the kernel sends new connections to the others.
        Closed at once, a reload could leave no socket for a moment (connections refused);
        left open until the worker has finished its requests, it would keep getting its
        share of them and accept none (each reset in the end). A worker at its connection
        limit (not accepting) closes it without the wait."""
        if enabled or self.alive or not self.cfg.reuse_port or self._listeners_closed:
            super().set_accept_enabled(enabled)
            return
        if self._accepting:
            deadline = time.monotonic() + STOP_LINGER
            while (left := deadline - time.monotonic()) > 0:
                self.notify()
                self.wait_for_and_dispatch_events(timeout=left)
        super().set_accept_enabled(False)
        self._listeners_closed = True
        for listener in self.sockets:
            self._accept_queued(listener)
            listener.close()

    def _accept_queued(self, listener: Any) -> None:
        """Accept what the kernel has queued on ``listener``, as gunicorn's poller would,
        up to the backlog's length: gunicorn's ``accept`` takes one connection, if any."""
        for _ in range(self.cfg.backlog):
            before = self.nr_conns
            try:
                self.accept(listener)
            except OSError as exc:  # out of file descriptors or memory: the rest is reset
                self.log.warning("stopping: cannot accept what is queued: %s", exc)
                return
            if self.nr_conns == before:
                return
