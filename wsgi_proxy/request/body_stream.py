"""The origin's body, streamed to the client and to the cache writer at once.

Invariants:
- ``StreamingBody`` publishes the entry only after the origin's last byte, and before the
  client's; a body cut short propagates its error, so the client sees a broken response,
  never a short one taken for whole.
- It owns the URL's fetch lease it was handed (exchange.py) and releases it once the entry
  is published, or when it is closed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from wsgi_proxy.core.errors import ProxyError
from wsgi_proxy.store.fetch_locks import FetchLease
from wsgi_proxy.store.pending_entry import PendingEntry
from wsgi_proxy.upstream.origin_client import OriginResponse


class StreamingBody:
    """The origin's body, streamed to the client and to the cache writer at once.

    The entry is published only after the origin's last byte; if its body is cut short the
    error propagates (gunicorn then closes the connection) and nothing is published; if the
    client goes away, ``close`` drops the unfinished entry. ``close`` always releases the
    origin connection and the URL's fetch lease.

    The lease, handed over by the request's exchange, is this body's from then on: released
    as soon as the entry is published (before the client has the last byte) or, at the
    latest, by ``close``, which the WSGI server calls however the response ends.
    """

    def __init__(
        self,
        resp: OriginResponse,
        writer: PendingEntry | None,
        lease: FetchLease | None,
        on_close: Callable[[int], None] | None,
    ) -> None:
        self.resp = resp
        self.writer = writer
        self.lease = lease
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
        # One chunk is held back so that the entry is published, and the lease released,
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
        self._release_lease()
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
            self._release_lease()

    def _release_lease(self) -> None:
        if self.lease is not None:
            self.lease.release()
            self.lease = None
