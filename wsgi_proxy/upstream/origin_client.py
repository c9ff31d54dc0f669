"""The origin connection: one urllib3 pool per worker, streaming both ways.

Invariants:
- The message is not changed: no redirects followed, no decompression, no retries beyond
  the one below, no ``User-Agent`` or ``Accept-Encoding`` added. Where the seam is on
  (tuning/origin_pool.py) the request target is sent byte for byte; elsewhere urllib3's
  ``urlopen`` sends it as it encodes it.
- One deliberate retry: an idempotent request without a body whose keep-alive connection
  turned out closed by the origin is sent once more on a new connection (where the seam is
  on: only if the connection was reused; and other requests never go out on a connection
  idle for more than ``IDLE_REUSE_LIMIT``).
- Every urllib3 and socket exception ends here, converted to the ``errors`` tree.
- The pool is created in the worker, after the fork, by ``Upstream()``. Its connections
  are this module's (urllib3's ``ConnectionCls`` hook): the seam's, which write plain
  request heads and parse plain response heads quicker (tuning/origin_requests.py,
  origin_heads.py), where it is on for http.client and urllib3.
- Interim (1xx) responses are never taken for the final one (RFC 9110 section 15.2): the
  response is read past any number of them (up to ``MAX_INTERIM``), each handed to the
  request's ``on_interim`` if it has one; a ``101`` nobody asked for is ``OriginBroken``.
"""

from __future__ import annotations

import errno
import http.client
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, NoReturn

from urllib3 import HTTPConnectionPool, HTTPHeaderDict, HTTPResponse, HTTPSConnectionPool
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
)
from urllib3.util import SKIP_HEADER, Timeout

from wsgi_proxy.core import headers as h
from wsgi_proxy.core.config import Config
from wsgi_proxy.core.errors import (
    BadRequest,
    OriginBroken,
    OriginTimeout,
    OriginUnreachable,
    ProxyError,
)
from wsgi_proxy.core.headers import Headers
from wsgi_proxy.core.model import ResponseHead
from wsgi_proxy.core.threads import waiting
from wsgi_proxy.tuning import is_tuned, origin_pool
from wsgi_proxy.tuning.origin_heads import PlainHeadsResponse
from wsgi_proxy.tuning.origin_requests import FastRequestConnection, PlainFields

log = logging.getLogger(__name__)
_current = threading.local()  # on_interim of the request this thread is sending

CHUNK_SIZE = 256 * 1024
# Seconds a pooled connection may have been idle and still carry a request that cannot be
# retried (one with a body, or a non-idempotent method).
IDLE_REUSE_LIMIT = 1.0
_RETRYABLE = frozenset({"GET", "HEAD", "OPTIONS"})
# Interim responses read past before the final one: more is a broken (or hostile) origin.
MAX_INTERIM = 100

# Called with each interim response's status and fields, as it arrives.
InterimHandler = Callable[[int, Headers], None]


class InterimResponse(http.client.HTTPResponse):
    """http.client's response, read past interim (1xx) responses.

    http.client's ``begin`` skips ``100 Continue`` only: any other 1xx (``103 Early
    Hints`` from Rails, Node or h2o; ``102 Processing``) would be taken for the final
    response, and the real one left unread on the connection. This ``begin`` runs
    http.client's own again after each interim response, which it first hands to
    ``on_interim``. ``101 Switching Protocols`` ends the exchange: the proxy never asks
    for an upgrade (``Upgrade`` is hop-by-hop), so the connection now speaks something
    else."""

    on_interim: InterimHandler | None = None  # set by the connection that made it

    def begin(self) -> None:
        for _ in range(MAX_INTERIM + 1):
            super().begin()
            if not 100 <= self.status < 200:
                return
            if self.status == 101:
                raise http.client.HTTPException("the origin switched protocols unasked (101)")
            log.debug("read past an interim response: %d %s", self.status, self.reason)
            if self.on_interim is not None:
                self.on_interim(self.status, tuple(self.msg.items()))
            # http.client's begin reads a new status line only while it has no fields.
            self.headers = self.msg = None  # type: ignore[assignment]
        raise http.client.HTTPException(f"more than {MAX_INTERIM} interim responses")


