"""The seam's origin connection's request head (upstream.TunedConnection): the same bytes
as urllib3's ``request``, and the short path (the whole head at once) taken exactly in its
common case."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from support.sockets import read_all
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.util import SKIP_HEADER

from wsgi_proxy.core.config import Config
from wsgi_proxy.tuning.origin_requests import PlainFields, _field_block
from wsgi_proxy.upstream.origin_client import (
    TunedConnection,
    TunedHTTPSConnection,
    Upstream,
    _origin_headers,
)


def test_a_whole_request_head_is_the_same() -> None:
    """What urllib3's ``request`` sends on a socket, with both classes."""
    fields = {"Host": "origin:80", "User-Agent": SKIP_HEADER, "Accept-Encoding": SKIP_HEADER,
              "X-Forwarded-For": "192.0.2.1", "Via": "1.1 wsgi_proxy"}  # fmt: skip
    heads = []
    for cls in (HTTPConnection, TunedConnection):
        conn = cls("127.0.0.1", 9)
        ours, theirs = socket.socketpair()
        with ours, theirs:
            conn.sock = ours  # connected: urllib3 sends on it as on the origin's
            conn.request("GET", "/a?b=c", headers=fields)
            ours.shutdown(socket.SHUT_WR)
            head = bytearray()
            read_all(theirs, head)
            heads.append(bytes(head))
    assert heads[0] == heads[1]
    assert heads[1] == (b"GET /a?b=c HTTP/1.1\r\nHost: origin:80\r\nX-Forwarded-For: 192.0.2.1"
                        b"\r\nVia: 1.1 wsgi_proxy\r\n\r\n")  # fmt: skip


@pytest.mark.parametrize(
    ("origin", "cls", "base"),
    [
        ("http://127.0.0.1:8000", TunedConnection, HTTPConnection),
        ("https://127.0.0.1:8443", TunedHTTPSConnection, HTTPSConnection),
    ],
)
def test_the_pool_makes_origin_connections(
    tmp_path: Path, origin: str, cls: type[HTTPConnection], base: type[HTTPConnection]
) -> None:
    config = Config.from_env({"WSGI_PROXY_ORIGIN": origin, "WSGI_PROXY_CACHE_DIR": str(tmp_path)})
    conn = Upstream(config).pool._new_conn()
    assert type(conn) is cls
    assert isinstance(conn, base)


# A pass-through's fields, as forwarding.Forwarder sends them.
FORWARDED = (("Host", "origin:80"), ("User-Agent", "wrk"), ("X-Forwarded-For", "192.0.2.1"),
             ("X-Forwarded-Proto", "http"), ("X-Forwarded-Host", "proxy:8080"),
             ("Via", "1.1 wsgi_proxy"),
             ("Surrogate-Capability", 'wsgi_proxy="Surrogate/1.0"'))  # fmt: skip
# (method, fields added to FORWARDED, body, head written at once)
REQUEST_CASES: list[tuple[str, tuple[tuple[str, str], ...], bytes | None, bool]] = [
    ("GET", (), None, True),
    ("HEAD", (), None, True),
    ("GET", (("Accept-Encoding", "gzip"), ("Empty", ""), ("Latin", "caf\xe9")), None, True),
    ("GET", (("Tab", "a\tb"), ("Colon", "a: b"), ("!#$%&'*+-.^_`|~09", "t")), None, True),
    ("GET", (("Content-Length", "0"),), None, True),
    # a Transfer-Encoding field makes urllib3 frame a body (an empty last chunk)
    ("GET", (("Transfer-Encoding", "chunked"),), None, False),
    # other methods, and bodies, get urllib3's framing (Content-Length: 0 for a POST)
    ("POST", (), None, False),
    ("DELETE", (), None, False),
    ("GET", (), b"body", False),
    # a repeated name (an HTTPHeaderDict), and lines that are not plain, go line by line
    ("GET", (("Via", "1.0 front"),), None, False),
    ("GET", (("Folded", "a\r\n b"),), None, False),
    ("GET", (("Inner Space", "v"),), None, False),
    ("GET", (("Obs\x7fName", "v"),), None, False),
    # and so do the lines http.client refuses, with its errors
    ("GET", (("Split", "a\r\nInjected: yes"),), None, False),
    ("GET", (("Bare-LF", "a\nb"),), None, False),
    ("GET", (("Bad:Name", "v"),), None, False),
    ("GET", (("Euro", "\u20ac"),), None, False),
    ("GET", (("N\xe4me", "v"),), None, False),
    ("GET", (("X-Other", SKIP_HEADER),), None, False),  # urllib3's marker: its error
]


