"""gunicorn's own gthread worker, for the proxy where the seam is off (another gunicorn
version, or ``WSGI_PROXY_TUNING=off``): server/settings.py chooses it then."""

from __future__ import annotations

from gunicorn.workers import gthread


class PlainWorker(gthread.ThreadWorker):  # type: ignore[misc]
    """gunicorn's gthread worker as it is: request heads read on its threads (not bounded
    by WSGI_PROXY_CLIENT_TIMEOUT), its own executor (WSGI_PROXY_ACTIVE_THREADS has no
    effect), its own response writer."""
