"""The optional shared tier on Redis: tag index and cross-node coalescing for the nodes of a
cluster (the purge log, also on Redis, is purge_log.py).

Enabled by ``WSGI_PROXY_REDIS_URL`` alone; without it nothing here is built and the
``redis`` package is never imported.

Invariants:
- Redis is never a reason to fail a request. Every call has short socket timeouts and no
  retries; after a failure the breaker skips Redis for ``BREAK_SECONDS``; the fault is
  logged once a minute at most; the caller goes on as if Redis were off (serves from its
  own cache, fetches from the origin).
- No body goes to Redis: it holds node URLs, request targets, tags and purge orders.
- Cross-node coalescing: a cold key's fetcher takes ``wsgi_proxy:fetch:<digest>`` with
  ``SET NX PX`` naming its node. Another node that finds the key taken by a live peer sends
  the request to that peer with ``PEER_HEADER``; the peer, itself waiting on its own
  fetch (its per-URL lock), answers from its cache. A peer request never coalesces across
  nodes again (no loops), and any failure of the relay falls back to the origin.
- The tag index is advisory (which nodes hold which URLs for a tag): registrations are
  queued and written by a background thread, off the request path, with an expiry.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TypeVar

from wsgi_proxy.core import headers as h
from wsgi_proxy.core import keys
from wsgi_proxy.core.config import Config, parse_origin
from wsgi_proxy.core.errors import ProxyError
from wsgi_proxy.request.body_stream import StreamingBody
from wsgi_proxy.request.exchange import Exchange
from wsgi_proxy.upstream.origin_client import Upstream

if TYPE_CHECKING:
    from redis import Redis

    from wsgi_proxy.ops.metrics import Metrics

log = logging.getLogger(__name__)
T = TypeVar("T")

SOCKET_TIMEOUT = 0.2
BREAK_SECONDS = 3.0
LOG_EVERY = 60.0
KEY_PREFIX = "wsgi_proxy:"
TAG_TTL_MS = 24 * 3600 * 1000
TAG_QUEUE = 10_000
PEER_HEADER = "X-WSGI-Proxy-Peer"
# A relayed request may wait on the owner's fetch up to its lock timeout, then for the body.
PEER_CONNECT_TIMEOUT = 0.5


class RedisLink:
    """One Redis client per process behind a circuit breaker. ``call`` answers None when
    Redis is off, broken or skipped; it never raises a Redis or socket error."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._client: Redis | None = None
        self._errors: tuple[type[BaseException], ...] = (OSError,)
        self._skip_until = 0.0
        self._logged_at = -LOG_EVERY
        self._down = False
        self._lock = threading.Lock()

    def _connect(self) -> Redis:
        with self._lock:
            if self._client is None:
                import redis  # noqa: PLC0415 - only when the shared tier is on
                from redis.backoff import NoBackoff  # noqa: PLC0415
                from redis.retry import Retry  # noqa: PLC0415

                self._errors = (redis.exceptions.RedisError, OSError)
                self._client = redis.Redis.from_url(
                    self.url,
                    socket_timeout=SOCKET_TIMEOUT,
                    socket_connect_timeout=SOCKET_TIMEOUT,
                    retry=Retry(NoBackoff(), 0),
                    health_check_interval=0,
                )
            return self._client

    @property
    def is_skipping(self) -> bool:
        return time.monotonic() < self._skip_until

    def call(self, what: str, action: Callable[[Redis], T]) -> T | None:
        """``action(client)``, or None if Redis is skipped or fails (then logged, skipped)."""
        if self.is_skipping:
            return None
        try:
            result = action(self._connect())
        except Exception as exc:
            if not isinstance(exc, self._errors):
                raise
            self._failed(what, exc)
            return None
        if self._down:
            self._down = False
            log.warning("Redis at %s is reachable again", self.url)
        return result

    def _failed(self, what: str, exc: BaseException) -> None:
        self._skip_until = time.monotonic() + BREAK_SECONDS
        self._down = True
        if time.monotonic() - self._logged_at >= LOG_EVERY:
            self._logged_at = time.monotonic()
            log.warning(
                "Redis at %s failed (%s: %s): going on without it, retrying every %.0f s",
                self.url, what, exc, BREAK_SECONDS,
            )  # fmt: skip


