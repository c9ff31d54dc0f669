"""The admin interface, under a reserved path prefix that is never proxied.

    {prefix}/health    200 while the worker runs (open)
    {prefix}/ready     200 when the cache folder is writable, else 503 (open)
    {prefix}/metrics   Prometheus text, all workers (token or allowed address)
    {prefix}/purge     POST ?url=/path | ?prefix=/p | ?tag=t | ?all=1, optional &soft=1
    PURGE /any/path    Varnish-style purge of that URL (token or allowed address)
    {prefix}/cluster   GET: this node, its peers, Redis, its place in the purge log
    {prefix}/tags      GET ?tag=t: the nodes and URLs the tag index holds for a tag

Invariants: closed by default (no token, no allowed address: 403); the token is compared in
constant time; without it, every address the request came through (the peer and each
``X-Forwarded-For`` entry) must be allowed; answers are short plain text, never forwarded
to the origin. In a cluster (cluster.py) a purge goes to every node, unless it came from a
node (``PEER_HEADER``): then it is applied here only.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Iterable
from ipaddress import IPv4Network, IPv6Network, ip_address
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

from wsgi_proxy.core import headers as h
from wsgi_proxy.core.config import Config
from wsgi_proxy.ops.metrics import Metrics
from wsgi_proxy.request.exchange import Environ, StartResponse
from wsgi_proxy.store import purge as purging
from wsgi_proxy.store.cache import Store, check_folder
from wsgi_proxy.store.purge import Purge

if TYPE_CHECKING:
    from wsgi_proxy.cluster.nodes import Cluster

_PEER_ENVIRON = "HTTP_X_WSGI_PROXY_PEER"  # shared_tier.PEER_HEADER as WSGI names it

log = logging.getLogger(__name__)


class Admin:
    def __init__(self, config: Config, store: Store, metrics: Metrics) -> None:
        self.config = config
        self.store = store
        self.metrics = metrics
        self.prefix = config.admin_prefix
        self.cluster: Cluster | None = None  # set by create_app

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
            # The target as sent: a path (every site's entries) or an absolute URL (that
            # host's). PATH_INFO is decoded, and /a%2Fb is not /a/b.
            target = str(environ.get("RAW_URI") or path)
            return self._purge(environ, start_response, Purge("url", target), {})
        if action == "/metrics" and method == "GET":
            body, content_type = self.metrics.render()
            start_response("200 OK", [("Content-Type", content_type),
                                      ("Content-Length", str(len(body)))])  # fmt: skip
            return [body]
        if action == "/purge" and method in ("POST", "PURGE"):
            params = parse_qs(str(environ.get("QUERY_STRING", "")))
            purge = Purge.from_query(params)
            if purge is None:
                return _text(start_response, 400, "purge needs url=, prefix=, tag= or all=1")
            return self._purge(environ, start_response, purge, params)
        if action == "/cluster" and method == "GET":
            rows = self.cluster.status() if self.cluster is not None else [("redis", "off")]
            return _text(start_response, 200, "\n".join(f"{k}: {v}" for k, v in rows))
        if action == "/tags" and method == "GET":
            return self._tags(environ, start_response)
        return _text(start_response, 404, "admin interface: no such endpoint")

    def _is_allowed(self, environ: Environ) -> bool:
        """The token, or an allowed address for every hop: the peer and each address in
        ``X-Forwarded-For``. A request through nginx comes from 127.0.0.1, but nginx names
        the client there, and the client is who asks; an entry a client forged can only
        refuse it. So an allowed loopback opens nothing to the public through a local
        nginx, whatever ``WSGI_PROXY_TRUSTED_PROXIES`` says."""
        token = self.config.admin_token
        given = str(environ.get("HTTP_AUTHORIZATION", ""))
        if token and hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return True
        allowed = self.config.admin_allow
        if not allowed:
            return False
        hops = [str(environ.get("REMOTE_ADDR", ""))]
        hops += h.parse_list(str(environ.get("HTTP_X_FORWARDED_FOR") or ""))
        return all(_is_in(hop, allowed) for hop in hops)

    def _ready(self, start_response: StartResponse) -> Iterable[bytes]:
        try:
            check_folder(self.config.cache_dir)
        except Exception as exc:  # noqa: BLE001 - any failure means not ready
            return _text(start_response, 503, f"not ready: {exc}")
        return _text(start_response, 200, "ready")

    def _purge(
        self,
        environ: Environ,
        start_response: StartResponse,
        purge: Purge,
        params: dict[str, list[str]],
    ) -> Iterable[bytes]:
        try:
            purging.check(purge)
        except ValueError as exc:
            return _text(start_response, 400, f"purge: {exc}")
        cluster = self.cluster
        if cluster is not None and cluster.is_clustered and environ.get(_PEER_ENVIRON) is None:
            report = cluster.broadcast(purge, issuer=self.config.node_url or "admin")
            return _text(start_response, 502 if report.failed else 200, report.format())
        if cluster is not None:
            seq = params.get("seq", [""])[0]
            epoch = params.get("epoch", [""])[0] or None
            purged = cluster.apply_local(purge, epoch, int(seq) if seq.isdigit() else None)
        else:
            purged = purging.apply(self.store, self.config.origin.url, purge).purged
            self.metrics.purges.labels(purge.label).inc(purged)
            log.info("purge %s: %d stored responses", purge.label, purged)
        return _text(start_response, 200, f"purged {purged}")

    def _tags(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        tag = parse_qs(str(environ.get("QUERY_STRING", ""))).get("tag", [""])[0]
        if not tag:
            return _text(start_response, 400, "tags needs tag=")
        shared = self.cluster.shared if self.cluster is not None else None
        if shared is None:
            return _text(start_response, 404, "no tag index: WSGI_PROXY_REDIS_URL is not set")
        members = shared.tag_members(tag)
        if members is None:
            return _text(start_response, 503, "the tag index is unavailable (Redis)")
        lines = [f"{node}\t{target}" for node, target in members]
        return _text(start_response, 200, "\n".join([f"{len(lines)} stored", *lines]))


def _is_in(address: str, networks: tuple[IPv4Network | IPv6Network, ...]) -> bool:
    try:
        ip = ip_address(address.strip())
    except ValueError:
        return False
    return any(ip in network for network in networks)


def _text(start_response: StartResponse, status: int, text: str) -> Iterable[bytes]:
    reasons = {200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found",
               502: "Bad Gateway", 503: "Service Unavailable"}  # fmt: skip
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