class OriginConnection(HTTPConnection):
    """urllib3's connection, whose responses are read past interim responses: each goes to
    the ``on_interim`` of the request under way on this thread (``Upstream.send``)."""

    response_type: type[InterimResponse] = InterimResponse

    def response_class(  # type: ignore[override]
        self, sock: socket.socket, *args: Any, **kwargs: Any
    ) -> InterimResponse:
        """http.client makes each response by calling ``self.response_class(sock, ...)``
        (the hook urllib3 documents in its ``getresponse``)."""
        response = self.response_type(sock, *args, **kwargs)
        response.on_interim = getattr(_current, "on_interim", None)
        return response


class TunedInterimResponse(InterimResponse, PlainHeadsResponse):
    """An ``InterimResponse`` whose heads are parsed by the seam's parser."""


class TunedConnection(FastRequestConnection, OriginConnection):
    """An ``OriginConnection`` with the seam's request writing and head parsing."""

    response_type = TunedInterimResponse


class OriginHTTPSConnection(OriginConnection, HTTPSConnection):
    """urllib3's TLS connection, read past interim responses."""


class TunedHTTPSConnection(TunedConnection, HTTPSConnection):
    """urllib3's TLS connection with the seam's request writing and head parsing."""


def _connection_class(https: bool) -> type[HTTPConnection]:
    """The seam's connections where it is on for Python's http.client and for urllib3."""
    tuned = is_tuned("python") and is_tuned("urllib3")
    if https:
        return TunedHTTPSConnection if tuned else OriginHTTPSConnection
    return TunedConnection if tuned else OriginConnection


class OriginResponse:
    """A response whose body has not been read yet; iterate ``chunks`` once, then ``close``."""

    def __init__(self, raw: HTTPResponse) -> None:
        self.raw = raw
        # iteritems(): tuple() of items() would walk the fields twice (its len() walks them).
        fields = checked_framing(tuple(raw.headers.iteritems()))
        self.head = ResponseHead(raw.status, raw.reason or "", fields)
        self.complete = False

    @property
    def content_length(self) -> int | None:
        value = h.get(self.head.headers, "content-length")
        return int(value) if value is not None and value.isdigit() else None

    def chunks(self) -> Iterator[bytes]:
        """The body as it arrives; a body cut short raises ``OriginBroken``."""
        try:
            for chunk in self.raw.stream(CHUNK_SIZE, decode_content=False):
                if chunk:
                    yield chunk
        except ReadTimeoutError:
            raise OriginTimeout("the origin stopped sending the body") from None
        except (ProtocolError, HTTPError, http.client.HTTPException, OSError) as exc:
            raise OriginBroken("the origin cut the body short", cause=str(exc)) from None
        self.complete = True

    def close(self) -> None:
        """Return the connection to the pool if the body was read whole, else drop it."""
        if not self.complete:
            self.raw.close()
        elif self.raw.connection is not None:
            self.raw.connection.idle_since = time.monotonic()  # type: ignore[attr-defined]
        self.raw.release_conn()


def _origin_headers(fields: Headers) -> Mapping[str, str]:
    """``fields`` for urllib3, which adds no ``User-Agent`` or ``Accept-Encoding`` of its own:
    a dict when no name repeats (urllib3 iterates it quicker than its own; a
    ``PlainFields`` when Host is there and Transfer-Encoding is not), else an
    ``HTTPHeaderDict``, which sends every line (a client's ``Via`` beside ours)."""
    names = {name.lower() for name, _ in fields}
    headers: PlainFields | dict[str, str] | HTTPHeaderDict
    if len(names) == len(fields) and "host" in names and "transfer-encoding" not in names:
        headers = PlainFields(fields)
    else:
        headers = HTTPHeaderDict()
        for name, value in fields:
            headers.add(name, value)
    if "user-agent" not in names:
        headers["User-Agent"] = SKIP_HEADER
    if "accept-encoding" not in names:
        headers["Accept-Encoding"] = SKIP_HEADER
    return headers


def _idle_for(conn: HTTPConnection) -> float:
    since: float | None = getattr(conn, "idle_since", None)
    return 0.0 if since is None else time.monotonic() - since


