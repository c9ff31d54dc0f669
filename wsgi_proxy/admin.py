"""The admin interface, under a reserved path prefix that is never proxied.

    {prefix}/health    200 while the worker runs (open)
    {prefix}/ready     200 when the cache folder is writable, else 503 (open)
    {prefix}/metrics   Prometheus text, all workers (token or allowed address)
    {prefix}/purge     POST ?url=/path | ?prefix=/p | ?tag=t | ?all=1, optional &soft=1
    PURGE /any/path    Varnish-style purge of that URL (token or allowed address)

Invariants: closed by default (no token, no allowed address: 403); the token is compared in
constant time; answers are short plain text, never forwarded to the origin.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Iterable
from ipaddress import ip_address
from urllib.parse import parse_qs

from wsgi_proxy.config import Config
from wsgi_proxy.exchange import Environ, StartResponse
from wsgi_proxy.metrics import Metrics
from wsgi_proxy.purge import PurgeResult, purge_all, purge_prefix, purge_tag, purge_url
from wsgi_proxy.store import Store, check_folder

log = logging.getLogger(__name__)


class Admin:
    def __init__(self, config: Config, store: Store, metrics: Metrics) -> None:
        self.config = config
        self.store = store
        self.metrics = metrics
        self.prefix = config.admin_prefix

    def is_admin_request(self, environ: Environ) -> bool:
        path = str(environ.get("PATH_INFO", ""))
        reserved = path == self.prefix or path.startswith(self.prefix + "/")
        return reserved or environ.get("REQUEST_METHOD") == "PURGE"

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        path = str(environ.get("PATH_INFO", ""))
        method = str(environ.get("REQUEST_METHOD", "GET"))
        action = path[len(self.prefix) :] if path.startswith(self.prefix) else None
        if action == "/health":
            return _text(start_response, 200, "ok")
        if action == "/ready":
            return self._ready(start_response)
        if not self._is_allowed(environ):
            return _text(start_response, 403, "admin interface: forbidden")
        if method == "PURGE" and action is None:
            query = str(environ.get("QUERY_STRING", ""))
            target = path + (f"?{query}" if query else "")
            result = purge_url(self.store, self.config.origin.url, target, soft=False)
            return self._purged(start_response, "url", result)
        if action == "/metrics" and method == "GET":
            body, content_type = self.metrics.render()
            start_response("200 OK", [("Content-Type", content_type),
                                      ("Content-Length", str(len(body)))])  # fmt: skip
            return [body]
        if action == "/purge" and method in ("POST", "PURGE"):
            return self._purge(environ, start_response)
        return _text(start_response, 404, "admin interface: no such endpoint")

    def _is_allowed(self, environ: Environ) -> bool:
        token = self.config.admin_token
        given = str(environ.get("HTTP_AUTHORIZATION", ""))
        if token and hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return True
        try:
            peer = ip_address(str(environ.get("REMOTE_ADDR", "")))
        except ValueError:
            return False
        return any(peer in network for network in self.config.admin_allow)

    def _ready(self, start_response: StartResponse) -> Iterable[bytes]:
        try:
            check_folder(self.config.cache_dir)
        except Exception as exc:  # noqa: BLE001 - any failure means not ready
            return _text(start_response, 503, f"not ready: {exc}")
        return _text(start_response, 200, "ready")

    def _purge(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        query = parse_qs(str(environ.get("QUERY_STRING", "")))
        soft = query.get("soft", ["0"])[0] in ("1", "true", "yes")
        origin = self.config.origin.url
        if "url" in query:
            kind, result = "url", purge_url(self.store, origin, query["url"][0], soft=soft)
        elif "prefix" in query:
            kind, result = "prefix", purge_prefix(self.store, origin, query["prefix"][0], soft=soft)
        elif "tag" in query:
            kind, result = "tag", purge_tag(self.store, query["tag"][0], soft=soft)
        elif query.get("all", ["0"])[0] in ("1", "true", "yes"):
            kind, result = "all", purge_all(self.store, soft=soft)
        else:
            return _text(start_response, 400, "purge needs url=, prefix=, tag= or all=1")
        return self._purged(start_response, kind + ("-soft" if soft else ""), result)

    def _purged(
        self, start_response: StartResponse, kind: str, result: PurgeResult
    ) -> Iterable[bytes]:
        self.metrics.purges.labels(kind).inc(result.purged)
        log.info("purge %s: %d stored responses", kind, result.purged)
        return _text(start_response, 200, f"purged {result.purged}")


def _text(start_response: StartResponse, status: int, text: str) -> Iterable[bytes]:
    reasons = {200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found",
               503: "Service Unavailable"}  # fmt: skip
    body = (text + "\n").encode()
    start_response(
        f"{status} {reasons[status]}",
        [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),
        ],
    )
    return [body]
