"""The WSGI entry: runs one request through keys -> store -> policy -> upstream -> store.
What is sent to the origin is built in forwarding.py; what comes back is stored by
filling.py, which also runs the background refreshes; answers from a stored entry are
made by serving.py.

Invariants:
- Every response carries ``X-Cache`` (HIT when the body came from the cache, revalidated or
  not; MISS otherwise), an RFC 9211 ``Cache-Status`` and ``Via``.
- GET and HEAD go through the cache; other methods are forwarded and, when they succeed,
  invalidate what is stored for their URL (RFC 9111 section 4.4).
- Concurrent misses for one URL make one origin request: the fetcher holds the URL's lock
  stripe until its entry is published; the others wait (``lock_timeout``), then look again.
  A stripe held for another URL is not waited for.
  A URL whose last response was not storable gets a pass marker, so nobody waits on it.
- The fetch lock is held as a ``FetchLease`` owned by the request's ``Exchange``, which
  ``__call__`` runs in a ``with`` block: whatever the exchange still holds when the call
  returns or raises is given back then. The one hand-over: a body that streams into the
  cache takes the lease (``StreamingBody``), and releases it once the entry is published.
  The exchange gives it back earlier only where it must: for a response that will not be
  stored, before its body is read (nobody need wait for it); and before the request is
  answered afresh (``_reread``), which would otherwise wait on its own lease.
- A ``ProxyError`` raised before the response started becomes its short plain-text answer;
  one raised while a body streams aborts the connection, so the client never takes a cut
  body for a whole one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import assert_never

from werkzeug.wrappers import Response

from wsgi_proxy.cluster.nodes import Cluster
from wsgi_proxy.cluster.shared_tier import SharedTier
from wsgi_proxy.core import headers as h
from wsgi_proxy.core import keys, policy, reuse, sites, validation
from wsgi_proxy.core.config import Config
from wsgi_proxy.core.errors import (
    BadRequest,
    ClientError,
    MisdirectedRequest,
    NotInCache,
    OriginBroken,
    ProxyError,
)
from wsgi_proxy.core.model import Entry, ResponseHead
from wsgi_proxy.flow.admin import Admin
from wsgi_proxy.flow.filling import ERROR_STATUSES, Filler
from wsgi_proxy.flow.forwarding import CLIENT_CONDITIONALS, Forwarder
from wsgi_proxy.flow.ready_answers import ReadyAnswers
from wsgi_proxy.flow.serving import Serving
from wsgi_proxy.ops.metrics import Metrics
from wsgi_proxy.request.body_stream import StreamingBody
from wsgi_proxy.request.client_body import request_body
from wsgi_proxy.request.exchange import Environ, Exchange, StartResponse, request_head
from wsgi_proxy.store.cache import Store
from wsgi_proxy.store.fetch_locks import FetchWaits
from wsgi_proxy.store.hits import Hit, PassMarker
from wsgi_proxy.upstream.origin_client import OriginResponse, Upstream

log = logging.getLogger(__name__)

# Ready answers (ready_answers.py), per worker at most: bytes of bodies held in memory; answers.
READY_BYTES = 32 << 20
READY_ANSWERS = 4096


class ProxyApp:
    """One per worker: holds the worker's origin pool and the shared store."""

    def __init__(
        self,
        config: Config,
        store: Store,
        upstream: Upstream,
        metrics: Metrics,
        clock: Callable[[], float] = time.time,
        *,
        cluster: Cluster | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.metrics = metrics
        self.admin = Admin(config, store, metrics, cluster)
        self.clock = clock
        self.origin_url = config.origin.url
        self.name = config.via_name
        self.targeting = policy.Targeting(config.targeted_fields, config.via_name)
        # Fields the client never sees: Surrogate-Control is for this cache (RFC 9213
        # fields such as CDN-Cache-Control go on, for the caches after it), and the purge
        # tags are for the admin interface.
        self.private_fields = (*self.targeting.removed_fields, config.tag_header.lower())
        # stale-while-revalidate refreshes; a few threads, since each needs the URL's lock.
        self.background = ThreadPoolExecutor(max_workers=4, thread_name_prefix="refresh")
        # Ready answers tell files apart as the hot set does: only where it is on.
        answers = READY_ANSWERS if store.fine_timestamps else 0
        self.ready = ReadyAnswers(READY_BYTES, answers)
        self.serving = Serving(store, self.ready, self.background,
                               private_fields=self.private_fields, targeting=self.targeting,
                               sent=self._count_cache_bytes,
                               damaged=self._count_damaged)  # fmt: skip
        self.forwarder = Forwarder(config, upstream, metrics, clock)
        self.fetch_waits = FetchWaits()
        # The cluster's shared tier (WSGI_PROXY_REDIS_URL), or None: cross-node coalescing
        # here, the tag index in the filler.
        self.shared: SharedTier | None = cluster.shared if cluster is not None else None
        self.filler = Filler(config, store, self.forwarder, self.targeting,
                             background=self.background, clock=clock,
                             shared=self.shared)  # fmt: skip

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        if self.admin.is_admin_request(environ):
            return self.admin(environ, start_response)
        client = environ.get("gunicorn.socket")
        if client is not None:
            # gunicorn's gthread sockets block without limit: a client that stops reading
            # or sending would hold this thread forever. gunicorn resets it after the request.
            client.settimeout(self.config.client_timeout)
        # Ready answers are kept by the request's raw site and target, and made only after
        # the flow below has checked that site: they need no check of their own.
        scheme = sites.request_scheme(environ, self.config.trusted_proxies)
        ready_key = sites.raw_key(environ, scheme)
        if ready_key is not None:
            answer = self._ready_answer(ready_key, environ, start_response)
            if answer is not None:
                return answer
        try:
            site = self._site(environ, scheme)
            # The one owner of what the request holds: left, it gives back what it still has.
            with Exchange(request_head(environ), environ, start_response, site, ready_key) as ex:
                if ex.req.method in ("GET", "HEAD"):
                    return self._cached(ex)
                return self._forward(ex)
        except ProxyError as exc:
            # A 5xx (the origin failed) is the operator's to see, with its cause. A 4xx is
            # the client's: the access log has it, its cause is at debug level, so that a
            # client sending junk cannot fill the error log (nginx logs those at info,
            # below its default level; gunicorn's default is info).
            level = logging.WARNING if exc.status >= 500 else logging.DEBUG
            log.log(level, "%s %s: %d %s", environ.get("REQUEST_METHOD"),
                    environ.get("RAW_URI"), exc.status, exc)  # fmt: skip
            self.metrics.errors.labels(type(exc).__name__).inc()
            return self._error(exc, environ, start_response)

    # ---- GET and HEAD -------------------------------------------------------------------

    def _site(self, environ: Environ, scheme: str) -> sites.Site:
        """The request's site (sites.py): 400 for a missing or invalid ``Host``, 421 for
        a host not in ``WSGI_PROXY_ALLOWED_HOSTS``; nothing reaches the origin then."""
        site = sites.request_site(environ, scheme)
        if site is None:
            raise BadRequest("missing or invalid Host")
        allowed = self.config.allowed_hosts
        if allowed and not sites.is_allowed(site.host, allowed):
            raise MisdirectedRequest(f"this proxy does not serve the host {site.host!r}")
        return site

    def _ready_answer(
        self, key: str, environ: Environ, start_response: StartResponse
    ) -> Iterable[bytes] | None:
        """A plain fresh hit answered as the last time (ready_answers.py), or None: the general flow
        answers (and may make the answer ready again)."""
        return self.ready.answer(key, environ, start_response, self.clock, self.store,
                                 marks=self._ready_marks, sent=self._count_cache_bytes)  # fmt: skip

    def _ready_marks(self, age: float, ttl: float) -> h.Headers:
        return (("Age", str(int(age))), *self._marks("HIT", self._hit_status(ttl), "hit"))

    def _cached(self, ex: Exchange) -> Iterable[bytes]:
        ex.primary = keys.primary_key(self.origin_url, ex.req.target, ex.site.url)
        now = self.clock()
        found = self.store.lookup(ex.primary, ex.req.headers, now)
        if isinstance(found, PassMarker):
            log.debug("pass %s: last response not storable", ex.primary)
            ex.pass_until = found.until
            return self._fetch(ex, reuse.Forward("uri-miss"))
        ex.keep_found(found)
        decision = reuse.decide_lookup(ex.req, found.entry if found else None, now, self.targeting)
        match decision:
            case reuse.Fresh(age=age, ttl=ttl):
                log.debug("hit %s age=%.0f ttl=%.0f", ex.primary, age, ttl)
                return self._serve(ex, age, self._hit_status(ttl), "hit", fresh=True)
            case reuse.Stale(age=age, ttl=ttl):
                log.debug("stale-while-revalidate %s age=%.0f", ex.primary, age)
                self.filler.refresh_later(ex)
                status = self._hit_status(ttl, "stale-while-revalidate")
                return self._serve(ex, age, status, "stale")
            case reuse.Unavailable():
                raise NotInCache("only-if-cached and nothing usable is stored")
            case reuse.Revalidate() | reuse.Forward():
                log.debug("%s %s: %s", type(decision).__name__.lower(), ex.primary, decision.fwd)
                return self._coalesced(ex, decision)
            case _:
                assert_never(decision)

    def _coalesced(
        self, ex: Exchange, decision: reuse.Revalidate | reuse.Forward
    ) -> Iterable[bytes]:
        """Fetch holding the URL's lock (a lease the exchange owns). A request that finds
        it taken waits until it is free (the fetcher has published), releases it at once so
        that the other waiters are not queued behind it, and looks again; if there is still
        nothing usable it fetches itself, taking the lock if it is free. A lock stripe held
        for another URL is not waited for (store/fetch_locks.py)."""
        lease = self.store.try_lease(ex.primary)
        if lease is not None:
            ex.hold(lease)
            # Another request may have published (or refreshed) the entry between our
            # lookup and taking the lock: look once more, or the origin is asked twice.
            found = self.store.lookup(ex.primary, ex.req.headers, self.clock())
            if isinstance(found, Hit):
                again = reuse.decide_lookup(ex.req, found.entry, self.clock(), self.targeting)
                if isinstance(again, reuse.Fresh):
                    ex.keep_found(found)
                    self.metrics.coalesced.inc()
                    status = self._hit_status(again.ttl)
                    return self._serve(ex, again.age, status, "hit", fresh=True)
                found.close()
            if self.shared is not None and ex.found is None:  # cluster hook: a cold key
                relayed = self.shared.relay(ex)
                if relayed is not None:
                    return relayed
            return self._fetch(ex, decision)
        ex.release()  # nothing held while waiting: the entry is looked up again after
        lock = self.store.key_lock(ex.primary, self.config.lock_timeout)
        if not self.fetch_waits.wait(lock, keys.digest(ex.primary), self.config.lock_timeout):
            log.info("lock wait for %s timed out: fetching without it", ex.primary)
        return self._after_wait(ex, decision)

    def _after_wait(
        self, ex: Exchange, decision: reuse.Revalidate | reuse.Forward
    ) -> Iterable[bytes]:
        """After the wait for another request's fetch: serve what it published, or fetch,
        taking the URL's lock if it is free."""
        now = self.clock()
        found = self.store.lookup(ex.primary, ex.req.headers, now)
        if isinstance(found, PassMarker):
            return self._fetch(ex, decision)
        ex.keep_found(found)
        again = reuse.decide_lookup(ex.req, found.entry if found else None, now, self.targeting)
        if isinstance(again, reuse.Fresh | reuse.Stale):
            self.metrics.coalesced.inc()
            fresh = isinstance(again, reuse.Fresh)
            return self._serve(ex, again.age, self._hit_status(again.ttl), "hit", fresh=fresh)
        if isinstance(again, reuse.Revalidate | reuse.Forward):
            decision = again
        lease = self.store.try_lease(ex.primary)
        if lease is not None:
            ex.hold(lease)
        return self._fetch(ex, decision)

    def _fetch(self, ex: Exchange, decision: reuse.Revalidate | reuse.Forward) -> Iterable[bytes]:
        """Ask the origin; store and stream a full response, serve the refreshed entry after
        a 304 to our revalidation, or the stale entry when the origin fails. What the
        exchange holds is given back when the request ends (``__call__``), also on error."""
        revalidating = isinstance(decision, reuse.Revalidate) and ex.found is not None
        try:
            fields = self.forwarder.fields(ex)
            if isinstance(decision, reuse.Revalidate) and revalidating:
                fields = (*h.without(fields, CLIENT_CONDITIONALS), *decision.conditional)
            body, chunked = request_body(ex.environ, self.config.max_body_size)
            resp, times = self.forwarder.send(ex.req.method, ex.req.target, fields, body,
                                              ex.environ, chunked=chunked)  # fmt: skip
        except ClientError:
            raise  # the request is at fault, not the origin: no stale answer
        except ProxyError as exc:
            if self._is_stale_usable(ex):
                return self._serve_stale(ex, str(exc))
            raise
        head = ResponseHead(resp.head.status, resp.head.reason, h.end_to_end(resp.head.headers))
        if revalidating and head.status == 304:
            resp.close()
            self.metrics.revalidations.labels("not-modified").inc()
            return self._refreshed(ex, head, times, decision.fwd)
        if revalidating:
            self.metrics.revalidations.labels("modified").inc()
        if head.status in ERROR_STATUSES and self._is_stale_usable(ex):
            resp.close()
            return self._serve_stale(ex, f"the origin answered {head.status}", head.status)
        ex.keep_found(None)
        return self._stream_fresh(ex, decision.fwd, head, resp, times)

    def _is_stale_usable(self, ex: Exchange) -> bool:
        return ex.found is not None and reuse.is_stale_on_error_allowed(
            ex.req, ex.found.entry, self.clock(), self.config.stale_if_error, self.targeting
        )

    def _serve_stale(
        self, ex: Exchange, reason: str, fwd_status: int | None = None
    ) -> Iterable[bytes]:
        """RFC 5861 section 4 and RFC 9111 section 4.2.4: the origin failed, serve stale."""
        assert ex.found is not None  # noqa: S101 - checked by _is_stale_usable
        now = self.clock()
        age = policy.current_age(ex.found.entry, now)
        ttl = policy.freshness_lifetime(ex.found.entry.head, ex.found.entry.response_time,
                                        self.targeting) - age  # fmt: skip
        log.warning("serving stale %s: %s", ex.primary, reason)
        status = h.format_cache_status(self.name, hit=True, fwd="stale", fwd_status=fwd_status,
                                       ttl=_int(ttl), detail="stale-if-error")  # fmt: skip
        return self._serve(ex, age, status, "stale")

    def _refreshed(
        self, ex: Exchange, head: ResponseHead, times: tuple[float, float], fwd: str
    ) -> Iterable[bytes]:
        """RFC 9111 section 4.3.4: freshen the stored response with the 304's fields."""
        assert ex.found is not None  # noqa: S101 - only called when revalidating
        found = self.filler.apply_304(ex.found, head, times)
        ex.keep_found(found)  # the same open file, with the freshened head
        entry = found.entry
        age = policy.current_age(entry, self.clock())
        ttl = policy.freshness_lifetime(entry.head, times[1], self.targeting) - age
        log.debug("revalidated %s: 304", entry.key)
        status = h.format_cache_status(self.name, fwd=fwd, fwd_status=304, ttl=_int(ttl))
        return self._serve(ex, age, status, "revalidated")

    def _stream_fresh(
        self,
        ex: Exchange,
        fwd: str,
        head: ResponseHead,
        resp: OriginResponse,
        times: tuple[float, float],
    ) -> Iterable[bytes]:
        """Stream a full response to the client, and to the cache when it may be stored."""
        writer, detail = self.filler.start_storing(
            ex.req, ex.primary, head, times, resp.content_length, pass_until=ex.pass_until
        )
        ttl = None
        if writer is not None:
            age = policy.current_age(Entry(ex.primary, head, *times, (), 0), times[1])
            ttl = policy.freshness_lifetime(head, times[1], self.targeting) - age
        else:
            # Nothing will be published: the waiters need not wait for the origin's body.
            ex.release()
        status = h.format_cache_status(
            self.name, fwd=fwd, fwd_status=head.status, stored=writer is not None,
            ttl=_int(ttl), detail=detail,
        )  # fmt: skip
        fields = h.without(head.headers, self.private_fields)
        # The body outlives this call: it takes the lease, and releases it once published.
        body = StreamingBody(resp, writer, ex.hand_over_lease(), self._count_origin_bytes)
        _prefetch(body)
        outcome = "miss" if writer is not None else "pass"
        ex.start_response(head.status_line, [*fields, *self._marks("MISS", status, outcome)])
        return body

    def _hit_status(self, ttl: float, detail: str | None = None) -> str:
        return h.format_cache_status(self.name, hit=True, ttl=_int(ttl), detail=detail)

    def _serve(
        self, ex: Exchange, age: float, cache_status: str, outcome: str, *, fresh: bool = False
    ) -> Iterable[bytes]:
        """Answer from the stored entry (serving.py); if its body turns out unreadable, drop
        it and answer afresh. ``fresh``: read from the store and found fresh, so the answer
        may be made ready (not a stale one, nor one refreshed after a 304)."""
        found = ex.found
        assert found is not None  # noqa: S101 - callers serve only what they found
        marks = (("Age", str(int(age))), *self._marks("HIT", cache_status, outcome))
        body = self.serving.serve(ex, found, marks, fresh=fresh)
        return self._reread(ex, found) if body is None else body

    def _reread(self, ex: Exchange, found: Hit) -> Iterable[bytes]:
        """The stored body could not be read whole or failed its checksum: drop the entry
        (if still there) and answer the request afresh, once."""
        log.warning("removing unreadable cache entry %s", found.location)
        # Give back the entry and any lease first: the answer afresh takes its own.
        ex.release()
        self.store.remove_if_same(found)
        if ex.environ.get("wsgi_proxy.reread"):
            raise OriginBroken("the cached response could not be read")
        ex.environ["wsgi_proxy.reread"] = True
        return self(ex.environ, ex.start_response)

    # ---- other methods ------------------------------------------------------------------

    def _forward(self, ex: Exchange) -> Iterable[bytes]:
        """Other methods: forwarded as they are; a success invalidates (section 4.4)."""
        body, chunked = request_body(ex.environ, self.config.max_body_size)
        fields = self.forwarder.fields(ex)
        resp, _ = self.forwarder.send(ex.req.method, ex.req.target, fields, body, ex.environ,
                             chunked=chunked)  # fmt: skip
        head = ResponseHead(resp.head.status, resp.head.reason, h.end_to_end(resp.head.headers))
        # The target and same-origin Location and Content-Location, for both schemes of the
        # request's host: the other scheme's entry of the same resource is as outdated.
        same_origin = (self.origin_url, ex.site.url)
        for target in validation.invalidated_targets(ex.req, head, same_origin):
            for scheme in sites.SCHEMES:
                site = ex.site.with_scheme(scheme).url
                self.store.invalidate(keys.primary_key(self.origin_url, target, site))
        status = h.format_cache_status(self.name, fwd="method", fwd_status=head.status)
        stream = StreamingBody(resp, None, None, self._count_origin_bytes)
        _prefetch(stream)
        ex.start_response(head.status_line, [*head.headers, *self._marks("MISS", status, "method")])
        return stream

    # ---- helpers ------------------------------------------------------------------------

    def _count_cache_bytes(self, count: int) -> None:
        self.metrics.count_bytes("cache", count)

    def _count_damaged(self, exc: ProxyError) -> None:
        """A stored body failed its check while it was sent (serving.CheckedStream)."""
        log.warning("cutting an answer short: %s", exc.detail)
        self.metrics.errors.labels(type(exc).__name__).inc()

    def _count_origin_bytes(self, count: int) -> None:
        self.metrics.count_bytes("origin", count)

    def _marks(self, x_cache: str, cache_status: str, outcome: str) -> h.Headers:
        self.metrics.count_request(outcome)
        return (("Via", f"1.1 {self.name}"), ("X-Cache", x_cache), ("Cache-Status", cache_status))

    def _error(self, exc: ProxyError, environ: Environ, sr: StartResponse) -> Iterable[bytes]:
        """The proxy's own error answer: short plain text, never stored, as a werkzeug
        ``Response`` (which also leaves the body out of an answer to HEAD). Answers from the
        cache and the origin stay lists of fields (core/errors.py says why)."""
        status = h.format_cache_status(self.name, fwd="uri-miss", detail=exc.detail[:80])
        fields = [("Cache-Control", "no-store"), *exc.fields, *self._marks("MISS", status, "error")]
        response = Response(exc.body, status=f"{exc.status} {exc.reason}", headers=fields,
                            content_type="text/plain; charset=utf-8")  # fmt: skip
        answer: Iterable[bytes] = response(environ, sr)
        return answer


def _prefetch(body: StreamingBody) -> None:
    """Read the body's first chunk; on failure give back what the body holds and raise."""
    try:
        body.prefetch()
    except BaseException:
        body.close()
        raise


def _int(value: float | None) -> int | None:
    return None if value is None else int(value)
