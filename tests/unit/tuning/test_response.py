"""The worker's response writer (response.py) against gunicorn's own ``Response``: the same
bytes on the wire, whichever way the body goes. Real gunicorn requests parsed from bytes,
real socket pairs with small buffers, real files. Its sends alone: test_sends.py."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from gunicorn import util
from gunicorn.config import Config as GunicornConfig
from gunicorn.http import wsgi
from gunicorn.http.parser import RequestParser
from support.sockets import read_all, small_pair

from wsgi_proxy.core.errors import CacheDamaged
from wsgi_proxy.store.hot_set import stamp_of
from wsgi_proxy.store.open_files import OpenFile
from wsgi_proxy.tuning import gunicorn_response as response
from wsgi_proxy.tuning.file_spans import FileSpan
from wsgi_proxy.tuning.gunicorn_response import LeanResponse, LeanResponses, http_date, send_file

STOCK = LeanResponse.__bases__[0]  # gunicorn's Response
BODY = bytes(range(256)) * 4096  # 1 MiB
HEADER = b"HEADER-BLOCK"  # before the body in the file, as a cache entry's header is


def parsed(head: str) -> Any:
    """The gunicorn ``Request`` for ``head``, parsed by gunicorn."""
    raw = head.replace("\n", "\r\n").encode() + b"\r\n"
    return next(RequestParser(GunicornConfig(), iter([raw]), ("127.0.0.1", 1)))


@pytest.fixture
def body_file(tmp_path: Path) -> Path:
    path = tmp_path / "entry"
    path.write_bytes(HEADER + BODY)
    return path


@pytest.fixture
def direct_sends(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The sizes ``LeanResponse`` sent by ``send_file`` (its own path, not gunicorn's)."""
    sizes: list[int] = []

    def counted(sockno: int, fileno: int, offset: int, size: int, timeout: float, **kw: Any) -> int:
        sizes.append(size)
        return send_file(sockno, fileno, offset, size, timeout, **kw)

    monkeypatch.setattr(response, "send_file", counted)
    return sizes


def without_date(wire: bytes) -> bytes:
    lines = wire.splitlines(keepends=True)
    return b"".join(line for line in lines if not line.startswith(b"Date:"))


def unchunked(wire: bytes) -> tuple[bytes, bytes]:
    """(the head, the body decoded) of a response in chunked framing."""
    head, _, rest = wire.partition(b"\r\n\r\n")
    body = b""
    while True:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        body, rest = body + rest[:size], rest[size + 2 :]
        if size == 0:
            return head, body


class OtherSocket(socket.socket):
    """A socket of another class, as ``ssl.SSLSocket`` is (it has no ``sendmsg``)."""


@contextlib.contextmanager
def captured(
    timeout: float | None, *, other_socket: bool = False
) -> Iterator[tuple[socket.socket, bytearray]]:
    """(the server's end of a small-buffer pair, with ``timeout``; what the client's end
    received), complete once the block has closed the server's end."""
    server, peer = small_pair(timeout)
    if other_socket:
        server = OtherSocket(fileno=server.detach())
        server.settimeout(timeout)
    received = bytearray()
    reader = threading.Thread(target=read_all, args=(peer, received))
    reader.start()
    try:
        yield server, received
    finally:
        server.close()
        reader.join(10)
        peer.close()


