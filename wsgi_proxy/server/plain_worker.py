"""gunicorn's own gthread worker, for the proxy where the seam is off (another gunicorn
version, or ``WSGI_PROXY_TUNING=off``): server/settings.py chooses it then."""

from __future__ import annotations

from types import FrameType

from gunicorn.workers import base, gthread

from wsgi_proxy.server.error_pages import PlainErrorPages


class PlainWorker(PlainErrorPages, gthread.ThreadWorker):  # type: ignore[misc]
    """gunicorn's gthread worker as it is (but its error pages in plain text,
    error_pages.py, and SIGQUIT as below): request heads read on its threads (not bounded
    by WSGI_PROXY_CLIENT_TIMEOUT), its own executor (WSGI_PROXY_ACTIVE_THREADS has no
    effect), its own response writer."""

    def handle_quit(self, sig: int, frame: FrameType | None) -> None:
        """SIGQUIT and SIGINT, gunicorn's quick exit, as its base worker handles them:
        ``worker_int``, then ``SystemExit`` from the handler. gthread's own handler (gunicorn
        23.0 to 27.x) first shuts its executor down from inside the signal handler: when the
        signal lands while the main thread is inside the executor's ``submit``, which holds
        the lock ``shutdown`` takes, the worker hangs until the master's timeout kills it.
        ``run`` shuts the executor down instead, once the exit has left ``submit``."""
        base.Worker.handle_quit(self, sig, frame)

    def run(self) -> None:
        """gthread's loop; however it ends, the executor is shut down from the main thread,
        outside any signal handler, so every thread it started ends (Python's exit waits
        for them): even one whose start the exit interrupted, before the executor counted it.
        Shutting down twice is harmless."""
        try:
            super().run()
        finally:
            self.tpool.shutdown(wait=False)
