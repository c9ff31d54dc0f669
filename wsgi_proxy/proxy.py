"""The WSGI entry: runs one request through keys -> store -> policy -> upstream -> store.

Invariants:
- Every response carries ``X-Cache`` (HIT when the body came from the cache, revalidated or
  not; MISS otherwise), an RFC 9211 ``Cache-Status`` and ``Via``.
- GET and HEAD go through the cache; other methods are forwarded and, when they succeed,
  invalidate what is stored for their URL (RFC 9111 section 4.4).
- Concurrent misses for one URL make one origin request: the fetcher holds the URL's lock
  stripe until its entry is published; the others wait (``lock_timeout``), then look again.
  A URL whose last response was not storable gets a pass marker, so nobody waits on it.
- A ``ProxyError`` raised before the response started becomes its short plain-text answer;
  one raised while a body streams aborts the connection, so the client never takes a cut
  body for a whole one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, BinaryIO, assert_never
from urllib.parse import quote, urlsplit

from werkzeug.wsgi import FileWrapper

from wsgi_proxy import headers as h
from wsgi_proxy import keys, policy
from wsgi_proxy.config import Config
from wsgi_proxy.errors import BadRequest, NotInCache, ProxyError
from wsgi_proxy.model import Entry, RequestHead, ResponseHead
from wsgi_proxy.store import Hit, PassMarker, Store, try_acquire
from wsgi_proxy.upstream import OriginResponse, Upstream

if TYPE_CHECKING:
    from filelock import FileLock

log = logging.getLogger(__name__)

StartResponse = Callable[..., Any]
Environ = dict[str, Any]
# Request fields that only mean something to this hop (gunicorn answers Expect itself) or
# that the proxy sets itself.
_NOT_FORWARDED = ("host", "expect", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host")
_CLIENT_CONDITIONALS = ("if-none-match", "if-modified-since")
# Not-storable reasons that come from the response, not this request: worth remembering so
# later requests for the URL do not wait on the lock (Varnish's hit-for-miss).
_PASS_REASONS = frozenset(
    {"no-store", "private", "set-cookie", "no freshness information", "stale and no validator",
     "vary *", "no-cache and no validator", "must-understand", "too large"}
)  # fmt: skip
PASS_TTL = 60.0
FILE_BLOCK = 256 * 1024


class ProxyApp:
    """One per worker: holds the worker's origin pool and the shared store."""

    def __init__(
        self,
        config: Config,
        store: Store,
        upstream: Upstream,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.store = store
        self.upstream = upstream
        self.clock = clock
        self.origin_url = config.origin.url
        self.name = config.via_name

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        try:
            req = request_head(environ)
            if req.method in ("GET", "HEAD"):
                return self._cached(req, environ, start_response)
            return self._forward(req, environ, start_response)
        except ProxyError as exc:
            log.info("%s %s: %d %s", environ.get("REQUEST_METHOD"), environ.get("RAW_URI"),
                     exc.status, exc.detail)  # fmt: skip
            return self._error(exc, start_response)

    # ---- GET and HEAD -------------------------------------------------------------------

    def _cached(self, req: RequestHead, environ: Environ, sr: StartResponse) -> Iterable[bytes]:
        primary = keys.primary_key(self.origin_url, req.target)
        now = self.clock()
        found = self.store.lookup(primary, req.headers, now)
        if isinstance(found, PassMarker):
            log.debug("pass %s: last response not storable", primary)
            return self._fetch(req, environ, sr, primary, None, policy.Forward("uri-miss"), None)
        decision = policy.decide_lookup(req, found.entry if found else None, now)
        match decision:
            case policy.Fresh(age=age, ttl=ttl):
                assert found is not None  # noqa: S101 - Fresh implies an entry
                log.debug("hit %s age=%.0f ttl=%.0f", primary, age, ttl)
                return self._serve(req, environ, sr, found, found.entry, age, ttl, fwd=None)
            case policy.Unavailable():
                if found:
                    found.close()
                raise NotInCache("only-if-cached and nothing usable is stored")
            case policy.Revalidate() | policy.Forward():
                log.debug("%s %s: %s", type(decision).__name__.lower(), primary, decision.fwd)
                return self._coalesced(req, environ, sr, primary, found, decision)
            case _:
                assert_never(decision)

    def _coalesced(
        self,
        req: RequestHead,
        environ: Environ,
        sr: StartResponse,
        primary: str,
        found: Hit | None,
        decision: policy.Revalidate | policy.Forward,
    ) -> Iterable[bytes]:
        """Fetch holding the URL's lock; a request that had to wait looks again first."""
        lock = self.store.key_lock(primary, self.config.lock_timeout)
        if try_acquire(lock, 0):
            return self._fetch(req, environ, sr, primary, found, decision, lock)
        if found:
            found.close()
        held = try_acquire(lock, self.config.lock_timeout)
        if not held:
            log.info("lock wait for %s timed out: fetching without it", primary)
        now = self.clock()
        found = self.store.lookup(primary, req.headers, now)
        if isinstance(found, PassMarker) or not held:
            if held:
                lock.release()
            hit = found if isinstance(found, Hit) else None
            return self._fetch(req, environ, sr, primary, hit, decision, None)
        again = policy.decide_lookup(req, found.entry if found else None, now)
        if isinstance(again, policy.Fresh) and found is not None:
            lock.release()
            return self._serve(req, environ, sr, found, found.entry, again.age, again.ttl, None)
        if isinstance(again, policy.Revalidate | policy.Forward):
            decision = again
        return self._fetch(req, environ, sr, primary, found, decision, lock)

    def _fetch(
        self,
        req: RequestHead,
        environ: Environ,
        sr: StartResponse,
        primary: str,
        found: Hit | None,
        decision: policy.Revalidate | policy.Forward,
        lock: FileLock | None,
    ) -> Iterable[bytes]:
        """Ask the origin; store and stream a full response, or serve the refreshed entry
        after a 304 to our revalidation. Releases ``lock`` when done."""
        try:
            fields = self._forwarded_fields(req, environ)
            if isinstance(decision, policy.Revalidate) and found is not None:
                fields = (*h.without(fields, _CLIENT_CONDITIONALS), *decision.conditional)
            body, chunked = request_body(environ)
            request_time = self.clock()
            resp = self.upstream.send(req.method, req.target, fields, body, chunked=chunked)
            response_time = self.clock()
        except BaseException:
            _release(lock, found)
            raise
        head = ResponseHead(resp.head.status, resp.head.reason, h.end_to_end(resp.head.headers))
        if found is not None and isinstance(decision, policy.Revalidate) and head.status == 304:
            return self._refreshed(req, environ, sr, found, head, request_time, response_time,
                                   resp, lock, decision.fwd)  # fmt: skip
        if found is not None:
            found.close()
        return self._stream_fresh(req, sr, primary, decision.fwd, head, resp,
                                  (request_time, response_time), lock)  # fmt: skip

    def _refreshed(
        self,
        req: RequestHead,
        environ: Environ,
        sr: StartResponse,
        found: Hit,
        head: ResponseHead,
        request_time: float,
        response_time: float,
        resp: OriginResponse,
        lock: FileLock | None,
        fwd: str,
    ) -> Iterable[bytes]:
        """RFC 9111 section 4.3.4: freshen the stored response with the 304's fields."""
        resp.close()
        stored = found.entry
        entry = Entry(
            stored.key,
            policy.updated_head(stored.head, head),
            request_time,
            response_time,
            stored.vary,
            stored.body_length,
        )
        self.store.refresh(found, entry)
        if lock is not None:
            lock.release()
        now = self.clock()
        ttl = policy.freshness_lifetime(entry.head, response_time) - policy.current_age(entry, now)
        log.debug("revalidated %s: 304", stored.key)
        return self._serve(req, environ, sr, found, entry, policy.current_age(entry, now), ttl, fwd)

    def _stream_fresh(
        self,
        req: RequestHead,
        sr: StartResponse,
        primary: str,
        fwd: str,
        head: ResponseHead,
        resp: OriginResponse,
        times: tuple[float, float],
        lock: FileLock | None,
    ) -> Iterable[bytes]:
        decision = policy.decide_store(req, head, times[1])
        writer = None
        length = resp.content_length
        if isinstance(decision, policy.Store) and length is not None:
            if length > self.config.max_object_size:
                decision = policy.NotStorable("too large")
        if isinstance(decision, policy.Store) and req.method == "GET":
            stored = policy.stored_headers(head, decision)
            names = keys.vary_names(head.headers) or ()
            entry = Entry(primary, stored, times[0], times[1],
                          keys.vary_values(names, req.headers), 0)  # fmt: skip
            writer = self.store.begin(
                entry, expected_length=length, max_body=self.config.max_object_size
            )
        elif isinstance(decision, policy.NotStorable) and decision.reason in _PASS_REASONS:
            if req.get("authorization") is None:
                self.store.publish_marker(primary, {"kind": "pass", "until": times[1] + PASS_TTL})
        detail = decision.reason if isinstance(decision, policy.NotStorable) else None
        log.debug("fetched %s: %d, %s", primary, head.status, detail or "storing")
        if writer is None and lock is not None:
            lock.release()
            lock = None
        ttl = None
        if writer is not None:
            ttl = policy.freshness_lifetime(head, times[1]) - policy.current_age(
                Entry(primary, head, times[0], times[1], (), 0), times[1]
            )
        status = h.format_cache_status(self.name, fwd=fwd, fwd_status=head.status,
                                       stored=writer is not None, ttl=_int(ttl), detail=detail)  # fmt: skip
        fields = (*head.headers, *self._marks("MISS", status))
        sr(head.status_line, list(fields))
        return StreamingBody(resp, writer, lock)

    def _serve(
        self,
        req: RequestHead,
        environ: Environ,
        sr: StartResponse,
        found: Hit,
        entry: Entry,
        age: float,
        ttl: float,
        fwd: str | None,
    ) -> Iterable[bytes]:
        """Answer from the stored entry: 304 to a matching conditional, HEAD without a body,
        else the body by ``wsgi.file_wrapper`` (gunicorn sends it with sendfile)."""
        fwd_status = 304 if fwd else None
        status = h.format_cache_status(self.name, hit=fwd is None, fwd=fwd,
                                       fwd_status=fwd_status, ttl=_int(ttl))  # fmt: skip
        fields = h.without(entry.head.headers, ("content-length",))
        marks = (("Age", str(int(age))), *self._marks("HIT", status))
        if policy.is_not_modified(req, entry.head):
            found.close()
            sr("304 Not Modified", [*fields, *marks])
            return []
        sr(entry.head.status_line, [*fields, ("Content-Length", str(entry.body_length)), *marks])
        if req.method == "HEAD":
            found.close()
            return []
        wrapper = environ.get("wsgi.file_wrapper", FileWrapper)
        body: Iterable[bytes] = wrapper(found.file, FILE_BLOCK)
        return body

    # ---- other methods ------------------------------------------------------------------

    def _forward(self, req: RequestHead, environ: Environ, sr: StartResponse) -> Iterable[bytes]:
        body, chunked = request_body(environ)
        fields = self._forwarded_fields(req, environ)
        resp = self.upstream.send(req.method, req.target, fields, body, chunked=chunked)
        head = ResponseHead(resp.head.status, resp.head.reason, h.end_to_end(resp.head.headers))
        for target in policy.invalidated_targets(req, head, self.origin_url):
            self.store.invalidate(keys.primary_key(self.origin_url, target))
        status = h.format_cache_status(self.name, fwd="method", fwd_status=head.status)
        sr(head.status_line, [*head.headers, *self._marks("MISS", status)])
        return StreamingBody(resp, None, None)

    # ---- helpers ------------------------------------------------------------------------

    def _forwarded_fields(self, req: RequestHead, environ: Environ) -> h.Headers:
        """The client's end-to-end fields for the origin, with Host, Via and X-Forwarded-*
        set by this proxy (RFC 9110 section 7.6.3)."""
        prior = req.get("x-forwarded-for")
        client = str(environ.get("REMOTE_ADDR", ""))
        protocol = str(environ.get("SERVER_PROTOCOL", "HTTP/1.1")).removeprefix("HTTP/")
        fields = [
            *h.without(req.headers, _NOT_FORWARDED),
            ("Host", self.upstream.host),
            ("X-Forwarded-For", f"{prior}, {client}" if prior else client),
            ("X-Forwarded-Proto", str(environ.get("wsgi.url_scheme", "http"))),
        ]
        if environ.get("HTTP_HOST"):
            fields.append(("X-Forwarded-Host", str(environ["HTTP_HOST"])))
        fields.append(("Via", f"{protocol} {self.name}"))
        return tuple(fields)

    def _marks(self, x_cache: str, cache_status: str) -> h.Headers:
        return (("Via", f"1.1 {self.name}"), ("X-Cache", x_cache), ("Cache-Status", cache_status))

    def _error(self, exc: ProxyError, sr: StartResponse) -> Iterable[bytes]:
        body = exc.body
        status = h.format_cache_status(self.name, fwd="uri-miss", detail=exc.detail[:80])
        fields = [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),
            *self._marks("MISS", status),
        ]
        sr(f"{exc.status} {exc.reason}", fields)
        return [body]


