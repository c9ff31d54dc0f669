"""gunicorn's own gthread worker, for the proxy where the seam is off (another gunicorn
version, or ``WSGI_PROXY_TUNING=off``): server/settings.py chooses it then."""

from __future__ import annotations

from types import FrameType

from gunicorn.workers import gthread

from wsgi_proxy.server.error_pages import PlainErrorPages


class PlainWorker(PlainErrorPages, gthread.ThreadWorker):  # type: ignore[misc]
    """gunicorn's gthread worker as it is (but its error pages in plain text,
    error_pages.py, and SIGQUIT as below): request heads read on its threads (not bounded
    by WSGI_PROXY_CLIENT_TIMEOUT), its own executor (WSGI_PROXY_ACTIVE_THREADS has no
    effect), its own response writer."""

    def handle_quit(self, sig: int, frame: FrameType | None) -> None:
        """SIGQUIT and SIGINT, gunicorn's quick exit: ``worker_int``, then the loop ends at
        its next turn (within a second, its poll's timeout), shuts its executor down from
        the main thread, and waits for the requests under way (up to ``graceful_timeout``).
        No ``SystemExit`` from the handler: raised wherever the main thread was, it could
        leave a lock taken. Inside ``futures.wait``, which takes each pending future's lock
        in turn, one stayed taken; the thread finishing that request waited for it for
        ever, and so did Python's exit for that thread: the worker hung until the master's
        timeout killed it (gunicorn 23.0, about one quit in 200). gthread's own handler
        (23.0 to 27.x) also shuts its executor down inside the handler, which hung when the
        signal landed inside ``submit``."""
        self.alive = False
        self.cfg.worker_int(self)
