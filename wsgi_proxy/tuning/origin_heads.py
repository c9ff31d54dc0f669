"""The origin's response heads, parsed without the email package when they are plain.

http.client parses every response head with the email package's feed parser, which takes
about 50 microseconds for nginx's nine fields on the benchmark's machine: near a tenth of
the CPU a pass-through takes, called in one process. ``parse_headers`` reads the same lines
and, for a plain head, builds the same ``HTTPMessage`` in under 10 microseconds; any other
head goes to the email package, as before. Measured side by side: docs/performance.md.

Invariants:
- The lines are read by http.client's own ``_read_headers`` (its limits on the length of
  a line and on the number of fields hold), so the connection is left where http.client
  leaves it.
- A head is plain when it ends with an empty line, every line before it is
  ``name:value`` with a name of the characters the email parser takes for one (printable
  ASCII but the colon; so no obs-fold, no space before the colon), with no CR but the one
  before the line's LF, and no ``Content-Type`` naming a multipart or message type (for
  which the email parser would look for parts). For such a head the message equals the
  email parser's: the same fields in the same order, each value with its leading spaces
  and tabs taken off (``Compat32.header_source_parse``), no defects, an empty payload.
  Unit tests compare the two over a table of heads and thousands of random ones, on the
  Python they run on: a Python whose email parser or http.client changed shows there.
- Such a message is a ``PlainMessage`` (when http.client asks for its own class), whose
  ``items()`` returns the stored fields without the email policy's pass over each value,
  a pass that returns them unchanged: the values come from the head, read as latin-1,
  and hold no surrogates. (A value with surrogates set later through the message's API
  would come back as stored, not as a ``Header``; nothing sets one.)
- Used by the origin client's responses only (``PlainHeadsResponse``, through http.client's
  ``response_class`` hook): http.client's own ``parse_headers`` is left as it is.
"""

from __future__ import annotations

import email.parser
import http.client
import re
from typing import Any, BinaryIO

# One field line: the email parser's name characters (feedparser.headerRE without its
# "From " and continuation cases), the colon, the value without its leading blanks.
_FIELD = re.compile(r"([\x21-\x39\x3b-\x7e]+):[ \t]*([^\r\n]*)\r?\n")
# Media types the email parser parses a payload of (multipart/*, message/*).
_PARTS = re.compile(r"multipart|message", re.IGNORECASE)

# The standard library's parser, for the unit tests' comparisons.
stdlib_parse_headers = http.client.parse_headers


class PlainMessage(http.client.HTTPMessage):
    """The message of a plain head. ``items()`` leaves out the email policy's pass over
    each value (``Compat32.header_fetch_parse``), which returns a ``str`` without
    surrogates as it is: a value read as latin-1 holds none. urllib3 calls ``items()``
    on every response (``_normalize_header_values``): that pass was about 27,000
    instructions of a pass-through's 940,000 (callgrind)."""

    def items(self) -> list[tuple[str, Any]]:
        return list(self._headers)  # type: ignore[attr-defined]  # the stored (name, value)s


def parse_headers(
    fp: BinaryIO, _class: type[http.client.HTTPMessage] = http.client.HTTPMessage
) -> http.client.HTTPMessage:
    """``http.client.parse_headers``: the same message, quicker for a plain head."""
    lines = http.client._read_headers(fp)  # type: ignore[attr-defined]  # private: see above
    fields = plain_fields(lines)
    if fields is None:
        text = b"".join(lines).decode("iso-8859-1")
        return email.parser.Parser(_class=_class).parsestr(text)  # as http.client does
    message = PlainMessage() if _class is http.client.HTTPMessage else _class()
    for name, value in fields:
        message.set_raw(name, value)  # what the feed parser stores
    message.set_payload("")  # the feed parser's: the (empty) rest after the head
    return message


def plain_fields(lines: list[bytes]) -> list[tuple[str, str]] | None:
    """The fields of a plain head (module docstring), as the email parser stores them;
    None for any other head."""
    if not lines or lines[-1] not in (b"\r\n", b"\n"):
        return None  # ended by the connection's end, not by an empty line
    fields = []
    for raw in lines[:-1]:
        match = _FIELD.fullmatch(raw.decode("iso-8859-1"))
        if match is None:
            return None
        name, value = match.groups()
        if len(name) == 12 and name.lower() == "content-type" and _PARTS.search(value):
            return None
        fields.append((name, value))
    return fields


class PlainHeadsResponse(http.client.HTTPResponse):
    """http.client's response whose head is parsed by ``parse_headers`` above. ``begin`` is
    http.client's own (Python 3.11's, copied: the module global it calls cannot be changed
    for one class), but for that call and the ``debuglevel`` prints; the unit tests compare
    the two over a table of responses."""

    def begin(self) -> None:
        if self.headers is not None:
            return
        while True:  # read until a status other than 100 Continue
            version, status, reason = self._read_status()
            if status != http.client.CONTINUE:
                break
            http.client._read_headers(self.fp)  # skipped
        self.code = self.status = status
        self.reason = reason.strip()
        if version in ("HTTP/1.0", "HTTP/0.9"):
            self.version = 10
        elif version.startswith("HTTP/1."):
            self.version = 11
        else:
            raise http.client.UnknownProtocol(version)
        self.headers = self.msg = parse_headers(self.fp)
        coding = self.headers.get("transfer-encoding")
        self.chunked = bool(coding and coding.lower() == "chunked")
        if self.chunked:
            self.chunk_left = None
        self.will_close = self._check_close()
        self.length = None
        length = self.headers.get("content-length")
        if length and not self.chunked:
            try:
                self.length = int(length)
            except ValueError:
                self.length = None
            else:
                if self.length < 0:
                    self.length = None
        if (
            status in (http.client.NO_CONTENT, http.client.NOT_MODIFIED)
            or 100 <= status < 200
            or self._method == "HEAD"
        ):
            self.length = 0
        if not self.will_close and not self.chunked and self.length is None:
            self.will_close = True
