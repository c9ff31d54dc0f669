"""Access logging for gunicorn: the cache status and the origin's latency on every line.

``ACCESS_LOG_FORMAT`` extends gunicorn's combined format; ``JsonLogger`` writes one JSON
object per request instead (``WSGI_PROXY_LOG_FORMAT=json``). The origin latency comes from
the ``wsgi_proxy.origin_ms`` environ key that proxy.py sets ("-" when the origin was not
asked).
"""

from __future__ import annotations

import json
import traceback
from typing import Any

from gunicorn.glogging import Logger

ACCESS_LOG_FORMAT = (
    '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" '
    "cache=%({x-cache}o)s origin_ms=%({wsgi_proxy.origin_ms}e)s ms=%(M)s "
    '"%({cache-status}o)s"'
)


class JsonLogger(Logger):  # type: ignore[misc]
    """gunicorn's logger with one JSON object per access-log line."""

    def access(self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any) -> None:
        if not self.access_log_enabled:
            return
        try:
            atoms = self.atoms(resp, req, environ, request_time)
            record = {
                "time": atoms["t"],
                "remote": atoms["h"],
                "method": atoms["m"],
                "path": atoms["U"],
                "query": atoms["q"],
                "status": atoms["s"],
                "bytes": atoms["B"],
                "ms": request_time.total_seconds() * 1000,
                "cache": atoms.get("{x-cache}o", "-"),
                "cache_status": atoms.get("{cache-status}o", "-"),
                "origin_ms": environ.get("wsgi_proxy.origin_ms"),
                "referer": atoms["f"],
                "user_agent": atoms["a"],
            }
            self.access_log.info(json.dumps(record))
        except Exception:  # noqa: BLE001 - logging must never break a request
            self.error(traceback.format_exc())