def checked_framing(fields: Headers) -> Headers:
    """The response's fields if its framing is unambiguous (RFC 9112 section 6.3), with
    identical repeated Content-Length values folded into one; else ``OriginBroken``.

    http.client reads such responses leniently; a proxy must not: forwarding a
    Content-Length beside a body framed otherwise would desynchronise the client.
    """
    lengths = [v for k, v in fields if k.lower() == "content-length"]
    codings = h.parse_list(h.get(fields, "transfer-encoding"))
    if codings and lengths:
        raise OriginBroken("the origin sent both Transfer-Encoding and Content-Length")
    if codings and codings[-1].lower() != "chunked":
        raise OriginBroken("the origin sent a transfer coding other than chunked")
    if not lengths:
        return fields
    values = {item.strip() for value in lengths for item in value.split(",")}
    if len(values) != 1 or not next(iter(values)).isdigit():
        raise OriginBroken("the origin sent an invalid or conflicting Content-Length")
    if len(lengths) == 1 and "," not in lengths[0]:
        return fields
    return h.replace(fields, "Content-Length", values.pop())


class Upstream:
    """The pooled client for the configured origin."""

    def __init__(self, config: Config) -> None:
        origin = config.origin
        https = origin.scheme == "https"
        pool_class = HTTPSConnectionPool if https else HTTPConnectionPool
        self.pool: HTTPConnectionPool = pool_class(
            origin.host,
            origin.port,
            maxsize=config.pool_size,
            block=False,
            timeout=Timeout(connect=config.connect_timeout, read=config.read_timeout),
            retries=False,
        )
        # urllib3's hook for the pool's connections, on this pool only.
        self.pool.ConnectionCls = _connection_class(https)
        self.host = origin.authority
        # The seam's way below urlopen (tuning/origin_pool.py), or urlopen's.
        self._send = self._send_tuned if is_tuned("urllib3") else self._send_plain

    def send(
        self,
        method: str,
        target: str,
        fields: Headers,
        body: bytes | Iterable[bytes] | None,
        *,
        chunked: bool,
        on_interim: InterimHandler | None = None,
    ) -> OriginResponse:
        """Send the request; the final response's head has arrived when this returns.
        ``on_interim`` is called with each interim (1xx) response read past before it.
        Whatever fails meanwhile, the origin's error or the body's own (a client's, raised
        while it is sent), closes the connection: it never goes back to the pool half used."""
        _current.on_interim = on_interim
        try:
            return self._send(method, target, _origin_headers(fields), body, chunked)
        finally:
            _current.on_interim = None  # the next request on this thread has its own

    def _send_tuned(
        self,
        method: str,
        target: str,
        headers: Mapping[str, str],
        body: bytes | Iterable[bytes] | None,
        chunked: bool,
    ) -> OriginResponse:
        """The target byte for byte; a reused connection that turns out closed is retried
        once on a new one (an idempotent request without a body), and a request that cannot
        be retried does not go out on one idle for more than ``IDLE_REUSE_LIMIT``."""
        retry = method in _RETRYABLE and body is None
        while True:
            conn = origin_pool.checkout(self.pool)
            if not retry and not conn.is_closed and _idle_for(conn) > IDLE_REUSE_LIMIT:
                # A request that cannot be sent twice does not risk a keep-alive connection
                # the origin may be closing right now (Node and Apache close after 5 s,
                # gunicorn after 2 s): a new connection costs less than a spurious 502.
                conn.close()
            reused = not conn.is_closed
            try:
                with waiting():  # on the origin: the worker's pool runs other requests
                    raw = _converted(origin_pool.send_on, self.pool, conn, method, target,
                                     body=body, headers=headers, chunked=chunked)  # fmt: skip
            except ProtocolError as exc:
                self._discard(conn)
                if retry and reused:
                    retry = False
                    log.debug("retrying %s %s on a new connection: %s", method, target, exc)
                    continue
                raise _lost_connection(exc) from None
            except BaseException:
                self._discard(conn)
                raise
            return self._response(raw, conn)

    def _send_plain(
        self,
        method: str,
        target: str,
        headers: Mapping[str, str],
        body: bytes | Iterable[bytes] | None,
        chunked: bool,
    ) -> OriginResponse:
        """urllib3's ``urlopen``, where the seam is off: the target as urllib3 encodes it
        (percent-encodings in upper case, other bytes outside its set encoded), and an
        idempotent request without a body retried once on any lost connection."""
        retry = method in _RETRYABLE and body is None
        while True:
            try:
                with waiting():
                    raw = _converted(self.pool.urlopen, method, target, body=body,
                                     headers=headers, chunked=chunked, redirect=False,
                                     retries=False, assert_same_host=False,
                                     preload_content=False, decode_content=False)  # fmt: skip
            except ProtocolError as exc:
                if retry:
                    retry = False
                    log.debug("retrying %s %s: %s", method, target, exc)
                    continue
                raise _lost_connection(exc) from None
            return self._response(raw, None)

    def _response(self, raw: HTTPResponse, conn: Any) -> OriginResponse:
        """The origin's response, or ``OriginBroken`` (its framing refused) with its
        connection closed and back in the pool: ``conn`` where the seam took it, else
        through the response, as urlopen hands it."""
        try:
            return OriginResponse(raw)
        except OriginBroken:
            raw.close()
            if conn is None:
                raw.release_conn()
            else:
                self._discard(conn)
            raise

    def _discard(self, conn: Any) -> None:
        conn.close()
        origin_pool.give_back(self.pool, conn)  # a closed conn reconnects on reuse


