"""A broken, absent or slow origin, and bad settings: the proxy answers with a short error
(or cuts the connection), never stores a partial body, and keeps serving."""

from __future__ import annotations

import http.client

import pytest
from support.checks import assert_proxy_error, assert_response
from support.origin import OriginServer
from support.proxy import ProxyFactory, ProxyProcess, free_port
from support.raw_origin import RawOrigin

SHORT_LENGTH = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 1000\r\n"
    b"Cache-Control: max-age=60\r\n\r\n" + b"x" * 500
)
CUT_AFTER_A_MEGABYTE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2000000\r\n"
    b"Cache-Control: max-age=60\r\n\r\n" + b"z" * 1_000_000
)
CUT_CHUNKED = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n"
    b"Cache-Control: max-age=60\r\n\r\n"
    b"100\r\n" + b"y" * 256 + b"\r\n" + b"100\r\n" + b"y" * 100
)


def _never_complete(proxy: ProxyProcess, path: str) -> str:
    """GET `path`; the client must see a cut connection or the proxy's 502, never a whole
    response. Returns what it saw, for messages."""
    try:
        reply = proxy.get(path)
    except (http.client.HTTPException, OSError) as exc:
        return f"cut: {exc!r}"
    assert_proxy_error(reply, 502)
    return "502"


@pytest.mark.parametrize(
    "data",
    [SHORT_LENGTH, CUT_AFTER_A_MEGABYTE, CUT_CHUNKED],
    ids=["content-length", "content-length-long", "chunked"],
)
def test_truncated_origin_body_is_never_served_whole_nor_stored(
    raw_origin: RawOrigin, proxy_factory: ProxyFactory, data: bytes
) -> None:
    raw_origin.route("/cut", data)
    proxy = proxy_factory(origin=raw_origin.url)

    seen = [_never_complete(proxy, "/cut"), _never_complete(proxy, "/cut")]

    assert raw_origin.count("/cut") == 2, seen
    proxy.assert_alive()


def test_origin_down_is_502_and_the_proxy_recovers(proxy_factory: ProxyFactory) -> None:
    port = free_port()  # nothing listens there until the origin starts below
    proxy = proxy_factory(origin=f"http://127.0.0.1:{port}")

    assert_proxy_error(proxy.get("/down"), 502)
    assert_proxy_error(proxy.get("/down"), 502)

    with OriginServer.running(port) as server:
        origin = server.view("/up")
        path = origin.route("/again", headers=[("Cache-Control", "max-age=60")], body=b"back")
        assert_response(proxy.get(path), cache="MISS", body=b"back")
        assert_response(proxy.get(path), cache="HIT", body=b"back")
        assert origin.count(path) == 1


def test_slow_origin_is_504_and_the_proxy_keeps_serving(
    proxy_factory: ProxyFactory, origin_server: OriginServer
) -> None:
    origin = origin_server.view("/slow-origin")
    slow = origin.route("/slow", headers=[("Cache-Control", "max-age=60")], body=b"late", delay=3)
    fast = origin.route("/fast", headers=[("Cache-Control", "max-age=60")], body=b"on time")
    proxy = proxy_factory({"WSGI_PROXY_READ_TIMEOUT": "1"})

    assert_proxy_error(proxy.get(slow), 504)
    assert origin.count(slow) == 1  # no retry
    assert_response(proxy.get(fast), cache="MISS", body=b"on time")
    assert_response(proxy.get(fast), cache="HIT", body=b"on time")
    assert origin.count(fast) == 1


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("WSGI_PROXY_MAX_SIZE", "banana"),
        ("WSGI_PROXY_MAX_OBJECT_SIZE", "12Q"),
        ("WSGI_PROXY_ORIGIN", "ftp://x"),
        ("WSGI_PROXY_READ_TIMEOUT", "soon"),
    ],
)
def test_bad_setting_stops_gunicorn_naming_the_variable(
    proxy_factory: ProxyFactory, variable: str, value: str
) -> None:
    proxy = proxy_factory({variable: value}, ready=False)

    status = proxy.wait_exit(timeout=30)

    assert status is not None, f"gunicorn still runs with {variable}={value}"
    assert status != 0
    assert variable in proxy.stderr(lines=200), proxy.stderr(lines=200)
