"""Filling the cache from the origin: which responses are stored, freshening a stored
response after a 304, and the stale-while-revalidate refresh in the background.

Invariants:
- A response is stored only when policy allows it and its announced length fits
  ``max_object_size``; its writer publishes it only when whole (store/entry_file.py).
- A URL whose response is not storable for a reason of the response's own gets a pass
  marker, so later requests do not wait on its lock; never for a 5xx, which must leave a
  stale entry in place for stale-if-error.
- A background refresh runs only if it takes the URL's lock at once, so one worker
  refreshes; an origin error keeps the stale entry. Its thread owns the lease for the
  ``with`` block around the whole refresh, the body's storing included: the body stream
  is not handed the lease, and nothing else releases it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

from wsgi_proxy.cluster.shared_tier import SharedTier
from wsgi_proxy.core import headers as h
from wsgi_proxy.core import keys, policy, validation
from wsgi_proxy.core.config import Config
from wsgi_proxy.core.errors import ProxyError
from wsgi_proxy.core.model import Entry, RequestHead, ResponseHead
from wsgi_proxy.flow.forwarding import CLIENT_CONDITIONALS, Forwarder
from wsgi_proxy.request.body_stream import StreamingBody
from wsgi_proxy.request.exchange import Exchange
from wsgi_proxy.store.cache import Store
from wsgi_proxy.store.hits import Hit
from wsgi_proxy.store.pending_entry import PendingEntry

log = logging.getLogger(__name__)

# Origin answers that let a stale entry be served instead (RFC 5861 section 4).
ERROR_STATUSES = frozenset({500, 502, 503, 504})
# Not-storable reasons that come from the response, not this request: worth remembering so
# later requests for the URL do not wait on the lock (Varnish's hit-for-miss).
_PASS_REASONS = frozenset(
    {"no-store", "private", "set-cookie", "no freshness information", "stale and no validator",
     "vary *", "no-cache and no validator", "must-understand", "too large"}
)  # fmt: skip
PASS_TTL = 60.0


class Filler:
    """One per worker: puts what the origin sent into the shared store."""

    def __init__(
        self,
        config: Config,
        store: Store,
        forwarder: Forwarder,
        targeting: policy.Targeting,
        *,
        background: ThreadPoolExecutor,
        clock: Callable[[], float],
        shared: SharedTier | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.forwarder = forwarder
        self.targeting = targeting
        self.background = background
        self.clock = clock
        # The cluster's shared tier (WSGI_PROXY_REDIS_URL), for the tag index, or None.
        self.shared = shared

    def apply_304(self, found: Hit, head: ResponseHead, times: tuple[float, float]) -> Hit:
        stored = found.entry
        entry = replace(
            stored,
            head=validation.updated_head(stored.head, head),
            request_time=times[0],
            response_time=times[1],
            soft_purged=False,
        )
        self.store.refresh(found, entry)
        return replace(found, entry=entry)

    def start_storing(
        self,
        req: RequestHead,
        primary: str,
        head: ResponseHead,
        times: tuple[float, float],
        length: int | None,
        *,
        pass_until: float = 0.0,
    ) -> tuple[PendingEntry | None, str | None]:
        """A writer for a storable response, or None and the reason it is not stored; an
        unstorable response leaves a pass marker so later requests do not wait for it
        (renewed when half of the one found, ending at ``pass_until``, has run out: not a
        file write on every pass)."""
        decision = policy.decide_store(req, head, times[1], self.targeting)
        if isinstance(decision, policy.Store) and (length or 0) > self.config.max_object_size:
            decision = policy.NotStorable("too large")
        if isinstance(decision, policy.NotStorable):
            # A pass marker replaces what is stored: not for a 5xx, which is passing and
            # must leave a stale entry in place for stale-if-error.
            remember = head.status < 500 and req.get("authorization") is None
            renew = pass_until - times[1] < PASS_TTL / 2
            if decision.reason in _PASS_REASONS and remember and renew:
                self.store.publish_marker(primary, {"kind": "pass", "until": times[1] + PASS_TTL})
            log.debug("fetched %s: %d, not stored: %s", primary, head.status, decision.reason)
            return None, decision.reason
        names = keys.vary_names(head.headers) or ()
        tags = tuple((head.get(self.config.tag_header) or "").split())
        entry = Entry(primary, policy.stored_headers(head, decision), times[0], times[1],
                      keys.vary_values(names, req.headers), 0, tags)  # fmt: skip
        writer = self.store.begin(
            entry, expected_length=length, max_body=self.config.max_object_size
        )
        if self.shared is not None and tags and writer is not None:  # cluster hook: tag index
            self.shared.register_tags(tags, req.target)
        log.debug("fetched %s: %d, storing", primary, head.status)
        return writer, None if writer is not None else "cache write failed"

    def refresh_later(self, ex: Exchange) -> None:
        """Revalidate in the background (stale-while-revalidate), once across workers: the
        refresh runs only if it can take the URL's lock at once."""
        fields = h.without(self.forwarder.fields(ex), CLIENT_CONDITIONALS)
        req = RequestHead("GET", ex.req.target, ex.req.headers)
        self.background.submit(self._refresh, ex.primary, req, fields)

    def _refresh(self, primary: str, req: RequestHead, fields: h.Headers) -> None:
        lease = self.store.try_lease(primary)
        if lease is None:
            return
        with lease:
            try:
                self._revalidate(primary, req, fields)
            except ProxyError as exc:
                log.warning("background refresh of %s failed: %s", primary, exc)
            except Exception:
                log.exception("background refresh of %s failed", primary)

    def _revalidate(self, primary: str, req: RequestHead, fields: h.Headers) -> None:
        """The refresh itself, run holding the URL's lease: revalidate the stale entry,
        freshen it after a 304, store a new response (kept stale on an origin error)."""
        now = self.clock()
        found = self.store.lookup(primary, req.headers, now)
        if not isinstance(found, Hit):
            return
        with contextlib.closing(found):
            age = policy.current_age(found.entry, now)
            lifetime = policy.freshness_lifetime(
                found.entry.head, found.entry.response_time, self.targeting
            )
            if lifetime > age:
                return  # refreshed meanwhile
            conditional = validation.validators(found.entry.head)
            resp, times = self.forwarder.send("GET", req.target, (*fields, *conditional),
                                              None, None, chunked=False)  # fmt: skip
            head = ResponseHead(resp.head.status, resp.head.reason,
                                h.end_to_end(resp.head.headers))  # fmt: skip
            if head.status == 304 and conditional:
                resp.close()
                self.apply_304(found, head, times)
                return
            if head.status in ERROR_STATUSES:
                resp.close()
                log.warning("background refresh of %s: origin answered %d, kept stale",
                            primary, head.status)  # fmt: skip
                return
        writer, _ = self.start_storing(req, primary, head, times, resp.content_length)
        body = StreamingBody(resp, writer, None, None)  # the lease stays with _refresh
        with contextlib.closing(body):
            for _ in body:
                pass