def wire_of(
    cls: type[Any],
    head: str,
    status: str,
    fields: list[tuple[str, str]],
    file: Path,
    *,
    timeout: float | None = 5.0,
    sendfile: bool = True,
    other_socket: bool = False,
    span: bool = False,
    span_size: int | None = None,
) -> bytes:
    """What ``cls`` puts on the wire answering ``head`` with ``file``'s body by
    ``wsgi.file_wrapper``, as gthread's ``handle_request`` drives it: an open file at the
    body's start, or with ``span`` a held file's span (openfiles.py) of ``span_size`` bytes
    (default: to the file's end), whose position is left at the header's start, as
    nothing moves a held file's position."""
    cfg = GunicornConfig()
    if not sendfile:  # gunicorn's flag: set only to turn sendfile off
        cfg.set("sendfile", False)
    with captured(timeout, other_socket=other_socket) as (server, received):
        resp = cls(parsed(head), server, cfg)
        resp.start_response(status, fields)
        if span:
            held = OpenFile(os.open(file, os.O_RDONLY), stamp_of(os.stat(file)))
            size = os.stat(file).st_size - len(HEADER) if span_size is None else span_size
            resp.write_file(wsgi.FileWrapper(FileSpan(held, len(HEADER), size), 1 << 18))
        else:
            with file.open("rb", buffering=0) as f:
                f.seek(len(HEADER))
                resp.write_file(wsgi.FileWrapper(f, 1 << 18))
        resp.close()
    return bytes(received)


def wire_of_writes(
    cls: type[Any],
    head: str,
    status: str,
    fields: list[tuple[str, str]],
    chunks: list[Any],
    *,
    timeout: float | None = 5.0,
    other_socket: bool = False,
) -> bytes:
    """What ``cls`` puts on the wire answering ``head`` with a body from memory, written
    chunk by chunk, as gthread's ``handle_request`` drives it; then the bytes counted as
    sent and the error raised, if any."""
    error = ""
    with captured(timeout, other_socket=other_socket) as (server, received):
        resp = cls(parsed(head), server, GunicornConfig())
        resp.start_response(status, fields)
        try:
            for chunk in chunks:
                resp.write(chunk)
            resp.close()
        except TypeError as exc:
            error = type(exc).__name__
    return bytes(received) + f"|sent={resp.sent}|{error}".encode()


GET = "GET /x HTTP/1.1\nHost: h\n"
GET10 = "GET /x HTTP/1.0\nHost: h\n"
CLOSE = "GET /x HTTP/1.1\nHost: h\nConnection: close\n"
HEAD = "HEAD /x HTTP/1.1\nHost: h\n"
SIZED = [("Content-Type", "application/octet-stream"), ("Content-Length", str(len(BODY)))]
UNSIZED = [("Content-Type", "text/plain")]


# (head, status, fields, sent by send_file from an open file, from a held file's span)
WIRE_CASES = {
    "sized": (GET, "200 OK", SIZED, True, True),  # the proxy's case
    # Less than the file: a span of the whole body is iterated, gunicorn's write() trims.
    "range": (GET, "206 Partial Content", [("Content-Length", "1000")], True, False),
    "empty": (GET, "200 OK", [("Content-Length", "0")], False, False),  # nothing to send
    "http-1.0": (GET10, "200 OK", SIZED, True, True),
    "close": (CLOSE, "200 OK", SIZED, True, True),
    "unsized-1.0": (GET10, "200 OK", UNSIZED, True, True),  # to the end of the file
    "head": (HEAD, "200 OK", SIZED, False, False),  # omits the body: gunicorn's way
    "304": (GET, "304 Not Modified", [("ETag", '"a"')], False, False),
    "204": (GET, "204 No Content", [], False, False),
    "chunked": (GET, "200 OK", UNSIZED, False, False),  # gunicorn's way
    # A head larger than the socket's buffers: written in part, then sent in full.
    "large-head": (GET, "200 OK", [*SIZED, ("X-Large", "a" * 300_000)], True, True),
}


@pytest.mark.parametrize(
    ("head", "status", "fields", "direct", "span_direct"),
    list(WIRE_CASES.values()),
    ids=list(WIRE_CASES),
)
def test_the_wire_is_gunicorns(
    body_file: Path,
    direct_sends: list[int],
    head: str,
    status: str,
    fields: list[tuple[str, str]],
    direct: bool,
    span_direct: bool,
) -> None:
    stock = wire_of(STOCK, head, status, fields, body_file)
    for span, sent_directly in ((False, direct), (True, span_direct)):
        direct_sends.clear()
        lean = wire_of(LeanResponse, head, status, fields, body_file, span=span)
        assert len(direct_sends) == int(sent_directly), span
        if span and b"Transfer-Encoding: chunked" in stock:
            # Iterated, the span goes in chunks of the wrapper's block, not in one.
            assert unchunked(without_date(lean)) == unchunked(without_date(stock))
        else:
            assert without_date(lean) == without_date(stock), span
        assert lean.count(b"\r\nDate: ") == 1
        if fields is SIZED and head != HEAD:
            assert lean.endswith(b"\r\n\r\n" + BODY)


