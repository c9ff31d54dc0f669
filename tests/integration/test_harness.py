"""The harness checked on its own, without the proxy: if these fail, nothing else is proof."""

from __future__ import annotations

import http.client

import pytest
from support import client
from support.bodies import Digest, pattern_bytes, pattern_digest
from support.origin import Origin, Recorded, Reply
from support.raw_origin import RawOrigin


def _port(origin: Origin) -> int:
    return int(origin.url.rsplit(":", 1)[1])


def test_origin_records_requests_and_answers_as_routed(origin: Origin) -> None:
    path = origin.route(
        "/a",
        status=203,
        reason="Fine Thanks",
        headers=[("Set-Cookie", "a=1"), ("Set-Cookie", "b=2"), ("X-Foo", "bar")],
        body=b"hello",
    )
    reply = client.request(
        _port(origin),
        "POST",
        path + "?x=%zz",
        [("X-Dup", "1"), ("X-Dup", "2")],
        body=b"payload",
    )
    assert (reply.status, reply.reason, reply.body) == (203, "Fine Thanks", b"hello")
    assert reply.header_values("Set-Cookie") == ["a=1", "b=2"]
    assert reply.header("X-Foo") == "bar"
    assert reply.header("Content-Length") == "5"
    seen = origin.last(path)
    assert (seen.method, seen.target, seen.body, seen.chunked) == (
        "POST",
        path + "?x=%zz",
        b"payload",
        False,
    )
    assert seen.header_values("X-Dup") == ["1", "2"]
    assert origin.count(path) == 1
    assert origin.count(path, method="GET") == 0


def test_origin_decodes_chunked_uploads_and_sends_chunked_bodies(origin: Origin) -> None:
    path = origin.route("/c", framing="chunked", echo=True)
    reply = client.request(_port(origin), "PUT", path, body=iter([b"ab", b"cde", b"f"]))
    assert reply.body == b"abcdef"
    assert reply.header("Transfer-Encoding") == "chunked"
    assert reply.header("Content-Length") is None
    seen = origin.last(path)
    assert (seen.body, seen.chunked) == (b"abcdef", True)


def test_origin_generated_and_close_delimited_bodies(origin: Origin) -> None:
    big = origin.route("/g", generated=3 << 20)
    closing = origin.route("/close", framing="close", body=b"until EOF")
    digest = Digest()
    with client.stream(_port(origin), big) as reply:
        while piece := reply.read(65536):
            digest.update(piece)
    assert digest == pattern_digest(3 << 20)
    assert pattern_bytes(10) == pattern_bytes(10)[:10]
    assert client.get(_port(origin), closing).body == b"until EOF"


def test_origin_responder_sees_the_request(origin: Origin) -> None:
    def by_language(record: Recorded) -> Reply:
        return Reply(body=(record.header("Accept-Language") or "none").encode())

    path = origin.respond("/v", by_language)
    assert client.get(_port(origin), path, [("Accept-Language", "fr")]).body == b"fr"
    assert client.get(_port(origin), path).body == b"none"
    assert origin.count(path) == 2


def test_origin_unknown_path_is_404(origin: Origin) -> None:
    assert client.get(_port(origin), origin.prefix + "/nothing").status == 404


def test_raw_origin_writes_exact_bytes(raw_origin: RawOrigin) -> None:
    raw_origin.route("/short", b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
    with pytest.raises(http.client.IncompleteRead):
        client.get(raw_origin.port, "/short?q")
    assert raw_origin.count("/short") == 1
    assert raw_origin.heads()[0].startswith(b"GET /short?q HTTP/1.1\r\n")
