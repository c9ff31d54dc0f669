"""One request on its way through the proxy: its state, its WSGI plumbing, and the body
stream that feeds the client and the cache writer at once.

Invariants:
- ``Exchange.release`` gives back everything a request holds (an open entry, a URL lock).
- ``StreamingBody`` publishes the entry only after the origin's last byte, and before the
  client's; a body cut short propagates its error, so the client sees a broken response,
  never a short one taken for whole.
- The request target is taken byte for byte from gunicorn's ``RAW_URI``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO
from urllib.parse import quote, urlsplit

from wsgi_proxy import headers as h
from wsgi_proxy.errors import BadRequest
from wsgi_proxy.model import RequestHead
from wsgi_proxy.store import EntryWriter, Hit
from wsgi_proxy.upstream import OriginResponse

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
    primary: str = ""
    found: Hit | None = None
    lock: FileLock | None = None

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
        writer: EntryWriter | None,
        lock: FileLock | None,
        on_close: Callable[[int], None] | None,
    ) -> None:
        self.resp = resp
        self.writer = writer
        self.lock = lock
        self.on_close = on_close
        self.sent = 0

    def __iter__(self) -> Iterator[bytes]:
        writer = self.writer
        if writer is None:
            for chunk in self.resp.chunks():
                self.sent += len(chunk)
                yield chunk
            return
        # One chunk is held back so that the entry is published, and the lock released,
        # before the client has the last byte: a client's next request (a PUT that must
        # invalidate it, a conditional GET) then always finds it.
        held = None
        for chunk in self.resp.chunks():
            writer.write(chunk)
            if held is not None:
                self.sent += len(held)
                yield held
            held = chunk
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