class StreamingBody:
    """The origin's body, streamed to the client and to the cache writer at once.

    The entry is published only after the last byte; if the origin's body is cut short the
    error propagates (gunicorn then closes the connection) and nothing is published; if the
    client goes away, ``close`` drops the unfinished entry. ``close`` always releases the
    origin connection and the URL's lock.
    """

    def __init__(self, resp: OriginResponse, writer: Any, lock: FileLock | None) -> None:
        self.resp = resp
        self.writer = writer
        self.lock = lock

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.resp.chunks():
            if self.writer is not None:
                self.writer.write(chunk)
            yield chunk
        if self.writer is not None:
            self.writer.commit()
            self.writer = None

    def close(self) -> None:
        try:
            if self.writer is not None:
                self.writer.abort()
                self.writer = None
            self.resp.close()
        finally:
            if self.lock is not None:
                self.lock.release()
                self.lock = None


def request_head(environ: Environ) -> RequestHead:
    """The method, origin-form target (byte for byte) and end-to-end fields of the request."""
    method = str(environ.get("REQUEST_METHOD", "GET")).upper()
    raw = environ.get("RAW_URI")
    if isinstance(raw, str) and raw:
        target = _origin_form(raw, method)
    else:
        target = quote(str(environ.get("PATH_INFO", "")).encode("latin-1"), safe="/;=,@:")
        if environ.get("QUERY_STRING"):
            target += "?" + str(environ["QUERY_STRING"])
    return RequestHead(method, target, h.end_to_end(h.from_environ(environ)))


def _origin_form(raw: str, method: str) -> str:
    if raw.startswith("/"):
        return raw
    if raw == "*" and method == "OPTIONS":
        return raw
    parts = urlsplit(raw)
    if parts.scheme in ("http", "https") and parts.netloc:
        # Absolute form (RFC 9112 section 3.2.2): only the path and query reach the origin.
        return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    raise BadRequest("invalid request target")


def request_body(environ: Environ) -> tuple[BinaryIO | None, bool]:
    """The request body stream and whether it goes chunked (the client sent it chunked)."""
    stream = environ.get("wsgi.input")
    if "chunked" in str(environ.get("HTTP_TRANSFER_ENCODING", "")).lower():
        return stream, True
    length = str(environ.get("CONTENT_LENGTH") or "0")
    if not length.isdigit():
        raise BadRequest("invalid Content-Length")
    return (stream if int(length) > 0 else None), False


def _release(lock: FileLock | None, found: Hit | None) -> None:
    if lock is not None:
        lock.release()
    if found is not None:
        found.close()


def _int(value: float | None) -> int | None:
    return None if value is None else int(value)
