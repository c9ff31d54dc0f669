"""Request bodies on their way to the origin: the first block (64 KiB) is read and checked
before the origin is asked, so a malformed or cut-off body there reaches nothing; a body
that came whole in it goes with a Content-Length; a body that fails later closes the
origin connection it was going out on. Each test asserts on what the client got and on
what the origin saw, request heads and TCP connections included."""

from __future__ import annotations

import socket

import pytest
from support.checks import assert_response, poll
from support.origin import Origin
from support.proxy import ProxyProcess

BLOCK = 64 * 1024  # the proxy reads this much of a body before it asks the origin


def raw_exchange(port: int, data: bytes, *, half_close: bool = False) -> bytes:
    """Send exact bytes (then shut down the sending side, if asked: a client that went
    away mid-body), return everything the proxy answered until it closed."""
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        sock.sendall(data)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return received


def assert_proxy_400(answer: bytes) -> None:
    """The proxy's own short plain-text 400 (not gunicorn's page), connection closed."""
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 "), answer[:300]
    lines = head.lower().split(b"\r\n")
    assert b"x-cache: miss" in lines, answer[:300]
    assert any(line.startswith(b"content-type: text/plain") for line in lines), answer[:300]
    assert 0 < len(body) < 1024, answer[:300]


def chunked_head(path: str) -> bytes:
    return f"POST {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".encode()


# (body bytes after the head, whether the client then goes away)
BAD_FIRST_BLOCK = {
    "invalid first chunk size": (b"zz\r\nab\r\n0\r\n\r\n", False),
    "invalid size after a valid chunk": (b"5\r\nhello\r\nzz\r\n", False),
    "chunk without its CRLF": (b"5\r\nhelloXX0\r\n\r\n", False),
    "chunked body cut short": (b"5\r\nhel", True),
    "shorter than its Content-Length": (b"only ten b", True),
}


@pytest.mark.parametrize("case", sorted(BAD_FIRST_BLOCK))
def test_a_bad_body_in_the_first_block_never_reaches_the_origin(
    proxy: ProxyProcess, origin: Origin, case: str
) -> None:
    path = origin.route("/upload", method="POST", echo=True)
    body, half_close = BAD_FIRST_BLOCK[case]
    head = chunked_head(path)
    if case == "shorter than its Content-Length":
        head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n".encode()

    answer = raw_exchange(proxy.port, head + body, half_close=half_close)
    clean = proxy.request("POST", path, body=b"whole body")

    # The clean request's head came after any the bad one could have sent: no request
    # line at all reached the origin for the bad one.
    assert [(h.method, h.target) for h in origin.heads()] == [("POST", path)]
    assert_proxy_400(answer)
    assert_response(clean, cache="MISS", body=b"whole body")


# What follows a valid first block of 64 KiB and a valid 4 KiB chunk: (bytes, client leaves)
BAD_LATER = {
    "invalid chunk size": (b"zz\r\n", False),
    "chunked body cut short": (b"1000\r\nabc", True),
}


@pytest.mark.parametrize("case", [*sorted(BAD_LATER), "shorter than its Content-Length"])
def test_a_body_failing_after_the_first_block_closes_the_origin_connection(
    proxy: ProxyProcess, origin: Origin, case: str
) -> None:
    path = origin.route("/stream", method="POST", echo=True)
    if case in BAD_LATER:
        tail, half_close = BAD_LATER[case]
        chunks = b"%x\r\n%s\r\n" % (BLOCK, b"a" * BLOCK) + b"1000\r\n" + b"b" * 4096 + b"\r\n"
        data = chunked_head(path) + chunks + tail
    else:
        half_close = True
        head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 200000\r\n\r\n"
        data = head.encode() + b"c" * 100_000

    answer = raw_exchange(proxy.port, data, half_close=half_close)

    assert poll(lambda: len(origin.heads()) == 1, timeout=10), origin.heads()
    (started,) = origin.heads()
    assert (started.method, started.target) == ("POST", path)
    assert origin.requests() == []  # its body never came whole
    # The proxy closed that connection instead of pooling it: the origin saw it end, with
    # nothing more sent on it, and later requests go out on other connections.
    assert poll(lambda: origin.has_ended(started.connection), timeout=10)
    after = origin.route("/after", body=b"fresh")
    for _ in range(4):
        assert_response(proxy.get(after), cache="MISS", body=b"fresh")
    assert [r.connection != started.connection for r in origin.requests(after)] == [True] * 4
    assert_proxy_400(answer)


def test_a_small_chunked_upload_reaches_the_origin_with_a_content_length(
    proxy: ProxyProcess, origin: Origin
) -> None:
    path = origin.route("/small", method="PUT", status=201, echo=True)
    pieces = [b"first,", b"x" * 30_000, b"\r\n0\r\n\r\n", b"last"]

    reply = proxy.request("PUT", path, body=iter(pieces))

    assert_response(reply, cache="MISS", status=201, body=b"".join(pieces))
    seen = origin.last(path)
    assert (seen.body, seen.chunked) == (b"".join(pieces), False)
    assert seen.header_values("Content-Length") == [str(len(b"".join(pieces)))]
    assert seen.header("Transfer-Encoding") is None


def test_a_large_upload_reaches_the_origin_whole_in_its_own_framing(
    proxy: ProxyProcess, origin: Origin
) -> None:
    path = origin.route("/large", method="POST", echo=True)
    pieces = [bytes(range(251)) * 100 for _ in range(12)]  # 301,200 bytes, past the block
    payload = b"".join(pieces)

    chunked = proxy.request("POST", path, body=iter(pieces))
    with_length = proxy.request("POST", path, body=payload)

    assert_response(chunked, cache="MISS", body=payload)
    assert_response(with_length, cache="MISS", body=payload)
    by_chunks, by_length = origin.requests(path)
    assert (by_chunks.body, by_chunks.chunked, by_chunks.header("Content-Length")) == (
        payload,
        True,
        None,
    )
    assert (by_length.body, by_length.chunked) == (payload, False)
    assert by_length.header_values("Content-Length") == [str(len(payload))]


def test_a_bad_body_on_a_get_is_refused_not_answered_from_a_stale_entry(
    proxy: ProxyProcess, origin: Origin
) -> None:
    """stale-if-error stands in for an origin that failed, not for a malformed request."""
    fields = [("Cache-Control", "max-age=0, stale-if-error=600"), ("ETag", '"v1"')]
    path = origin.route("/stale", headers=fields, body=b"stored")
    assert_response(proxy.get(path), cache="MISS", body=b"stored")

    head = f"GET {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    answer = raw_exchange(proxy.port, head.encode() + b"zz\r\nab\r\n0\r\n\r\n")

    assert_proxy_400(answer)
    assert origin.count(path) == 1
