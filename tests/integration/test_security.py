"""The proxy cannot be turned against its users, its origin or its cache: malformed and
ambiguous requests are refused before anything reaches the origin, requests reach only the
configured origin, client headers cannot poison what others get, and limits answer 4xx and
leave the proxy serving. Each test asserts on what the origin received and on what a
second, clean client is served."""

from __future__ import annotations

import socket

import pytest
from support.checks import assert_proxy_error, assert_response
from support.origin import Origin
from support.proxy import ProxyFactory, ProxyProcess
from support.raw_origin import RawOrigin
from support.versions import is_forwarded_target

from wsgi_proxy.tuning import is_at_least

CACHED = [("Cache-Control", "max-age=600")]


def raw_exchange(port: int, data: bytes) -> bytes:
    """Send exact bytes, return everything the proxy answered until it closed or paused."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
                if b"\r\n\r\n" in received and len(received) > 4096:
                    break
        except TimeoutError:
            pass
    return received


def status_of(answer: bytes) -> int:
    assert answer.startswith(b"HTTP/1.1 "), answer[:200]
    return int(answer.split(b" ", 2)[1])


MALFORMED = {
    "content-length and chunked": b"POST {p} HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "two content-lengths": b"POST {p} HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
    b"Content-Length: 5\r\n\r\nabcde",
    "invalid content-length": b"POST {p} HTTP/1.1\r\nHost: x\r\nContent-Length: 4x\r\n\r\nabcd",
    "invalid chunk size": b"POST {p} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"zz\r\nab\r\n0\r\n\r\n",
    "obs-fold": b"GET {p} HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n  folded\r\n\r\n",
    "bare LF": b"GET {p} HTTP/1.1\nHost: x\n\n",
    "bare CR": b"GET {p} HTTP/1.1\r\nHost: x\rX: y\r\n\r\n",
    "NUL in the target": b"GET {p}\x00x HTTP/1.1\r\nHost: x\r\n\r\n",
    "space in a field name": b"GET {p} HTTP/1.1\r\nHost: x\r\nX A: 1\r\n\r\n",
    "CONNECT to a host": b"CONNECT evil.example:443 HTTP/1.1\r\nHost: x\r\n\r\n",
    "CONNECT to a path": b"CONNECT {p}:443 HTTP/1.1\r\nHost: x\r\n\r\n",
    "unknown transfer coding": b"POST {p} HTTP/1.1\r\nHost: x\r\n"
    b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
}


# An older gunicorn reads on past a bare LF for a CRLF that never comes: no answer.
BARE_LF = pytest.mark.gunicorn("27.0", "a bare LF refused with 400")


@pytest.mark.parametrize(
    "case", [pytest.param(c, marks=BARE_LF) if c == "bare LF" else c for c in sorted(MALFORMED)]
)
def test_malformed_requests_are_refused_and_never_forwarded(
    proxy: ProxyProcess, origin: Origin, case: str
) -> None:
    path = origin.route("/target", headers=CACHED, body=b"clean", echo=False)
    answer = raw_exchange(proxy.port, MALFORMED[case].replace(b"{p}", path.encode()))
    assert 400 <= status_of(answer) < 600, answer[:300]
    assert status_of(answer) in (400, 405, 501), answer[:300]
    assert origin.requests() == [], [r.target for r in origin.requests()]
    assert_response(proxy.get(path), cache="MISS", body=b"clean")  # and it keeps serving


def test_requests_reach_only_the_configured_origin(proxy: ProxyProcess, origin: Origin) -> None:
    path = origin.route("/only", headers=CACHED, body=b"ours")
    absolute = raw_exchange(
        proxy.port,
        f"GET http://evil.example{path}?q=1 HTTP/1.1\r\nHost: evil.example\r\n\r\n".encode(),
    )
    assert status_of(absolute) == 200, absolute[:300]
    assert absolute.endswith(b"ours")
    seen = origin.last(path)
    assert (seen.target, seen.header("Host")) == (f"{path}?q=1", origin.host)
    foreign_host = proxy.get(path, [("Host", "evil.example:666")])
    assert foreign_host.body == b"ours"
    assert origin.last(path).header("Host") == origin.host
    for trick in ("//evil.example/x", "/@evil.example/x", "/\\evil.example/x", "/%2F%2Fevil"):
        reply = proxy.get(origin.prefix + trick)
        assert reply.status == 404  # the origin's own answer for an unknown path
        assert is_forwarded_target(origin.prefix + trick, origin.requests()[-1].target)
    assert all(r.header("Host") == origin.host for r in origin.requests())


POISON = [
    ("X-Forwarded-Host", "evil.example"),
    ("X-Forwarded-Scheme", "nothttp"),
    ("X-Forwarded-Port", "666"),
    ("X-Host", "evil.example"),
    ("X-Original-URL", "/admin"),
    ("X-Rewrite-URL", "/admin"),
    ("Forwarded", "host=evil.example;proto=https"),
    ("X-HTTP-Method-Override", "DELETE"),
    ("Surrogate-Capability", 'wsgi_proxy="Surrogate/1.0 ESI/1.0"'),
    ("X-WSGI-Proxy-Peer", "http://node.example"),
    # the scheme as Rack (Rails), Spring and IIS read it besides X-Forwarded-Proto
    ("X-Forwarded-Ssl", "on"),
    ("X-Forwarded-Protocol", "https"),
    ("Front-End-Https", "on"),
    ("X-Url-Scheme", "https"),
    ("X-Scheme", "https"),
    ("X-Forwarded-Uri", "/admin"),
    ("X-Original-Uri", "/admin"),
    ("X-Forwarded-Path", "/admin"),
    ("X-Real-IP", "6.6.6.6"),
    ("Client-IP", "6.6.6.6"),
    ("X-Client-IP", "6.6.6.6"),
    ("True-Client-IP", "6.6.6.6"),
    ("X-Cluster-Client-IP", "6.6.6.6"),
]


def test_unkeyed_headers_cannot_poison_the_cache(proxy: ProxyProcess, origin: Origin) -> None:
    path = origin.route("/poison", headers=CACHED, body=b"clean for everyone")
    attacker = proxy.get(path, [*POISON, ("Host", "client.example")])
    seen = origin.last(path)
    for name, value in POISON:
        assert value not in seen.header_values(name), (name, seen.headers)
    assert seen.header("X-Forwarded-Host") == "client.example"  # set by the proxy itself
    victim = proxy.get(path, [("Host", "client.example")])  # the same site: the same entry
    assert_response(victim, cache="HIT", body=b"clean for everyone")
    assert attacker.body == victim.body
    assert origin.count(path) == 1


def test_fields_named_like_environ_keys_change_nothing(proxy: ProxyProcess, origin: Origin) -> None:
    """gunicorn maps a ``SCRIPT_NAME`` or ``PATH_INFO`` request field into the environ for a
    peer it trusts (loopback by default, where nginx connects from), which would move the
    path the proxy routes on: an admin request was a 404, a mismatch a 500.
    The proxy has gunicorn map none, from anyone."""
    item = origin.route("/shop/item", headers=CACHED, body=b"item")
    assert_response(proxy.get(item), cache="MISS", body=b"item")
    forged = [("SCRIPT_NAME", "/elsewhere"), ("SCRIPT_NAME", "/shop"),
              ("PATH_INFO", "/_wsgi_proxy/health"), ("REMOTE_USER", "admin")]  # fmt: skip
    for name, value in forged:
        assert_response(proxy.get(item, [(name, value)]), cache="HIT", body=b"item")
    assert origin.count(item) == 1
    # A request for the admin interface stays one (it was a 404), never sent to the origin.
    health = proxy.get("/_wsgi_proxy/health", [("SCRIPT_NAME", "/_wsgi_proxy")])
    assert health.status == 200, health
    assert origin.requests("/_wsgi_proxy/health") == []
    assert origin.requests("/health") == []


def test_private_answers_never_reach_a_second_client(proxy: ProxyProcess, origin: Origin) -> None:
    private = origin.route("/mine", headers=[("Cache-Control", "private, max-age=600")], body=b"A")
    cookie = origin.route("/cookie", headers=[*CACHED, ("Set-Cookie", "session=alice")], body=b"A")
    authed = origin.route("/auth", headers=CACHED, body=b"alice's")
    proxy.get(private, [("Cookie", "user=alice")])
    proxy.get(cookie)
    proxy.get(authed, [("Authorization", "Basic YWxpY2U6cHc=")])
    for path in (private, cookie, authed):
        second = proxy.get(path)
        assert second.x_cache == "MISS", second.describe()
        assert second.header("Set-Cookie") in (None, "session=alice")
        assert origin.count(path) == 2


def test_limits_answer_4xx_and_the_proxy_keeps_serving(
    proxy_factory: ProxyFactory, origin: Origin
) -> None:
    proxy = proxy_factory(
        {
            "WSGI_PROXY_MAX_BODY_SIZE": "1k",
            "WSGI_PROXY_MAX_HEADERS": "20",
            "WSGI_PROXY_MAX_URL_LENGTH": "2000",
        }
    )
    sink = origin.route("/sink", method="POST", echo=True)
    assert_proxy_error(proxy.request("POST", sink, body=b"x" * 1025), 413)
    chunked_too_large = proxy.request("POST", sink, body=iter([b"x" * 600, b"y" * 600]))
    assert chunked_too_large.status in (413, 502), chunked_too_large.describe()
    assert all(len(r.body) <= 1024 for r in origin.requests(sink))
    assert proxy.request("POST", sink, body=b"x" * 1024).body == b"x" * 1024
    long_url = raw_exchange(proxy.port, b"GET /" + b"a" * 3000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    # gunicorn's answer to a request line over its limit: 400 before gunicorn 27.
    assert status_of(long_url) == (414 if is_at_least("gunicorn", "27.0") else 400)
    many = "".join(f"X-H{i}: {i}\r\n" for i in range(30)).encode()
    too_many = raw_exchange(proxy.port, b"GET / HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n")
    assert 400 <= status_of(too_many) < 500, too_many[:300]
    path = origin.route("/after", headers=CACHED, body=b"still here")
    assert_response(proxy.get(path), cache="MISS", body=b"still here")


AMBIGUOUS = {
    "chunked and content-length": b"HTTP/1.1 200 OK\r\nCache-Control: max-age=600\r\n"
    b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "conflicting content-lengths": b"HTTP/1.1 200 OK\r\nCache-Control: max-age=600\r\n"
    b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    "invalid content-length": b"HTTP/1.1 200 OK\r\nCache-Control: max-age=600\r\n"
    b"Content-Length: 5x\r\n\r\nhello",
}


@pytest.mark.parametrize("case", sorted(AMBIGUOUS))
def test_ambiguous_origin_framing_is_502_and_not_stored(
    proxy_factory: ProxyFactory, raw_origin: RawOrigin, case: str
) -> None:
    raw_origin.route("/amb", AMBIGUOUS[case])
    proxy = proxy_factory(origin=raw_origin.url)
    assert_proxy_error(proxy.get("/amb"), 502)
    assert_proxy_error(proxy.get("/amb"), 502)
    assert raw_origin.count("/amb") == 2  # nothing was stored
