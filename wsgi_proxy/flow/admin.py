"""The admin interface, under a reserved path prefix that is never proxied.

    {prefix}/          GET, HEAD: the status page, HTML (token or allowed address)
    {prefix}/status.json  GET, HEAD: the status page's figures, all workers (ops/status.py)
    {prefix}/health    any method: 200 while the worker runs (open)
    {prefix}/ready     any method: 200 when the cache folder is writable, else 503 (open)
    {prefix}/metrics   GET, HEAD: Prometheus text, all workers (token or allowed address)
    {prefix}/purge     POST or PURGE ?url=/path | ?prefix=/p | ?tag=t | ?all=1, optional &soft=1
    PURGE /any/path    Varnish-style purge of that URL (token or allowed address)
    {prefix}/cluster   GET, HEAD: this node, its peers, Redis, its place in the purge log
    {prefix}/tags      GET, HEAD ?tag=t: the nodes and URLs the tag index holds for a tag

werkzeug does the routing (``ROUTES``, the paths after the prefix), the request and the
responses; its HTTP exceptions are the error answers, written as plain text
(``error_response``): 404 for a path that is no endpoint's, 405 with ``Allow`` for a
method the endpoint does not take.

Invariants: closed by default (no token, no allowed address: 403); the token is compared in
constant time; without it, every address the request came through (the peer and each
``X-Forwarded-For`` entry) must be allowed; a request that may not use the interface gets
the 403 whatever it asked for, so it learns nothing of the endpoints. Answers are short
plain text, never stored (``Cache-Control: no-store``), never forwarded to the origin;
metrics are Prometheus text, the status page HTML with everything inline (its Content
Security Policy lets it load nothing but its own JSON), its figures JSON. In a cluster
(cluster/nodes.py) a purge goes to every node, unless it came from a node
(``PEER_HEADER``): then it is applied here only.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from collections.abc import Callable, Iterable
from ipaddress import IPv4Network, IPv6Network, ip_address
from typing import TYPE_CHECKING

from werkzeug.exceptions import (
    BadRequest,
    Forbidden,
    HTTPException,
    MethodNotAllowed,
    NotFound,
    ServiceUnavailable,
)
from werkzeug.http import HTTP_STATUS_CODES
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from wsgi_proxy.cluster.shared_tier import PEER_HEADER
from wsgi_proxy.core import headers as h
from wsgi_proxy.core.config import Config
from wsgi_proxy.ops import status as status_page
from wsgi_proxy.ops.metrics import Metrics
from wsgi_proxy.request.exchange import Environ, StartResponse
from wsgi_proxy.store import purge as purging
from wsgi_proxy.store.cache import Store, check_folder
from wsgi_proxy.store.purge import Purge
from wsgi_proxy.store.recent_purges import RecentPurges

if TYPE_CHECKING:
    from wsgi_proxy.cluster.nodes import Cluster

PLAIN_TEXT = "text/plain; charset=utf-8"
NO_ENDPOINT = "admin interface: no such endpoint"

# The paths after the prefix. The prefix is matched as a plain string (is_admin_request):
# it is an operator's setting, and in a werkzeug rule a "<" in it would start a converter.
ROUTES = Map(
    [
        Rule("/", endpoint="status_page", methods=["GET"]),
        Rule("/status.json", endpoint="status_json", methods=["GET"]),
        Rule("/health", endpoint="health"),  # every method
        Rule("/ready", endpoint="ready"),  # every method
        Rule("/metrics", endpoint="metrics", methods=["GET"]),
        Rule("/purge", endpoint="purge", methods=["POST", "PURGE"]),
        Rule("/cluster", endpoint="cluster", methods=["GET"]),
        Rule("/tags", endpoint="tags", methods=["GET"]),
    ],
    # A path is an endpoint's exactly or none's: no redirect to a path with its slashes
    # merged (werkzeug's default), nor to a rule's defaults.
    merge_slashes=False,
    redirect_defaults=False,
)
OPEN_ENDPOINTS = frozenset({"health", "ready"})

log = logging.getLogger(__name__)


def route(action: str, method: str) -> str:
    """The endpoint for ``action`` (the path after the prefix) and ``method``: werkzeug's
    ``NotFound`` when no endpoint has that path, ``MethodNotAllowed`` (405, with ``Allow``)
    when the endpoint does not take the method. An endpoint that takes GET takes HEAD."""
    # werkzeug matches a path with its leading slashes taken off ("//metrics", and the
    # "metrics" of {prefix}metrics, as "/metrics"); an admin path is exact.
    if not action.startswith("/") or action.startswith("//"):
        raise NotFound(NO_ENDPOINT)
    try:
        rule, _ = ROUTES.bind("").match(action, method, return_rule=True)
    except MethodNotAllowed as exc:
        raise _wrong_method(action, exc.valid_methods or ()) from None
    except HTTPException:  # NotFound
        raise NotFound(NO_ENDPOINT) from None
    # werkzeug upper-cases the method, which RFC 9110 section 9.1 says is case-sensitive.
    if rule.methods is not None and method not in rule.methods:
        raise _wrong_method(action, rule.methods)
    return str(rule.endpoint)


def _wrong_method(action: str, methods: Iterable[str]) -> MethodNotAllowed:
    allowed = sorted(methods)  # werkzeug's come from a set, in no fixed order
    return MethodNotAllowed(allowed, f"admin interface: {action} takes {', '.join(allowed)}")


def is_allowed(
    token: str,
    allowed: tuple[IPv4Network | IPv6Network, ...],
    authorization: str,
    hops: Iterable[str],
) -> bool:
    """The token (``Authorization: Bearer <token>``, compared in constant time), or an
    allowed address for every hop: the peer and each address in ``X-Forwarded-For``. A
    request through nginx comes from 127.0.0.1, but nginx names the client there, and the
    client is who asks; an entry a client forged can only refuse it. So an allowed loopback
    opens nothing to the public through a local nginx, whatever
    ``WSGI_PROXY_TRUSTED_PROXIES`` says."""
    if token and hmac.compare_digest(authorization.encode(), f"Bearer {token}".encode()):
        return True
    return bool(allowed) and all(_is_in(hop, allowed) for hop in hops)


def error_response(exc: HTTPException) -> Response:
    """werkzeug's HTTP exception as a short plain-text answer (werkzeug writes HTML):
    ``<status> <reason>: <detail>``, as core/errors.ProxyError's body is, with the fields
    the exception needs (``Allow`` on a 405)."""
    code = exc.code or 500
    fields = [(k, v) for k, v in exc.get_headers() if k.lower() != "content-type"]
    return _text(code, f"{code} {exc.name}: {exc.description}", fields)


class Admin:
    def __init__(
        self, config: Config, store: Store, metrics: Metrics, cluster: Cluster | None = None
    ) -> None:
        self.config = config
        self.store = store
        self.metrics = metrics
        self.prefix = config.admin_prefix
        self.cluster = cluster
        self._endpoints: dict[str, Callable[[Request], Response]] = {
            "status_page": self._status_page,
            "status_json": self._status_json,
            "health": self._health,
            "ready": self._ready,
            "metrics": self._metrics,
            "purge": self._purge_query,
            "cluster": self._cluster,
            "tags": self._tags,
        }

    def is_admin_request(self, environ: Environ) -> bool:
        path = str(environ.get("PATH_INFO", ""))
        reserved = path == self.prefix or path.startswith(self.prefix + "/")
        return reserved or environ.get("REQUEST_METHOD") == "PURGE"

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        # populate_request=False: the environ does not keep the request (a reference cycle).
        request = Request(environ, populate_request=False)
        try:
            response = self._answer(request)
        except HTTPException as exc:
            response = error_response(exc)
        return response(environ, start_response)

    def _answer(self, request: Request) -> Response:
        # The path and method as is_admin_request read them: werkzeug's request.path strips
        # its leading slashes and decodes it again, and request.method is upper-cased (RFC
        # 9110 section 9.1: a method is case-sensitive).
        path = str(request.environ.get("PATH_INFO", ""))
        method = str(request.environ.get("REQUEST_METHOD", "GET"))
        if not path.startswith(self.prefix):
            self._check_access(request)
            if method != "PURGE":  # called with a request is_admin_request refused
                raise NotFound(NO_ENDPOINT)
            # The target as sent: a path (every site's entries) or an absolute URL (that
            # host's). PATH_INFO is decoded, and /a%2Fb is not /a/b.
            target = str(request.environ.get("RAW_URI") or path)
            return self._purge(request, Purge("url", target), {})
        try:
            endpoint = route(path[len(self.prefix) :], method)
        except HTTPException:
            self._check_access(request)  # a 403 first: no map of the interface without it
            raise
        if endpoint not in OPEN_ENDPOINTS:
            self._check_access(request)
        return self._endpoints[endpoint](request)

    def _check_access(self, request: Request) -> None:
        hops = [request.remote_addr or ""]
        hops += h.parse_list(request.headers.get("X-Forwarded-For"))
        authorization = request.headers.get("Authorization", "")
        if not is_allowed(self.config.admin_token, self.config.admin_allow, authorization, hops):
            raise Forbidden("admin interface: the token or an allowed address is needed")

    def _health(self, request: Request) -> Response:
        return _text(200, "ok")

    def _ready(self, request: Request) -> Response:
        try:
            check_folder(self.config.cache_dir)
        except Exception as exc:  # noqa: BLE001 - any failure means not ready
            raise ServiceUnavailable(f"not ready: {exc}") from None
        return _text(200, "ready")

    def _metrics(self, request: Request) -> Response:
        body, content_type = self.metrics.render()
        return Response(body, status=_status(200), headers=[("Cache-Control", "no-store")],
                        content_type=content_type)  # fmt: skip

    def _status_page(self, request: Request) -> Response:
        return Response(
            status_page.html(),
            status=_status(200),
            headers=[("Cache-Control", "no-store"), *status_page.PAGE_FIELDS],
            content_type="text/html; charset=utf-8",
        )

    def _status_json(self, request: Request) -> Response:
        cluster = self.cluster
        clustered = cluster is not None and cluster.is_clustered
        summary = status_page.summarize(
            self.metrics.samples(),
            time.time(),
            workers=self.metrics.worker_pools(),
            purges=[record.to_json() for record in RecentPurges(self.store.state).read()],
            cluster={"nodes": cluster.node_states()} if cluster is not None and clustered else None,
        )
        return Response(
            json.dumps(summary, separators=(",", ":")),
            status=_status(200),
            headers=[("Cache-Control", "no-store")],
            content_type="application/json",
        )

    def _purge_query(self, request: Request) -> Response:
        params = _query(request)
        purge = Purge.from_query(params)
        if purge is None:
            raise BadRequest("purge needs url=, prefix=, tag= or all=1")
        return self._purge(request, purge, params)

    def _purge(self, request: Request, purge: Purge, params: dict[str, list[str]]) -> Response:
        try:
            purging.check(purge)
        except ValueError as exc:
            raise BadRequest(f"purge: {exc}") from None
        cluster = self.cluster
        from_peer = request.headers.get(PEER_HEADER) is not None
        if cluster is not None and cluster.is_clustered and not from_peer:
            report = cluster.broadcast(purge, issuer=self.config.node_url or "admin")
            return _text(502 if report.failed else 200, report.format())
        if cluster is not None:
            seq = params.get("seq", [""])[0]
            epoch = params.get("epoch", [""])[0] or None
            result = cluster.apply_local(purge, epoch, int(seq) if seq.isdigit() else None)
        else:
            result = purging.apply(self.store, self.config.origin.url, purge)
            # A ban counts its entries as the lurker reaches them (store/lurker.py).
            self.metrics.count_purge(purge.label, result.purged)
            log.info("purge %s %r: %s", purge.label, purge.value, result.format())
        return _text(200, result.format())

    def _cluster(self, request: Request) -> Response:
        rows = self.cluster.status() if self.cluster is not None else [("redis", "off")]
        return _text(200, "\n".join(f"{k}: {v}" for k, v in rows))

    def _tags(self, request: Request) -> Response:
        tag = _query(request).get("tag", [""])[0]
        if not tag:
            raise BadRequest("tags needs tag=")
        shared = self.cluster.shared if self.cluster is not None else None
        if shared is None:
            raise NotFound("no tag index: WSGI_PROXY_REDIS_URL is not set")
        members = shared.tag_members(tag)
        if members is None:
            raise ServiceUnavailable("the tag index is unavailable (Redis)")
        lines = [f"{node}\t{target}" for node, target in members]
        return _text(200, "\n".join([f"{len(lines)} stored", *lines]))


def _query(request: Request) -> dict[str, list[str]]:
    """The query's values by name, empty ones left out (as ``parse_qs`` reads a query:
    ``url=&url=/a`` names ``/a``)."""
    query: dict[str, list[str]] = {}
    for name, values in request.args.lists():
        given = [value for value in values if value]
        if given:
            query[name] = given
    return query


def _is_in(address: str, networks: tuple[IPv4Network | IPv6Network, ...]) -> bool:
    try:
        ip = ip_address(address.strip())
    except ValueError:
        return False
    return any(ip in network for network in networks)


def _status(code: int) -> str:
    # werkzeug would send the reason phrase upper-cased ("404 NOT FOUND").
    return f"{code} {HTTP_STATUS_CODES[code]}"


def _text(code: int, text: str, fields: Iterable[tuple[str, str]] = ()) -> Response:
    return Response(
        text + "\n",
        status=_status(code),
        headers=[*fields, ("Cache-Control", "no-store")],
        content_type=PLAIN_TEXT,
    )
