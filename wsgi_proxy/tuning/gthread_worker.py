"""gunicorn's gthread worker, tuned: the proxy's thread pool in place of gthread's executor,
a settings object that looks each setting up once, heads gathered without a thread
(head_gathering.py), and a stop that refuses no connection at a reload.

Used as the worker class only where ``is_tuned("gunicorn")`` (server/settings.py): on any
other gunicorn, or with ``WSGI_PROXY_TUNING=off``, the plain gthread worker runs.
"""

from __future__ import annotations

import time
from typing import Any

from wsgi_proxy.tuning.gunicorn_config import settle
from wsgi_proxy.tuning.gunicorn_response import LeanResponses
from wsgi_proxy.tuning.head_gathering import GatheringWorker

# Seconds a stopping worker with its own listening socket still accepts: a reload's new
# workers bind theirs right after their fork, well within it (set_accept_enabled).
STOP_LINGER = 1.0


class TunedThreadWorker(GatheringWorker):
    """The gthread worker with the tunings above. A subclass gives ``thread_pool``."""

    _listeners_closed = False  # by set_accept_enabled, when stopping with reuse_port

    def init_process(self) -> None:
        settle(self.cfg)  # in this worker process only, after the fork
        super().init_process()

    def load_wsgi(self) -> None:
        super().load_wsgi()
        app: Any = self.wsgi  # type: ignore[has-type]  # gunicorn is untyped
        self.wsgi = LeanResponses(app)

    def thread_pool(self, threads: int) -> Any:
        """The executor for ``threads`` threads (gthread's ``get_thread_pool``)."""
        raise NotImplementedError

    def get_thread_pool(self) -> Any:
        return self.thread_pool(self.cfg.threads)

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
