"""A client's request head as its bytes come in: whether gunicorn's parser can take it yet,
and the answers for a head that never comes whole. No I/O: the worker (head_gathering.py) reads.

Invariants:
- ``READY`` means gunicorn's HTTP/1 parser decides on these bytes alone, without reading
  the socket: they hold the blank line that ends the head (RFC 9112 section 2.1), or a bare
  LF, which the parser refuses at once (RFC 9112 section 2.2) wherever it is; a head that
  never ends is otherwise waited for until the deadline.
- A head must end within ``HEAD_LIMIT`` bytes (``TOO_LARGE`` otherwise), so that hundreds of
  connections sending theirs hold a bounded amount of memory; what follows the head (a
  body, pipelined requests) is not counted.
- ``scan_head`` looks only at bytes from ``start`` (minus the 3 that may begin the blank
  line), so a head coming a byte at a time costs linear time in all.
"""

from __future__ import annotations

import enum

HEAD_LIMIT = 64 * 1024  # bytes; nginx reads at most 32 KiB of head (4 buffers of 8k)


class HeadScan(enum.Enum):
    """What the bytes received so far allow."""

    PARTIAL = "partial"  # wait for more
    READY = "ready"  # hand them to gunicorn's parser
    TOO_LARGE = "too large"  # answer TOO_LARGE_ANSWER


def scan_head(data: bytes | bytearray, start: int) -> HeadScan:
    """What ``data`` allows, of which ``data[:start]`` was scanned before and was
    ``PARTIAL``."""
    end = data.find(b"\r\n\r\n", max(start - 3, 0))
    if end >= 0:
        return HeadScan.READY if end + 4 <= HEAD_LIMIT else HeadScan.TOO_LARGE
    if data.count(b"\n", start) != data.count(b"\r\n", max(start - 1, 0)):
        return HeadScan.READY
    return HeadScan.TOO_LARGE if len(data) > HEAD_LIMIT else HeadScan.PARTIAL


def format_answer(status: str, text: str) -> bytes:
    """A whole short plain-text response that closes the connection."""
    body = text.encode() + b"\n"
    return (
        f"HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body


TIMEOUT_ANSWER = format_answer("408 Request Timeout", "request head not received in time")
TOO_LARGE_ANSWER = format_answer(
    "431 Request Header Fields Too Large", f"request head over {HEAD_LIMIT} bytes"
)
