"""request_heads: when a request head's bytes are enough for gunicorn's parser, checked
against that parser itself, whole and a byte at a time; the head limit; the answers."""

from __future__ import annotations

import pytest
from gunicorn.config import Config
from gunicorn.http.errors import NoMoreData
from gunicorn.http.parser import RequestParser

from wsgi_proxy.tuning.request_heads import (
    HEAD_LIMIT,
    TIMEOUT_ANSWER,
    TOO_LARGE_ANSWER,
    HeadScan,
    format_answer,
    scan_head,
)

PARTIAL, READY, TOO_LARGE = HeadScan.PARTIAL, HeadScan.READY, HeadScan.TOO_LARGE
GET = b"GET /a?b=c HTTP/1.1\r\nHost: example.test\r\nAccept: */*\r\n"

# (bytes received, what they allow)
CASES = [
    (b"", PARTIAL),
    (b"G", PARTIAL),
    (b"GET / HTTP/1.1", PARTIAL),
    (b"GET / HTTP/1.1\r", PARTIAL),
    (b"GET / HTTP/1.1\r\n", PARTIAL),
    (GET, PARTIAL),
    (GET + b"\r", PARTIAL),  # the CR may begin the blank line
    (GET + b"\r\n", READY),
    (b"GET / HTTP/1.1\r\n\r\n", READY),  # no fields
    (b"\r\n" + GET + b"\r\n", READY),  # one empty line before the request line
    (GET + b"\r\nbody bytes and a pipelined GET / HTTP/1.1\r\n", READY),
    (GET + b"X-Half: \r\n\r", PARTIAL),
    (b"GET / HTTP/1.1\nHost: x\n\n", READY),  # bare LF: refused at once
    (b"GET / HTTP/1.1\n", READY),
    (GET + b"X: 1\n", READY),
    (b"\n", READY),
    (GET + b"X: a\rb", PARTIAL),  # bare CR: refused once the head is whole
    (b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\n\r\n", READY),  # gunicorn answers 414
]
FIELD = b"X-Filler: " + b"f" * 1000 + b"\r\n"
LIMIT_CASES = [
    (GET + FIELD * 70, TOO_LARGE),
    (GET + FIELD * 70 + b"\r\n", TOO_LARGE),
    (b"G" * HEAD_LIMIT, PARTIAL),
    (b"G" * (HEAD_LIMIT + 1), TOO_LARGE),
    (b"G" * (HEAD_LIMIT - 4) + b"\r\n\r\n", READY),  # ends at the limit
    (b"G" * (HEAD_LIMIT - 3) + b"\r\n\r\n", TOO_LARGE),  # one byte over
    (b"G" * (HEAD_LIMIT - 4) + b"\r\n\r\n" + b"body" * 10000, READY),  # a body is not counted
]


def gunicorn_wants_more(data: bytes) -> bool:
    """Whether gunicorn's parser, given ``data`` and then the end of the input, asks for more
    (the end of the input comes too early) rather than deciding on ``data``."""
    parser = RequestParser(Config(), iter([data]), ("127.0.0.1", 1))
    try:
        next(parser)
    except (NoMoreData, StopIteration):
        return True
    except Exception:  # any refusal is a decision
        return False
    return False


@pytest.mark.parametrize(("data", "expected"), CASES + LIMIT_CASES)
def test_scan_head_whole(data: bytes, expected: HeadScan) -> None:
    assert scan_head(data, 0) is expected


@pytest.mark.parametrize(("data", "expected"), CASES)
def test_ready_exactly_when_gunicorns_parser_needs_nothing_more(
    data: bytes, expected: HeadScan
) -> None:
    assert gunicorn_wants_more(data) == (expected is PARTIAL)


@pytest.mark.parametrize("size", [1, 2, 3, 7, 4096])
@pytest.mark.parametrize(("data", "expected"), CASES + LIMIT_CASES)
def test_scan_head_in_pieces_decides_as_on_the_whole(
    data: bytes, expected: HeadScan, size: int
) -> None:
    """Fed ``size`` bytes at a time, each scan looking only at what is new: the decision is
    the same as on the whole, and it comes with the first piece that allows it."""
    received = bytearray()
    scan, before = PARTIAL, 0
    for start in range(0, len(data), size):
        before = len(received)
        received += data[start : start + size]
        scan = scan_head(received, start)
        if scan is not PARTIAL:
            break
    assert scan is expected
    assert scan_head(received, 0) is scan
    assert scan_head(received[:before], 0) is PARTIAL  # no piece earlier would do


@pytest.mark.parametrize(
    ("answer", "status"),
    [(TIMEOUT_ANSWER, b"408 Request Timeout"), (TOO_LARGE_ANSWER, b"431 Request Header")],
)
def test_answers_are_short_plain_text_and_close(answer: bytes, status: bytes) -> None:
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0].startswith(b"HTTP/1.1 " + status)
    assert b"Content-Type: text/plain; charset=utf-8" in lines
    assert b"Connection: close" in lines
    assert f"Content-Length: {len(body)}".encode() in lines
    assert 0 < len(body) < 100


def test_format_answer() -> None:
    assert format_answer("418 I'm a teapot", "short and stout") == (
        b"HTTP/1.1 418 I'm a teapot\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Length: 16\r\nConnection: close\r\n\r\nshort and stout\n"
    )