class SharedTier:
    """One per worker: the Redis link, the tag index writer and the cross-node fetch lock."""

    def __init__(self, config: Config, link: RedisLink, metrics: Metrics | None = None) -> None:
        self.config = config
        self.link = link
        self.node = config.node_url
        self.metrics = metrics
        self.lock_ms = int(config.lock_timeout * 1000)
        self._tags: queue.Queue[tuple[str, str]] = queue.Queue(TAG_QUEUE)
        self._peers: dict[str, Upstream] = {}
        self._peers_lock = threading.Lock()

    # ---- tag index ----------------------------------------------------------------------

    def register_tags(self, tags: Iterable[str], target: str) -> None:
        """Queue ``target``'s tags for the index; dropped when the queue is full."""
        for tag in tags:
            try:
                self._tags.put_nowait((tag, target))
            except queue.Full:
                return

    def flush_tags(self, wait: float) -> int:
        """Write queued registrations (waiting up to ``wait`` s for the first); return how
        many were written. Called by the background thread."""
        try:
            batch = [self._tags.get(timeout=wait)]
        except queue.Empty:
            return 0
        while len(batch) < 1000:
            try:
                batch.append(self._tags.get_nowait())
            except queue.Empty:
                break

        def write(client: Redis) -> None:
            pipe = client.pipeline(transaction=False)
            for tag, target in batch:
                key = tag_key(tag)
                pipe.sadd(key, f"{self.node}\t{target}")
                pipe.pexpire(key, TAG_TTL_MS)
            pipe.execute()

        return len(batch) if self.link.call("tag index", write) is not None else 0

    def tag_members(self, tag: str) -> list[tuple[str, str]] | None:
        """(node, target) pairs the index holds for ``tag``; None if Redis is unavailable."""
        members = self.link.call("tag index", lambda c: c.smembers(tag_key(tag)))
        if members is None:
            return None
        texts = (m.decode("utf-8", "replace") if isinstance(m, bytes) else str(m) for m in members)
        pairs = (t.split("\t", 1) for t in texts)
        return sorted((p[0], p[1]) for p in pairs if len(p) == 2)

    def forget_tag(self, tag: str) -> None:
        self.link.call("tag index", lambda c: c.delete(tag_key(tag)))

    # ---- cross-node coalescing ----------------------------------------------------------

    def relay(self, ex: Exchange) -> Iterable[bytes] | None:
        """Before a cold fetch: take the key's cluster lock, or, when a peer holds it, have
        that peer answer. None means: fetch from the origin (the caller's lock held). The
        local fetch lease stays with ``ex``, which releases it when the request's call
        returns, before the relayed body streams: nothing is stored from it."""
        if ex.req.get(PEER_HEADER) is not None or _has_body(ex):
            return None
        owner = self._take_lock(ex.primary)
        if owner is None or owner == self.node:
            return None
        if self.config.peers and owner not in self.config.peers:
            log.warning("fetch lock of %s held by %r, not a peer: fetching it", ex.primary, owner)
            return None
        fields = (*h.without(ex.req.headers, (PEER_HEADER,)), (PEER_HEADER, self.node))
        try:
            resp = self._peer(owner).send(ex.req.method, ex.req.target, fields, None,
                                          chunked=False)  # fmt: skip
        except ProxyError as exc:
            log.info("relay of %s to %s failed (%s): fetching it", ex.primary, owner, exc.detail)
            return None
        if resp.head.status >= 500:
            resp.close()
            log.info("relay of %s to %s: %d, fetching it", ex.primary, owner, resp.head.status)
            return None
        body = StreamingBody(resp, None, None, None)
        try:
            body.prefetch()
        except ProxyError as exc:
            body.close()
            log.info("relay of %s to %s broke (%s): fetching it", ex.primary, owner, exc.detail)
            return None
        log.debug("relayed %s from %s", ex.primary, owner)
        if self.metrics is not None:
            self.metrics.count_request("peer")
        ex.start_response(resp.head.status_line, list(h.end_to_end(resp.head.headers)))
        return body

    def _take_lock(self, primary: str) -> str | None:
        """This node's name if it took the key's lock, the owner's if another node holds
        it, None if Redis is unavailable."""
        key = f"{KEY_PREFIX}fetch:{keys.digest(primary)}"

        def take(client: Redis) -> Any:
            pipe = client.pipeline(transaction=True)
            pipe.set(key, self.node, nx=True, px=self.lock_ms)
            pipe.get(key)
            return pipe.execute()

        answer = self.link.call("fetch lock", take)
        if answer is None:
            return None
        owner = answer[1]
        return owner.decode() if isinstance(owner, bytes) else None

    def _peer(self, base_url: str) -> Upstream:
        with self._peers_lock:
            upstream = self._peers.get(base_url)
            if upstream is None:
                peer = replace(
                    self.config,
                    origin=parse_origin(base_url),
                    pool_size=4,
                    connect_timeout=PEER_CONNECT_TIMEOUT,
                    read_timeout=self.config.read_timeout + self.config.lock_timeout,
                )
                upstream = self._peers[base_url] = Upstream(peer)
            return upstream


def tag_key(tag: str) -> str:
    return f"{KEY_PREFIX}tag:{tag}"


def _has_body(ex: Exchange) -> bool:
    environ = ex.environ
    return str(environ.get("CONTENT_LENGTH") or "0") != "0" or bool(
        environ.get("HTTP_TRANSFER_ENCODING")
    )
