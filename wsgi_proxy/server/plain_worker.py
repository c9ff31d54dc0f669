"""gunicorn's own gthread worker, for the proxy where the seam is off (another gunicorn
version, or ``WSGI_PROXY_TUNING=off``): server/settings.py chooses it then."""

from __future__ import annotations

from gunicorn.workers import gthread

from wsgi_proxy.server.error_pages import PlainErrorPages


class PlainWorker(PlainErrorPages, gthread.ThreadWorker):  # type: ignore[misc]
    """gunicorn's gthread worker as it is (but its error pages in plain text,
    error_pages.py): request heads read on its threads (not bounded
    by WSGI_PROXY_CLIENT_TIMEOUT), its own executor (WSGI_PROXY_ACTIVE_THREADS has no
    effect), its own response writer."""