# What a keep-alive connection the origin had closed raises: the request may be retried.
_LOST_CONNECTION = (http.client.RemoteDisconnected, ConnectionResetError)


def _converted(call: Callable[..., Any], *args: Any, **kwargs: Any) -> HTTPResponse:
    """``call``'s response; its urllib3 and socket errors converted to the errors tree (a
    lost connection stays ``ProtocolError``, for the retry)."""
    try:
        raw: Any = call(*args, **kwargs)
    except ProxyError:
        raise
    except NewConnectionError as exc:
        # Before ConnectTimeoutError: urllib3 makes NewConnectionError a subclass of it.
        reason = exc.__cause__ or exc
        raise OriginUnreachable(_connect_failure(reason), cause=str(reason)) from None
    except ConnectTimeoutError:
        raise OriginTimeout("connecting to the origin timed out") from None
    except ReadTimeoutError:
        raise OriginTimeout("the origin did not answer in time") from None
    except http.client.InvalidURL:
        raise BadRequest("invalid request target") from None
    except _LOST_CONNECTION as exc:
        raise ProtocolError(str(exc), exc) from None
    except ProtocolError as exc:
        # urlopen wraps what its request raised in ProtocolError("Connection aborted.",
        # error): converted as if raised bare, so only a lost connection is retried.
        cause = exc.args[-1] if exc.args else None
        if isinstance(cause, http.client.HTTPException | OSError):
            _converted(_raise, cause)  # raises what the cause converts to
        raise
    except OSError as exc:
        raise _lost_connection(exc) from None
    except (HTTPError, http.client.HTTPException, ValueError) as exc:
        raise OriginBroken("the origin's response is not valid HTTP", cause=str(exc)) from None
    if not isinstance(raw, HTTPResponse):
        raise OriginBroken("unexpected response object")
    return raw


def _connect_failure(reason: BaseException) -> str:
    """What the client is told when no connection to the origin could be made."""
    if isinstance(reason, ConnectionRefusedError):
        return "the origin refused the connection"
    if isinstance(reason, socket.gaierror):
        return "the origin's host name cannot be resolved"
    if isinstance(reason, OSError) and reason.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
        return "the origin's network cannot be reached"
    return "the proxy cannot connect to the origin"


def _lost_connection(exc: BaseException) -> OriginBroken:
    """The origin's connection broke before its answer, told in the client's terms; the
    socket's own error (the last argument of urllib3's ``ProtocolError``) for the log."""
    cause = exc.args[-1] if isinstance(exc, ProtocolError) and exc.args else exc
    if isinstance(cause, http.client.RemoteDisconnected):  # before: it is a reset error
        statement = "the origin closed the connection without answering"
    elif isinstance(cause, ConnectionResetError):
        statement = "the origin reset the connection"
    else:
        statement = "the connection to the origin failed"
    return OriginBroken(statement, cause=f"{type(cause).__name__}: {cause}")


def _raise(exc: BaseException) -> NoReturn:
    raise exc
