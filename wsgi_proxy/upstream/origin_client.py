"""The origin connection: one urllib3 pool per worker, streaming both ways.

Invariants:
- The message is not changed: no redirects followed, no decompression, no retries beyond
  the one below, no ``User-Agent`` or ``Accept-Encoding`` added, and the request target is
  sent byte for byte (``urlopen`` would re-encode it, so the pool's request step is used
  directly; pinned urllib3, see requirements.txt).
- One deliberate retry: an idempotent request without a body whose reused keep-alive
  connection turned out closed by the origin is sent once more on a new connection. Other
  requests never go out on a connection idle for more than ``IDLE_REUSE_LIMIT``.
- Every urllib3 and socket exception ends here, converted to the ``errors`` tree.
- The pool is created in the worker, after the fork, by ``Upstream()``.
- Request field lines are what urllib3 and http.client write, checked by http.client's own
  two regular expressions; the common cases (a GET or HEAD without a body whose fields
  are plain, or one ``str`` value) skip their Python layers, every other case goes
  through them (``OriginConnection``).
- Interim (1xx) responses are never taken for the final one (RFC 9110 section 15.2): the
  response is read past any number of them (up to ``MAX_INTERIM``), each handed to the
  request's ``on_interim`` if it has one; a ``101`` nobody asked for is ``OriginBroken``.
"""

from __future__ import annotations

import http.client
import logging
import re
import socket
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from urllib3 import HTTPConnectionPool, HTTPHeaderDict, HTTPResponse, HTTPSConnectionPool
from urllib3.connection import HTTPConnection, HTTPSConnection, _ResponseOptions
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
)
from urllib3.util import SKIP_HEADER, Timeout
from urllib3.util.request import SKIPPABLE_HEADERS

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
from wsgi_proxy.tuning.socket_writes import write_now

if TYPE_CHECKING:
    from urllib3._base_connection import BaseHTTPConnection

log = logging.getLogger(__name__)

CHUNK_SIZE = 256 * 1024
# Seconds a pooled connection may have been idle and still carry a request that cannot be
# retried (one with a body, or a non-idempotent method).
IDLE_REUSE_LIMIT = 1.0
_RETRYABLE = frozenset({"GET", "HEAD", "OPTIONS"})
# http.client's checks of a field line, used as they are (private: pinned Python, and the
# unit tests compare the lines and errors with http.client's own ``putheader``).
_LEGAL_NAME = http.client._is_legal_header_name  # type: ignore[attr-defined]
_ILLEGAL_VALUE = http.client._is_illegal_header_value  # type: ignore[attr-defined]
_FIELDS_OPEN = http.client._CS_REQ_STARTED  # type: ignore[attr-defined]
# A field name that is an RFC 9110 token (stricter than http.client's check).
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+").fullmatch
# Methods for which urllib3 adds no Content-Length when there is no body.
_AT_ONCE_METHODS = frozenset({"GET", "HEAD"})
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


def _put_field_line(conn: HTTPConnection, name: object, values: tuple[object, ...]) -> bool:
    """Write ``name: value`` to ``conn``'s request head as http.client's ``putheader``
    would, when that is the common case: one ``str`` value, not urllib3's ``SKIP_HEADER``,
    the head open for fields, a line http.client accepts. False, and nothing written, in
    every other case, which the caller leaves to urllib3 and http.client (and their errors).
    Their three layers of Python take about 2.2 microseconds a line, this 1.1 (``timeit``);
    a pass-through sends seven lines."""
    if len(values) != 1 or getattr(conn, "_HTTPConnection__state", None) != _FIELDS_OPEN:
        return False
    value = values[0]
    if type(name) is not str or type(value) is not str or value == SKIP_HEADER:
        return False
    try:
        line_name, line_value = name.encode("ascii"), value.encode("latin-1")
    except UnicodeEncodeError:
        return False
    if not _LEGAL_NAME(line_name) or _ILLEGAL_VALUE(line_value):
        return False
    conn._output(line_name + b": " + line_value)  # type: ignore[attr-defined]
    return True