@pytest.fixture
def combined_sends(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The body sizes ``LeanResponse`` sent in one send with the head."""
    sizes: list[int] = []
    real = response.send_rest

    def counted(sock: socket.socket, head: bytes, body: bytes, sent: int) -> None:
        sizes.append(len(body))
        real(sock, head, body, sent)

    monkeypatch.setattr(response, "send_rest", counted)
    return sizes


def _length(size: int) -> list[tuple[str, str]]:
    return [("Content-Type", "text/plain"), ("Content-Length", str(size))]


@pytest.mark.parametrize(
    ("head", "status", "fields", "chunks", "combined"),
    [
        (GET, "200 OK", _length(5), [b"hello"], 1),  # a HIT or a small pass-through
        (GET, "200 OK", _length(len(BODY)), [BODY], 1),  # larger than the buffers
        (GET, "200 OK", _length(10), [b"hello", b"world"], 1),  # the first with the head
        (GET, "200 OK", _length(10), [b"", b"helloworld"], 0),  # nothing to join: gunicorn's
        (GET, "200 OK", _length(3), [b"hello"], 0),  # longer than promised: gunicorn trims
        (GET10, "200 OK", UNSIZED, [b"hello", b"world"], 1),  # the connection's end frames it
        (GET, "200 OK", UNSIZED, [b"hello", b"world"], 0),  # chunked: gunicorn's
        (HEAD, "200 OK", _length(5), [b"hello"], 0),
        (GET, "304 Not Modified", [("ETag", '"a"')], [b"ignored"], 0),
        (GET, "200 OK", _length(0), [], 0),  # close() sends the head alone
        (GET, "200 OK", _length(5), [bytearray(b"hello")], 0),  # not bytes: TypeError
    ],
    ids=[
        "one-write",
        "large",
        "two-writes",
        "empty-first",
        "too-long",
        "unsized-1.0",
        "chunked",
        "head",
        "304",
        "no-body",
        "not-bytes",
    ],
)
def test_written_bodies_are_on_the_wire_as_gunicorns(
    combined_sends: list[int],
    head: str,
    status: str,
    fields: list[tuple[str, str]],
    chunks: list[bytes],
    combined: int,
) -> None:
    for timeout in (5.0, None):  # the proxy's client sockets, and blocking ones
        lean = wire_of_writes(LeanResponse, head, status, fields, chunks, timeout=timeout)
        stock = wire_of_writes(STOCK, head, status, fields, chunks, timeout=timeout)
        assert without_date(lean) == without_date(stock)
        assert lean.count(b"\r\nDate: ") == 1
    assert len(combined_sends) == 2 * combined


def test_tls_sockets_are_written_gunicorns_way(combined_sends: list[int]) -> None:
    lean = wire_of_writes(LeanResponse, GET, "200 OK", _length(5), [b"hello"], other_socket=True)
    assert combined_sends == []
    stock = wire_of_writes(STOCK, GET, "200 OK", _length(5), [b"hello"])
    assert without_date(lean) == without_date(stock)


def test_a_failed_first_send_leaves_the_state_as_gunicorns() -> None:
    states = []
    for cls in (LeanResponse, STOCK):
        server, peer = small_pair()
        peer.close()
        with server:
            resp = cls(parsed(GET), server, GunicornConfig())
            resp.start_response("200 OK", _length(5))
            with pytest.raises((BrokenPipeError, ConnectionResetError)):
                resp.write(b"hello")
            states.append((resp.headers_sent, resp.sent))
    assert states[0] == states[1] == (False, 0)


@pytest.mark.parametrize(
    ("timeout", "sendfile", "other_socket"),
    [(None, True, False), (0.0, True, False), (5.0, False, False), (5.0, True, True)],
    ids=["blocking-socket", "non-blocking-socket", "sendfile-off", "tls-like-socket"],
)  # fmt: skip
def test_other_sockets_and_settings_go_gunicorns_way(
    body_file: Path,
    direct_sends: list[int],
    timeout: float | None,
    sendfile: bool,
    other_socket: bool,
) -> None:
    if timeout == 0.0:  # gunicorn's own sendfile refuses a non-blocking socket, as before
        with pytest.raises(ValueError, match="non-blocking"):
            wire_of(LeanResponse, GET, "200 OK", SIZED, body_file, timeout=timeout)
        assert direct_sends == []
        return
    for span in (False, True):  # a span is iterated: gunicorn's would send from its position
        lean = wire_of(LeanResponse, GET, "200 OK", SIZED, body_file, timeout=timeout,
                       sendfile=sendfile, other_socket=other_socket, span=span)  # fmt: skip
        assert direct_sends == []
        assert lean.endswith(b"\r\n\r\n" + BODY)
        assert HEADER not in lean


def test_a_refused_file_is_sent_by_the_standard_library(
    body_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        response, "send_file", lambda *_, **_kw: 0
    )  # as for EINVAL on the first call
    stock = wire_of(STOCK, GET, "200 OK", SIZED, body_file)
    for span in (False, True):  # a span's bytes copied by pread
        lean = wire_of(LeanResponse, GET, "200 OK", SIZED, body_file, span=span)
        assert without_date(lean) == without_date(stock), span


@pytest.mark.parametrize("span", [False, True], ids=["open-file", "span"])
@pytest.mark.parametrize("refused", [False, True], ids=["sendfile", "copied"])
def test_a_file_shorter_than_its_length_is_never_sent_as_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, refused: bool, span: bool
) -> None:
    if refused:
        monkeypatch.setattr(response, "send_file", lambda *_, **_kw: 0)
    short = tmp_path / "short"
    short.write_bytes(HEADER + b"only these bytes")
    with pytest.raises(CacheDamaged, match="84 bytes short"):
        wire_of(LeanResponse, GET, "200 OK", [("Content-Length", "100")], short, span=span,
                span_size=100)  # fmt: skip


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
    for cls in (LeanResponse, STOCK):
        resp = cls(parsed(head), None, GunicornConfig())
        resp.status, resp.status_code = status, int(status[:3])
        resp.upgrade, resp.chunked, resp.must_close = upgrade, chunked, must_close
        resp.response_length = 10
        made.append([line for line in resp.default_headers() if not line.startswith("Date:")])
    assert made[0] == made[1]


def test_default_headers_take_the_date_of_this_second(monkeypatch: pytest.MonkeyPatch) -> None:
    resp = LeanResponse(parsed(GET), None, GunicornConfig())
    resp.status, resp.status_code, resp.response_length = "200 OK", 200, 0
    for _ in range(3):  # a second may turn between priming and reading
        monkeypatch.setattr(response.http_date, "memo", (int(time.time()), "primed"))
        if "Date: primed\r\n" in resp.default_headers():
            return
    pytest.fail("the cached date was not used")


@pytest.mark.parametrize("now", [0.0, 1.5, 1_700_000_000.999, 1_800_000_000.0])
def test_http_date_is_gunicorns(now: float) -> None:
    assert http_date(now) == util.http_date(now)


def test_http_date_is_formatted_once_a_second() -> None:
    first = http_date(1_700_000_000.1)
    assert http_date(1_700_000_000.9) is first  # the same string: not formatted again
    assert http_date(1_700_000_001.0) == util.http_date(1_700_000_001)


def test_lean_responses_make_that_response_lean_and_no_other() -> None:
    built, environ = wsgi.create(parsed(GET), None, ("127.0.0.1", 1), ("127.0.0.1", 80),
                                 GunicornConfig())  # fmt: skip
    seen = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        seen.append(type(start_response.__self__))
        return []

    LeanResponses(app)(environ, built.start_response)
    assert seen == [LeanResponse]
    assert type(built) is LeanResponse
    assert wsgi.Response is STOCK  # gunicorn's class is untouched
    again, _environ = wsgi.create(parsed(GET), None, ("127.0.0.1", 1), ("127.0.0.1", 80),
                                  GunicornConfig())  # fmt: skip
    assert type(again) is STOCK


# Field lists a response may be started with: (fields, remembered as plain afterwards).
HIT_FIELDS = [("Content-Type", "text/plain"), ("Content-Length", "5"), ("ETag", '"a"'),
              ("Age", "3"), ("Cache-Status", "wsgi_proxy; hit; ttl=57")]  # fmt: skip
FIELD_CASES: dict[str, tuple[list[Any], set[tuple[str, str]]]] = {
    "hit": (HIT_FIELDS, {f for f in HIT_FIELDS if f[0] != "Content-Length"}),
    "hop-by-hop": ([("Connection", "close"), ("Keep-Alive", "timeout=5"),
                    ("Transfer-Encoding", "chunked"), ("X-A", "1")], {("X-A", "1")}),
    "connection-upgrade": ([("Connection", "Upgrade"), ("Upgrade", "websocket")], set()),
    "spaces": ([("X-A", " padded\t"), ("X-B", "in side")], {("X-B", "in side")}),
    "list-pair": ([["X-A", "1"], ("X-B", "2")], {("X-B", "2")}),
    "bad-name": ([("X-A", "1"), ("Bad Name", "v"), ("X-C", "3")], {("X-A", "1")}),
    "bad-value": ([("X-A", "1"), ("X-B", "a\r\nX-Evil: 1")], {("X-A", "1")}),
    "bytes-name": ([(b"X-A", "1")], set()),
    "bad-length": ([("Content-Length", "x")], set()),
}  # fmt: skip


def started(cls: type, fields: list[Any]) -> tuple[Any, ...]:
    """What ``cls`` made of ``fields``: the kept lines, the length, the upgrade flag, the
    error (its type and text)."""
    server, peer = small_pair()
    with server, peer:
        resp = cls(parsed(GET), server, GunicornConfig())
        error: tuple[type[Exception], str] | None = None
        try:
            resp.start_response("200 OK", list(fields))
        except Exception as exc:  # compared with gunicorn's
            error = (type(exc), str(exc))
        return list(resp.headers), resp.response_length, resp.upgrade, error


@pytest.mark.parametrize(
    ("fields", "remembered"), list(FIELD_CASES.values()), ids=list(FIELD_CASES)
)
def test_field_lines_are_checked_as_gunicorn_does_then_remembered(
    monkeypatch: pytest.MonkeyPatch, fields: list[Any], remembered: set[tuple[str, str]]
) -> None:
    monkeypatch.setattr(response, "_plain_fields", set())
    stock = started(STOCK, fields)
    assert started(LeanResponse, fields) == stock  # checked
    assert response._plain_fields == remembered
    assert started(LeanResponse, fields) == stock  # remembered lines appended unchecked
    assert response._plain_fields == remembered


def test_remembered_lines_skip_the_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(response, "_plain_fields", set())
    started(LeanResponse, HIT_FIELDS)
    calls: list[Any] = []
    real = STOCK.process_headers

    def counted(self: Any, headers: Any) -> None:
        calls.extend(headers)
        real(self, headers)

    monkeypatch.setattr(STOCK, "process_headers", counted)
    kept = started(LeanResponse, HIT_FIELDS)[0]
    assert kept == HIT_FIELDS
    assert calls == [("Content-Length", "5")]  # the one line that sets the length


def test_the_remembered_lines_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(response, "_plain_fields", set())
    monkeypatch.setattr(response, "PLAIN_FIELDS_MAX", 10)
    for age in range(25):
        fields = [("Age", str(age)), ("X-A", "1")]
        assert started(LeanResponse, fields)[0] == fields
        assert len(response._plain_fields) <= 10
    assert ("Age", "24") in response._plain_fields
