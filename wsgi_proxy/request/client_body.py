"""The client's request body, on its way to the origin.

Invariant: a request body's first block is read and checked before the origin is asked
(``request_body``); every later failure of the client's stream is a ``ProxyError`` raised
while the body is sent, and the origin connection carrying it is closed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from gunicorn.http.errors import NoMoreData, ParseException

from wsgi_proxy.core import headers as h
from wsgi_proxy.core.errors import BadRequest, ClientTimeout, PayloadTooLarge, UnsupportedCoding
from wsgi_proxy.request.exchange import Environ


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
