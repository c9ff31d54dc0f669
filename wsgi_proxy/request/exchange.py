"""One request on its way through the proxy: its state (``Exchange``) and its head as the
proxy reads it from gunicorn's environ.

Invariants:
- One owner at a time for what a request holds: the URL's fetch lease (store/fetch_locks.py)
  and the stored entry it opened. The ``Exchange`` owns both for as long as ``ProxyApp`` runs
  the request in its ``with`` block, and gives back, when the block ends (returned or
  raised), whatever it still holds. A body that outlives the block takes over what it needs:
  ``StreamingBody`` (body_stream.py) the lease (``hand_over_lease``), which it releases once
  the entry is published or when it is closed; a body sent from the entry's file its ``Hit``
  (``hand_over_found``), closed with it. Nothing else releases either: the app may only
  have the exchange give them back early (``release``).
- The request target is taken byte for byte from gunicorn's ``RAW_URI``; one holding a
  control character or a space is refused, whatever the gunicorn let through.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

from wsgi_proxy.core import headers as h
from wsgi_proxy.core.errors import BadRequest, MethodNotAllowed
from wsgi_proxy.core.model import RequestHead
from wsgi_proxy.core.sites import Site
from wsgi_proxy.store.fetch_locks import FetchLease
from wsgi_proxy.store.hits import Hit

StartResponse = Callable[..., Any]
Environ = dict[str, Any]


@dataclass(slots=True)
class Exchange:
    """One request on its way through the proxy, and what it holds: the stored entry it
    opened (``found``) and the URL's fetch lease (``lease``). A context manager: the end of
    the ``with`` block gives back what it still holds (``release``)."""

    req: RequestHead
    environ: Environ
    start_response: StartResponse
    site: Site
    ready_key: str | None = None  # sites.raw_key: where a ready answer to it is kept
    primary: str = ""
    found: Hit | None = None
    lease: FetchLease | None = None
    pass_until: float = 0.0  # when the URL's pass marker, if one was found, runs out

    def __enter__(self) -> Exchange:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def hold(self, lease: FetchLease) -> None:
        """Own ``lease`` until the request ends or hands it over. A request holds one lease
        at most: one held already is given back first."""
        if self.lease is not None:
            self.lease.release()
        self.lease = lease

    def hand_over_lease(self) -> FetchLease | None:
        """The lease, now the caller's to release (a body that streams into the cache)."""
        lease, self.lease = self.lease, None
        return lease

    def keep_found(self, found: Hit | None) -> None:
        """Hold ``found`` instead of the entry held so far, which is closed unless ``found``
        is the same open file (an entry freshened after a 304)."""
        old, self.found = self.found, found
        if old is not None and (found is None or found.file is not old.file):
            old.close()

    def hand_over_found(self) -> Hit | None:
        """The entry, now the caller's to close (a body sent from its file)."""
        found, self.found = self.found, None
        return found

    def release(self) -> None:
        """Give back what the exchange holds: close the entry, release the lease. Early, it
        lets the waiters for the URL go before the request ends; again, it does nothing."""
        self.keep_found(None)
        if self.lease is not None:
            self.lease.release()
            self.lease = None


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