def _sent(
    cls: type[HTTPConnection],
    method: str,
    headers: object,
    body: bytes | None,
    *,
    chunked: bool = False,
) -> object:
    """The bytes ``cls``'s ``request`` writes on a socket, or the error it raises."""
    conn = cls("127.0.0.1", 9, timeout=5.0)
    ours, theirs = socket.socketpair()
    with ours, theirs:
        ours.settimeout(5.0)  # as urllib3 leaves it: the descriptor non-blocking
        conn.sock = ours  # connected: urllib3 sends on it as on the origin's
        try:
            conn.request(method, "/a?b=c", body=body, headers=headers, chunked=chunked)  # type: ignore[arg-type]
        except Exception as exc:  # the outcome compared
            return type(exc), str(exc)
        ours.shutdown(socket.SHUT_WR)
        sent = bytearray()
        read_all(theirs, sent)
        return bytes(sent)


class _Counted(TunedConnection):
    """An origin connection that counts the lines written one by one."""

    lines = 0

    def putheader(self, header: str, *values: str) -> None:  # type: ignore[override]
        type(self).lines += 1
        super().putheader(header, *values)


@pytest.mark.parametrize(("method", "extra", "body", "at_once"), REQUEST_CASES)
def test_requests_are_urllib3s(
    method: str, extra: tuple[tuple[str, str], ...], body: bytes | None, at_once: bool
) -> None:
    headers = _origin_headers((*FORWARDED, *extra))
    expected = _sent(HTTPConnection, method, headers, body)
    for cls in (TunedConnection, TunedHTTPSConnection):
        assert _sent(cls, method, headers, body) == expected
    _Counted.lines = 0
    assert _sent(_Counted, method, headers, body) == expected
    assert (_Counted.lines == 0) is at_once
    if at_once:
        block = _field_block(headers)  # type: ignore[arg-type]
        assert block is not None
        assert expected == b"%s /a?b=c HTTP/1.1\r\n%s\r\n\r\n" % (method.encode(), block)


def test_without_host_urllib3_adds_it() -> None:
    headers = _origin_headers(FORWARDED[1:])
    assert type(headers) is not PlainFields
    sent = _sent(TunedConnection, "GET", headers, None)
    assert sent == _sent(HTTPConnection, "GET", headers, None)
    assert isinstance(sent, bytes)
    assert b"\r\nHost: 127.0.0.1:9\r\n" in sent


def test_chunked_without_a_body_goes_urllib3s_way() -> None:
    headers = _origin_headers(FORWARDED)
    expected = _sent(HTTPConnection, "GET", headers, None, chunked=True)
    assert isinstance(expected, bytes)
    assert expected.endswith(b"\r\n\r\n0\r\n\r\n")
    _Counted.lines = 0
    assert _sent(_Counted, "GET", headers, None, chunked=True) == expected
    assert _Counted.lines > 0


def test_a_new_connection_is_opened_and_sent_on() -> None:
    """No socket yet: http.client's send connects, then the head goes as on an open one."""
    heads = []
    for cls in (HTTPConnection, TunedConnection):
        with socket.create_server(("127.0.0.1", 0)) as listener:
            conn = cls("127.0.0.1", listener.getsockname()[1], timeout=5.0)
            conn.request("GET", "/new", headers=_origin_headers(FORWARDED))
            peer, _ = listener.accept()
            with peer:
                conn.close()
                head = bytearray()
                read_all(peer, head)
                heads.append(bytes(head))
    assert heads[0] == heads[1]
    assert heads[1].startswith(b"GET /new HTTP/1.1\r\nHost: origin:80\r\n")