class _PlainFields(dict[str, str]):
    """Fields from ``_origin_headers``: no name repeats, Host, User-Agent and
    Accept-Encoding are there (the last two ``SKIP_HEADER`` when not sent), and no
    Transfer-Encoding. So urllib3's ``request`` would add nothing of its own to a GET or
    HEAD without a body: no field, no chunked framing."""


def _field_block(fields: _PlainFields) -> bytes | None:
    """The field lines of ``fields`` joined by CRLF: byte for byte what urllib3's ``request``
    has http.client write line by line (``SKIP_HEADER`` values of the fields urllib3 lets
    skip left out), when every line is plain: a token for a name, a latin-1 value without
    CR or LF. None otherwise, and the request goes urllib3's way (with its checks and
    errors)."""
    values = "".join(fields.values())
    if "\r" in values or "\n" in values or not all(map(_TOKEN, fields)):
        return None
    lines = []
    for name, value in fields.items():
        if value != SKIP_HEADER:
            lines.append(f"{name}: {value}")
        elif name.lower() not in SKIPPABLE_HEADERS:
            return None  # urllib3 refuses the marker for any other field: its error
    try:
        return "\r\n".join(lines).encode("latin-1")
    except UnicodeEncodeError:
        return None


class OriginConnection(HTTPConnection):
    """urllib3's connection. The head of a GET or HEAD without a body is written at once
    when its fields are plain (``_field_block``); other fields line by line, by
    ``_put_field_line``. urllib3 checks each name against its lists and http.client each
    line, in three layers of Python: about 70,000 instructions of a pass-through's
    1,000,000 (callgrind). Its responses are ``InterimResponse``s, whose interim
    responses go to ``on_interim``, set for the request under way."""

    on_interim: InterimHandler | None = None

    def response_class(  # type: ignore[override]
        self, sock: socket.socket, *args: Any, **kwargs: Any
    ) -> InterimResponse:
        """http.client makes each response by calling ``self.response_class(sock, ...)``
        (the hook urllib3 documents in its ``getresponse``): a method here gives the
        response this connection's current ``on_interim``."""
        response = InterimResponse(sock, *args, **kwargs)
        if self.on_interim is not None:
            response.on_interim = self.on_interim
        return response

    def request(  # type: ignore[override]
        self,
        method: str,
        url: str,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        *,
        chunked: bool = False,
        preload_content: bool = True,
        decode_content: bool = True,
        enforce_content_length: bool = True,
    ) -> None:
        block = None
        at_once = body is None and not chunked and method in _AT_ONCE_METHODS
        if at_once and type(headers) is _PlainFields:
            block = _field_block(headers)
        if block is None:
            super().request(method, url, body, headers, chunked=chunked,
                            preload_content=preload_content, decode_content=decode_content,
                            enforce_content_length=enforce_content_length)  # fmt: skip
            return
        # What urllib3's request does for such a request, but for the fields.
        if self.sock is not None:
            self.sock.settimeout(self.timeout)
        self._response_options = _ResponseOptions(
            method, url, preload_content, decode_content, enforce_content_length
        )
        self.putrequest(method, url, skip_host=True, skip_accept_encoding=True)
        if block:
            self._output(block)  # type: ignore[attr-defined]
        self.endheaders()

    def putheader(self, header: str, *values: str) -> None:  # type: ignore[override]
        if not _put_field_line(self, header, values):
            super().putheader(header, *values)

    def send(self, data: Any) -> None:
        """http.client's ``send``, but a head or block of bytes goes without the poll first
        (writes.py)."""
        if type(data) is not bytes or type(self.sock) is not socket.socket or self.debuglevel:
            super().send(data)  # a file or iterable, TLS, not connected yet, debugging
            return
        sys.audit("http.client.send", self, data)  # as http.client's send
        sent = write_now(self.sock, [data])
        if sent < len(data):
            self.sock.sendall(memoryview(data)[sent:])


class OriginHTTPSConnection(OriginConnection, HTTPSConnection):
    """urllib3's TLS connection, its request head written as ``OriginConnection``'s."""


class _OriginPool(HTTPConnectionPool):
    ConnectionCls = OriginConnection


