"""What a client's request becomes on its way to the origin, and the record of sending it.

Invariants:
- Fields that mean something to this hop only, fields this proxy sets, and fields that would
  let a client change the origin's answer without changing the cache key are never
  forwarded; this proxy sets Host, Via, X-Forwarded-* and Surrogate-Capability itself.
- X-Forwarded-For keeps only the entries added by the trusted proxies in front.
- Every origin request is counted in the metrics (by status, or as an error) and its
  latency recorded.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterable

from wsgi_proxy import headers as h
from wsgi_proxy.config import Config
from wsgi_proxy.errors import ProxyError
from wsgi_proxy.exchange import Environ, Exchange
from wsgi_proxy.metrics import Metrics
from wsgi_proxy.upstream import OriginResponse, Upstream

# Request fields never passed to the origin: those meaning something to this hop only
# (gunicorn answers Expect itself), those this proxy sets, and those that would let a client
# change what the origin answers without changing the cache key (cache poisoning).
_NOT_FORWARDED = (
    "host", "expect", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host",
    "surrogate-capability", "forwarded", "x-forwarded-scheme", "x-forwarded-port",
    "x-forwarded-server", "x-forwarded-prefix", "x-host", "x-original-url", "x-rewrite-url",
    "x-original-host", "x-http-method-override", "x-http-method", "x-method-override",
    "x-wsgi-proxy-peer",  # between nodes of a cluster only (shared_tier.PEER_HEADER)
)  # fmt: skip
# The client's validators, replaced by the stored entry's when this proxy revalidates.
CLIENT_CONDITIONALS = ("if-none-match", "if-modified-since")


class Forwarder:
    """One per worker: sends requests to the origin through the worker's pool."""

    def __init__(
        self, config: Config, upstream: Upstream, metrics: Metrics, clock: Callable[[], float]
    ) -> None:
        self.config = config
        self.upstream = upstream
        self.metrics = metrics
        self.clock = clock
        self.name = config.via_name
        self.capability = f'{config.via_name}="Surrogate/1.0"'

    def fields(self, ex: Exchange) -> h.Headers:
        """The client's end-to-end fields for the origin, with Host, Via and X-Forwarded-*
        set by this proxy (RFC 9110 section 7.6.3); X-Forwarded-For keeps only the entries
        added by the trusted proxies in front."""
        req, environ = ex.req, ex.environ
        client = str(environ.get("REMOTE_ADDR", ""))
        chain = h.forwarded_for(req.get("x-forwarded-for"), client, self.config.trusted_proxies)
        protocol = str(environ.get("SERVER_PROTOCOL", "HTTP/1.1")).removeprefix("HTTP/")
        fields = [
            *h.without(req.headers, _NOT_FORWARDED),
            ("Host", self.upstream.host),
            ("X-Forwarded-For", chain),
            ("X-Forwarded-Proto", self._scheme(environ)),
        ]
        if environ.get("HTTP_HOST"):
            fields.append(("X-Forwarded-Host", str(environ["HTTP_HOST"])))
        fields.append(("Via", f"{protocol} {self.name}"))
        fields.append(("Surrogate-Capability", self.capability))
        return tuple(fields)

    def send(
        self,
        method: str,
        target: str,
        fields: h.Headers,
        body: bytes | Iterable[bytes] | None,
        environ: Environ | None,
        *,
        chunked: bool,
    ) -> tuple[OriginResponse, tuple[float, float]]:
        """Send to the origin; (response, (request time, response time)). Records the
        origin's latency in the metrics and, for gunicorn's access log, in the environ."""
        request_time = self.clock()
        try:
            resp = self.upstream.send(method, target, fields, body, chunked=chunked)
        except ProxyError:
            self.metrics.count_origin("error")
            raise
        response_time = self.clock()
        self.metrics.count_origin(str(resp.head.status))
        self.metrics.origin_seconds.observe(response_time - request_time)
        if environ is not None:
            environ["wsgi_proxy.origin_ms"] = f"{(response_time - request_time) * 1000:.1f}"
        return resp, (request_time, response_time)

    def _scheme(self, environ: Environ) -> str:
        """The scheme the client used. gunicorn takes it from X-Forwarded-Proto when the
        peer is in its forwarded_allow_ips (loopback by default); that is nginx only when
        proxies are trusted, so without them the connection itself decides."""
        if self.config.trusted_proxies > 0:
            return str(environ.get("wsgi.url_scheme", "http"))
        return "https" if isinstance(environ.get("gunicorn.socket"), ssl.SSLSocket) else "http"
