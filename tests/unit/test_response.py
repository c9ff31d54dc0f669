"""The worker's response writer (response.py) against gunicorn's own ``Response``: the same
bytes on the wire, whichever way the body goes. Real gunicorn requests parsed from bytes,
real socket pairs and real files."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from gunicorn import util
from gunicorn.config import Config as GunicornConfig
from gunicorn.http import wsgi
from gunicorn.http.parser import RequestParser

from wsgi_proxy import response
from wsgi_proxy.response import LeanResponse, http_date, send_file

ORIGINAL = wsgi.Response  # as gunicorn defines it, whatever install() did since
BODY = bytes(range(256)) * 4096  # 1 MiB, larger than a socket pair's buffers


def parsed(head: str) -> Any:
    """The gunicorn ``Request`` for ``head``, parsed by gunicorn."""
    raw = head.replace("\n", "\r\n").encode() + b"\r\n"
    return next(RequestParser(GunicornConfig(), iter([raw]), ("127.0.0.1", 1)))


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """(the server's end with a timeout, as the proxy sets it; the client's end)."""
    server, peer = socket.socketpair()
    server.settimeout(5)
    peer.settimeout(5)
    with server, peer:
        yield server, peer


def read_all(sock: socket.socket, into: bytearray) -> None:
    while data := sock.recv(1 << 16):
        into += data


def without_date(wire: bytes) -> bytes:
    lines = wire.splitlines(keepends=True)
    return b"".join(line for line in lines if not line.startswith(b"Date:"))


def wire_of(
    cls: type[Any],
    head: str,
    status: str,
    fields: list[tuple[str, str]],
    file: Path | None,
    offset: int = 0,
) -> bytes:
    """What ``cls`` puts on the wire answering ``head`` with ``file`` from ``offset`` by
    ``wsgi.file_wrapper``, as gthread's ``handle_request`` drives it (``None``: no body)."""
    server, peer = socket.socketpair()
    server.settimeout(5)
    received = bytearray()
    reader = threading.Thread(target=read_all, args=(peer, received))
    reader.start()
    try:
        resp = cls(parsed(head), server, GunicornConfig())
        resp.start_response(status, fields)
        if file is not None:
            with file.open("rb", buffering=0) as f:
                f.seek(offset)
                resp.write_file(wsgi.FileWrapper(f, 1 << 18))
        resp.close()
    finally:
        server.close()
        reader.join(10)
        peer.close()
    return bytes(received)


@pytest.fixture
def body_file(tmp_path: Path) -> Path:
    path = tmp_path / "entry"
    path.write_bytes(b"HEADER-BLOCK" + BODY)
    return path


GET = "GET /x HTTP/1.1\nHost: h\n"
GET10 = "GET /x HTTP/1.0\nHost: h\n"
CLOSE = "GET /x HTTP/1.1\nHost: h\nConnection: close\n"
HEAD = "HEAD /x HTTP/1.1\nHost: h\n"
SIZED = [("Content-Type", "application/octet-stream"), ("Content-Length", str(len(BODY)))]
PART = [("Content-Length", "1000")]


@pytest.mark.parametrize(
    ("head", "status", "fields", "offset"),
    [
        (GET, "200 OK", SIZED, 12),  # the proxy's case: a body after the entry's header
        (GET, "206 Partial Content", PART, 5000),  # a range: Content-Length under the file
        (GET10, "200 OK", SIZED, 12),
        (CLOSE, "200 OK", SIZED, 12),
        (HEAD, "200 OK", SIZED, 12),  # omits the body: gunicorn's way
        (GET, "200 OK", [("Content-Type", "text/plain")], 12),  # chunked: gunicorn's way
        (GET10, "200 OK", [("Content-Type", "text/plain")], 12),  # to the end of the file
    ],
    ids=["sized", "range", "http-1.0", "close", "head", "chunked", "unsized-1.0"],
)
def test_the_wire_is_gunicorns(
    body_file: Path, head: str, status: str, fields: list[tuple[str, str]], offset: int
) -> None:
    lean = wire_of(LeanResponse, head, status, fields, body_file, offset)
    stock = wire_of(ORIGINAL, head, status, fields, body_file, offset)
    assert without_date(lean) == without_date(stock)
    assert lean.count(b"\r\nDate: ") == 1
    if head == GET and fields is SIZED:  # the body itself, from its offset
        assert lean.endswith(b"\r\n\r\n" + BODY)