class _OriginTLSPool(HTTPSConnectionPool):
    ConnectionCls = OriginHTTPSConnection


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
            raise OriginBroken(f"the body was cut short: {exc}") from None
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
    ``_PlainFields`` when Host is there and Transfer-Encoding is not), else an
    ``HTTPHeaderDict``, which sends every line (a client's ``Via`` beside ours)."""
    names = {name.lower() for name, _ in fields}
    headers: _PlainFields | dict[str, str] | HTTPHeaderDict
    if len(names) == len(fields) and "host" in names and "transfer-encoding" not in names:
        headers = _PlainFields(fields)
    else:
        headers = HTTPHeaderDict()
        for name, value in fields:
            headers.add(name, value)
    if "user-agent" not in names:
        headers["User-Agent"] = SKIP_HEADER
    if "accept-encoding" not in names:
        headers["Accept-Encoding"] = SKIP_HEADER
    return headers


def _idle_for(conn: BaseHTTPConnection) -> float:
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
        pool_class = _OriginTLSPool if origin.scheme == "https" else _OriginPool
        self.pool: HTTPConnectionPool = pool_class(
            origin.host,
            origin.port,
            maxsize=config.pool_size,
            block=False,
            timeout=Timeout(connect=config.connect_timeout, read=config.read_timeout),
            retries=False,
        )
        self.host = origin.authority

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
        headers = _origin_headers(fields)
        retry = method in _RETRYABLE and body is None
        while True:
            conn = self.pool._get_conn()  # private: see the module docstring
            if not retry and not conn.is_closed and _idle_for(conn) > IDLE_REUSE_LIMIT:
                # A request that cannot be sent twice does not risk a keep-alive connection
                # the origin may be closing right now (Node and Apache close after 5 s,
                # gunicorn after 2 s): a new connection costs less than a spurious 502.
                conn.close()
            reused = not conn.is_closed
            if isinstance(conn, OriginConnection):
                conn.on_interim = on_interim
            try:
                with waiting():  # on the origin: the worker's pool runs other requests
                    raw = self._request(conn, method=method, target=target, headers=headers,
                                        body=body, chunked=chunked)  # fmt: skip
            except ProtocolError as exc:
                self._discard(conn)
                if retry and reused:
                    retry = False
                    log.debug("retrying %s %s on a new connection: %s", method, target, exc)
                    continue
                raise OriginBroken(f"the origin closed the connection: {exc}") from None
            except BaseException:
                self._discard(conn)
                raise
            finally:
                if isinstance(conn, OriginConnection):
                    conn.on_interim = None  # the next request on it has its own
            try:
                return OriginResponse(raw)
            except OriginBroken:
                raw.close()
                self._discard(conn)
                raise

    def _request(
        self,
        conn: BaseHTTPConnection,
        *,
        method: str,
        target: str,
        headers: Mapping[str, str],
        body: bytes | Iterable[bytes] | None,
        chunked: bool,
    ) -> HTTPResponse:
        try:
            raw: Any = self.pool._make_request(  # private: see the module docstring
                conn,
                method,
                target,
                body=body,
                headers=headers,
                chunked=chunked,
                response_conn=conn,
                preload_content=False,
                decode_content=False,
                enforce_content_length=True,
            )
        except ProxyError:
            raise
        except NewConnectionError as exc:
            # Before ConnectTimeoutError: urllib3 makes NewConnectionError a subclass of it.
            reason = exc.__cause__ or exc
            raise OriginUnreachable(f"cannot connect to the origin: {reason}") from None
        except ConnectTimeoutError:
            raise OriginTimeout("connecting to the origin timed out") from None
        except ReadTimeoutError:
            raise OriginTimeout("the origin did not answer in time") from None
        except http.client.InvalidURL:
            raise BadRequest("invalid request target") from None
        except (http.client.RemoteDisconnected, ConnectionResetError) as exc:
            raise ProtocolError(str(exc)) from None
        except (HTTPError, http.client.HTTPException, OSError, ValueError) as exc:
            raise OriginBroken(f"invalid response from the origin: {exc}") from None
        if not isinstance(raw, HTTPResponse):
            raise OriginBroken("unexpected response object")
        return raw

    def _discard(self, conn: BaseHTTPConnection) -> None:
        conn.close()
        self.pool._put_conn(conn)  # a closed conn reconnects on reuse
