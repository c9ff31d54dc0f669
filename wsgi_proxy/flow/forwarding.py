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

import logging
from collections.abc import Callable, Iterable

from wsgi_proxy.core import headers as h
from wsgi_proxy.core.config import Config
from wsgi_proxy.core.errors import ProxyError
from wsgi_proxy.ops.metrics import Metrics
from wsgi_proxy.request.exchange import Environ, Exchange
from wsgi_proxy.upstream.origin_client import InterimHandler, OriginResponse, Upstream

log = logging.getLogger(__name__)

# Request fields never passed to the origin: those meaning something to this hop only
# (gunicorn answers Expect itself), those this proxy sets, and those that would let a client
# change what the origin answers without changing the cache key (cache poisoning).
_NOT_FORWARDED = (
    "host", "expect", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host",
    "surrogate-capability", "forwarded", "x-forwarded-port", "x-forwarded-server",
    "x-forwarded-prefix", "x-host", "x-original-url", "x-rewrite-url", "x-original-host",
    "x-http-method-override", "x-http-method", "x-method-override",
    # the scheme, as Rack, Spring, IIS and gunicorn read it besides X-Forwarded-Proto
    "x-forwarded-scheme", "x-forwarded-ssl", "x-forwarded-protocol", "front-end-https",
    "x-url-scheme", "x-scheme",
    # the path, as ingress controllers pass it on
    "x-forwarded-uri", "x-original-uri", "x-forwarded-path",
    # the client's address, which only a proxy in front may tell (X-Forwarded-For does)
    "x-real-ip", "client-ip", "x-client-ip", "true-client-ip", "x-cluster-client-ip",
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
            # Exactly the site the cache key holds (keys.py): nothing the origin may answer
            # differently by is left out of the key.
            ("X-Forwarded-Proto", ex.site.scheme),
        ]
        if ex.site.host:
            fields.append(("X-Forwarded-Host", ex.site.host))
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
        on_interim = self._early_hints(environ) if self.config.early_hints else None
        try:
            resp = self.upstream.send(method, target, fields, body, chunked=chunked,
                                      on_interim=on_interim)  # fmt: skip
        except ProxyError:
            self.metrics.count_origin("error")
            raise
        response_time = self.clock()
        self.metrics.count_origin(str(resp.head.status))
        self.metrics.origin_seconds.observe(response_time - request_time)
        if environ is not None:
            environ["wsgi_proxy.origin_ms"] = f"{(response_time - request_time) * 1000:.1f}"
        return resp, (request_time, response_time)

    def _early_hints(self, environ: Environ | None) -> InterimHandler | None:
        """A handler passing the origin's 103s on to the client through gunicorn's
        ``wsgi.early_hints`` (which writes nothing to HTTP/1.0 clients or once the
        response has started), their hop-by-hop fields left out; None without the hook."""
        send = environ.get("wsgi.early_hints") if environ is not None else None
        if send is None:
            return None

        def on_interim(status: int, fields: h.Headers) -> None:
            if status != 103:
                return  # 102 Processing and the like mean nothing to the client
            try:
                send(list(h.end_to_end(fields)))
            except Exception as exc:  # noqa: BLE001 - a client gone, a field gunicorn refuses:
                # hints are an optimisation, the final response still goes out
                log.info("early hints not passed on: %s", exc)

        return on_interim