@pytest.mark.parametrize(
    ("head", "status", "upgrade", "chunked", "must_close"),
    [
        (GET, "200 OK", False, False, False),
        (GET, "200 OK", False, True, False),
        (GET, "200 OK", False, False, True),
        (CLOSE, "404 Not Found", False, False, False),
        (GET10, "200 OK", False, False, False),
        (GET, "101 Switching Protocols", True, False, False),
    ],
    ids=["keep-alive", "chunked", "must-close", "client-closes", "http-1.0", "upgrade"],
)
def test_default_headers_are_gunicorns_but_for_the_date(
    head: str, status: str, upgrade: bool, chunked: bool, must_close: bool
) -> None:
    made = []
    for cls in (LeanResponse, ORIGINAL):
        resp = cls(parsed(head), None, GunicornConfig())
        resp.status, resp.status_code = status, int(status[:3])
        resp.upgrade, resp.chunked, resp.must_close = upgrade, chunked, must_close
        resp.response_length = 10
        made.append([line for line in resp.default_headers() if not line.startswith("Date:")])
    assert made[0] == made[1]


@pytest.mark.parametrize("now", [0.0, 1.5, 1_700_000_000.999, 1_800_000_000.0])
def test_http_date_is_gunicorns(now: float) -> None:
    assert http_date(now) == util.http_date(now)


def test_http_date_is_formatted_once_a_second() -> None:
    first = http_date(1_700_000_000.1)
    assert http_date(1_700_000_000.9) is first  # the same string: not formatted again
    assert http_date(1_700_000_001.0) == util.http_date(1_700_000_001)


def test_send_file_sends_the_span_through_full_buffers(
    pair: tuple[socket.socket, socket.socket], body_file: Path
) -> None:
    server, peer = pair
    received = bytearray()
    with body_file.open("rb") as f:
        reader = threading.Thread(target=_read_exactly, args=(peer, len(BODY) - 7, received))
        reader.start()
        sent = send_file(server.fileno(), f.fileno(), 12 + 7, len(BODY) - 7, 5.0)
        reader.join(10)
        assert f.tell() == 0  # the file's position is not used nor moved
    assert sent == len(BODY) - 7
    assert bytes(received) == BODY[7:]


def _read_exactly(sock: socket.socket, size: int, into: bytearray) -> None:
    while len(into) < size and (data := sock.recv(1 << 16)):
        into += data


def test_a_client_that_stops_reading_times_out(
    pair: tuple[socket.socket, socket.socket], body_file: Path
) -> None:
    server, _peer = pair  # the peer never reads
    with body_file.open("rb") as f, pytest.raises(TimeoutError):
        send_file(server.fileno(), f.fileno(), 12, len(BODY), 0.2)


def test_a_file_shorter_than_promised_cuts_the_response(
    pair: tuple[socket.socket, socket.socket], tmp_path: Path
) -> None:
    server, peer = pair
    short = tmp_path / "short"
    short.write_bytes(b"only these bytes")
    with short.open("rb") as f, pytest.raises(OSError, match="short"):
        send_file(server.fileno(), f.fileno(), 0, 100, 5.0)
    assert peer.recv(100) == b"only these bytes"


def test_a_file_the_kernel_cannot_sendfile_is_left_to_the_fallback(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    server, peer = pair
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, b"piped")
        assert send_file(server.fileno(), read_end, 0, 5, 5.0) == 0
    finally:
        os.close(read_end)
        os.close(write_end)
    peer.setblocking(False)
    with pytest.raises(BlockingIOError):
        peer.recv(10)  # nothing was sent


def test_install_makes_gunicorn_build_lean_responses() -> None:
    try:
        response.install()
        built, _environ = wsgi.create(parsed(GET), None, ("127.0.0.1", 1), ("127.0.0.1", 80),
                                      GunicornConfig())  # fmt: skip
        assert type(built) is LeanResponse
    finally:
        wsgi.Response = ORIGINAL
