"""One request on its way through the proxy: its state, its WSGI plumbing, and the body
stream that feeds the client and the cache writer at once.

Invariants:
- ``Exchange.release`` gives back everything a request holds (an open entry, a URL lock).
- ``StreamingBody`` publishes the entry only after the origin's last byte, and before the
  client's; a body cut short propagates its error, so the client sees a broken response,
  never a short one taken for whole.
- The request target is taken byte for byte from gunicorn's ``RAW_URI``; one holding a
  control character or a space is refused, whatever the gunicorn let through.
- A request body's first block is read and checked before the origin is asked
  (``request_body``); every later failure of the client's stream is a ``ProxyError``
  raised while the body is sent, and the origin connection carrying it is closed.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from gunicorn.http.errors import NoMoreData, ParseException

from wsgi_proxy.core import headers as h
from wsgi_proxy.core.errors import (
    BadRequest,
    ClientTimeout,
    MethodNotAllowed,
    PayloadTooLarge,
    ProxyError,
    UnsupportedCoding,
)
from wsgi_proxy.core.model import RequestHead
from wsgi_proxy.core.sites import Site
from wsgi_proxy.store.cache import PendingEntry
from wsgi_proxy.store.hits import Hit
from wsgi_proxy.upstream.origin_client import OriginResponse

if TYPE_CHECKING:
    from filelock import FileLock

StartResponse = Callable[..., Any]
Environ = dict[str, Any]


@dataclass(slots=True)
class Exchange:
    """One request on its way through the proxy, and what it holds: the stored entry it
    opened and the URL lock it took. ``release`` gives both back."""

    req: RequestHead
    environ: Environ
    start_response: StartResponse
    site: Site
    ready_key: str | None = None  # sites.raw_key: where a ready answer to it is kept
    primary: str = ""
    found: Hit | None = None
    lock: FileLock | None = None
    pass_until: float = 0.0  # when the URL's pass marker, if one was found, runs out

    def release(self) -> None:
        if self.found is not None:
            self.found.close()
            self.found = None
        self.release_lock()

    def release_lock(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None


class StreamingBody:
    """The origin's body, streamed to the client and to the cache writer at once.

    The entry is published only after the origin's last byte; if its body is cut short the
    error propagates (gunicorn then closes the connection) and nothing is published; if the
    client goes away, ``close`` drops the unfinished entry. ``close`` always releases the
    origin connection and the URL's lock.
    """

    def __init__(
        self,
        resp: OriginResponse,
        writer: PendingEntry | None,
        lock: FileLock | None,
        on_close: Callable[[int], None] | None,
    ) -> None:
        self.resp = resp
        self.writer = writer
        self.lock = lock
        self.on_close = on_close
        self.sent = 0
        self.chunks = resp.chunks()
        self.first: bytes | None = None

    def prefetch(self) -> None:
        """Read the first chunk now, before the response starts: an origin that fails
        before sending any body byte then gets the proxy's own error answer instead of a
        response that starts and breaks (or gunicorn's HTML error page)."""
        self.first = next(self.chunks, None)

    def _all_chunks(self) -> Iterator[bytes]:
        if self.first is not None:
            yield self.first
            self.first = None
        yield from self.chunks

    def __iter__(self) -> Iterator[bytes]:
        writer = self.writer
        if writer is None:
            for chunk in self._all_chunks():
                self.sent += len(chunk)
                yield chunk
            return
        # One chunk is held back so that the entry is published, and the lock released,
        # before the client has the last byte: a client's next request (a PUT that must
        # invalidate it, a conditional GET) then always finds it.
        held = None
        try:
            for chunk in self._all_chunks():
                writer.write(chunk)
                if held is not None:
                    self.sent += len(held)
                    yield held
                held = chunk
        except ProxyError:
            # The entry is dropped (close aborts it). The held bytes still go out before
            # the connection is cut, so the client sees a started response broken off.
            if held is not None:
                self.sent += len(held)
                yield held
            raise
        writer.commit()
        self.writer = None
        self._release_lock()
        if held is not None:
            self.sent += len(held)
            yield held

    def close(self) -> None:
        try:
            if self.writer is not None:
                self.writer.abort()
                self.writer = None
            self.resp.close()
            if self.on_close is not None:
                self.on_close(self.sent)
        finally:
            self._release_lock()

    def _release_lock(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None


# Octets no request target holds (RFC 9112 section 3.2: visible ASCII only): controls and
# space. gunicorn 27 refuses a request line with one; gunicorn 23 passes a NUL on.
_NOT_IN_TARGET = re.compile(r"[\x00-\x20\x7f]")


def request_head(environ: Environ) -> RequestHead:
    """The method, origin-form target (byte for byte) and end-to-end fields of the request."""
    method = str(environ.get("REQUEST_METHOD", "GET")).upper()
    if method == "CONNECT":
        # A reverse proxy opens no tunnels, whatever the target looks like.
        raise MethodNotAllowed("CONNECT is not supported")
    raw = environ.get("RAW_URI")
    if isinstance(raw, str) and raw:
        if _NOT_IN_TARGET.search(raw):
            raise BadRequest("invalid request target")
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


def request_body(environ: Environ, limit: int) -> tuple[bytes | LimitedBody | None, bool]:
    """The request body for the origin, and whether it goes chunked.

    Its first block is read here, before anything is sent: bad framing, a body cut short
    or a stalled client there are answered by the proxy, and the origin sees nothing. A
    body that came whole in that block is returned as bytes, sent with a Content-Length (a
    small chunked upload then reaches origins that take no chunked requests, as nginx's
    buffering would); a longer one streams, chunked if the client sent it so, else with its
    Content-Length. ``PayloadTooLarge`` past ``limit`` bytes: before anything is read when
    the length is declared, while streaming when it is chunked."""
    stream = environ.get("wsgi.input")
    codings = [c.lower() for c in h.parse_list(environ.get("HTTP_TRANSFER_ENCODING"))]
    if codings:
        if codings != ["chunked"]:
            # gunicorn removed the chunked framing only: the origin would get coded bytes
            # without the field saying so (RFC 9112 section 6.1: 501).
            raise UnsupportedCoding("transfer codings other than chunked are not supported")
        declared = None
    else:
        length = str(environ.get("CONTENT_LENGTH") or "0")
        if not length.isdigit():
            raise BadRequest("invalid Content-Length")
        declared = int(length)
        if declared > limit:
            raise PayloadTooLarge(f"the request body is over {limit} bytes")
        if declared == 0:
            return None, False
    body = LimitedBody(stream, limit, declared)
    if body.read_first():
        return body.first or None, False
    return body, declared is None


class LimitedBody:
    """The request body as blocks for urllib3: the first block read ahead (``read_first``),
    the rest as it comes. Refused past its limit. This is the edge that meets the client's
    stream, so its failures become ``ProxyError`` here: a stall (the socket timeout)
    ``ClientTimeout``; bad chunked framing (gunicorn's parse errors), a body that ends
    before its Content-Length or its last chunk, a lost connection ``BadRequest``. None of
    them is an ``OSError``, which urllib3 would take for the origin's (and ignore some of)."""

    BLOCK = 64 * 1024

    def __init__(self, stream: Any, limit: int, declared: int | None) -> None:
        self.stream = stream
        self.limit = limit
        self.declared = declared  # the Content-Length; None when chunked
        self.received = 0
        self.first = b""

    def read_first(self) -> bool:
        """Read the first block (``BLOCK`` bytes, or all the body if less) into ``first``;
        whether that is the whole body. A short read is no proof of the end: one more read
        must find nothing (gunicorn's finds it at once, without waiting on the client)."""
        parts: list[bytes] = []
        held, ended = 0, False
        while held < self.BLOCK and not ended:
            block = self._read()
            parts.append(block)
            held += len(block)
            ended = not block or self.received == self.declared
        self.first = b"".join(parts)
        return ended

    def __iter__(self) -> Iterator[bytes]:
        first, self.first = self.first, b""
        if first:
            yield first
        while block := self._read():
            yield block

    def _read(self) -> bytes:
        try:
            block: bytes = self.stream.read(self.BLOCK)
        except TimeoutError:
            raise ClientTimeout("the client stopped sending its body") from None
        except NoMoreData:
            raise BadRequest("the request body ended before its last chunk") from None
        except ParseException as exc:
            raise BadRequest(f"invalid request body: {exc}") from None
        except OSError as exc:
            raise BadRequest(f"the client connection failed: {exc}") from None
        self.received += len(block)
        if self.received > self.limit:
            raise PayloadTooLarge(f"the request body is over {self.limit} bytes")
        if self.declared is not None and not block and self.received < self.declared:
            # gunicorn's reader of a declared length ends quietly when the client does.
            raise BadRequest(
                f"the request body ended after {self.received} of {self.declared} bytes"
            )
        return block
