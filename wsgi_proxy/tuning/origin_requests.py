"""Request heads to the origin written without urllib3's and http.client's layers of
checks, where the fields are plain (Python 3.11's http.client, urllib3 2.8).

urllib3 checks each field's name against its lists and http.client each line, in three
layers of Python: about 70,000 instructions of a pass-through's 1,000,000 (callgrind).
``FastRequestConnection`` writes the head of a GET or HEAD without a body at once when its
fields are ``PlainFields`` and plain (``_field_block``: what a pass-through and a miss
send); every other request goes through urllib3 and http.client as they are (their checks
and errors). The unit tests compare the bytes with urllib3's and http.client's own. (A
line-by-line short cut for the other requests was dropped: it is worth nothing measurable
now that the common requests take the block.)
"""

from __future__ import annotations

import re
import socket
import sys
from collections.abc import Mapping
from typing import Any

from urllib3.connection import HTTPConnection, _ResponseOptions
from urllib3.util import SKIP_HEADER
from urllib3.util.request import SKIPPABLE_HEADERS

from wsgi_proxy.tuning.socket_writes import write_now

# A field name that is an RFC 9110 token (stricter than http.client's check).
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+").fullmatch
# Methods for which urllib3 adds no Content-Length when there is no body.
_AT_ONCE_METHODS = frozenset({"GET", "HEAD"})


class PlainFields(dict[str, str]):
    """Fields from the origin client's ``origin_headers``: no name repeats, Host, User-Agent and
    Accept-Encoding are there (the last two ``SKIP_HEADER`` when not sent), and no
    Transfer-Encoding. So urllib3's ``request`` would add nothing of its own to a GET or
    HEAD without a body: no field, no chunked framing."""


def _field_block(fields: PlainFields) -> bytes | None:
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


class FastRequestConnection(HTTPConnection):
    """urllib3's connection, its request heads written as the module docstring says."""

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
        if at_once and type(headers) is PlainFields:
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

    def send(self, data: Any) -> None:
        """http.client's ``send``, but a head or block of bytes goes without the poll first
        (socket_writes.py)."""
        if type(data) is not bytes or type(self.sock) is not socket.socket or self.debuglevel:
            super().send(data)  # a file or iterable, TLS, not connected yet, debugging
            return
        sys.audit("http.client.send", self, data)  # as http.client's send
        sent = write_now(self.sock, [data])
        if sent < len(data):
            self.sock.sendall(memoryview(data)[sent:])
