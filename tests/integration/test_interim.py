"""Interim (1xx) responses from the origin (RFC 9110 section 15.2, RFC 9111 section 3): the
proxy reads past any number of them to the final response, never stores or counts one as
final, and passes ``103 Early Hints`` on only when told to (``WSGI_PROXY_EARLY_HINTS``)."""

from __future__ import annotations

import pytest
from support.checks import assert_proxy_error, assert_response
from support.proxy import ProxyFactory
from support.raw_origin import RawOrigin
from support.sockets import exchange

FINAL = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 11\r\n"
    b"Cache-Control: max-age=600\r\n\r\nthe final\r\n"
)
HINTS = (
    b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload; as=style\r\nX-Interim: 1\r\n\r\n"
)
CONTINUE = b"HTTP/1.1 100 Continue\r\nX-Interim: 1\r\n\r\n"
PROCESSING = b"HTTP/1.1 102 Processing\r\nX-Interim: 1\r\n\r\n"

INTERIMS = {
    "103": HINTS,
    "two-103": HINTS + HINTS,
    "100-without-expect": CONTINUE,
    "102-then-103": PROCESSING + HINTS,
    "fifty": (PROCESSING + HINTS) * 25,
}


@pytest.mark.parametrize("interim", INTERIMS.values(), ids=INTERIMS.keys())
def test_interim_responses_are_read_past_and_never_stored(
    raw_origin: RawOrigin, proxy_factory: ProxyFactory, interim: bytes
) -> None:
    raw_origin.route("/hinted", interim + FINAL)
    proxy = proxy_factory(origin=raw_origin.url)

    first = proxy.get("/hinted")
    second = proxy.get("/hinted")
    head = proxy.request("HEAD", "/hinted")

    assert_response(first, cache="MISS", body=b"the final\r\n")
    assert_response(second, cache="HIT", body=b"the final\r\n")
    assert_response(head, cache="HIT", body=b"")
    for reply in (first, second, head):
        # Nothing of an interim response reaches the final one or the stored copy.
        assert reply.header("X-Interim") is None, reply.describe()
        assert reply.header("Link") is None, reply.describe()
    assert raw_origin.count("/hinted") == 1


def test_an_unasked_101_is_a_502_and_not_stored(
    raw_origin: RawOrigin, proxy_factory: ProxyFactory
) -> None:
    switch = (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
    )
    raw_origin.route("/switch", switch + b"\x81\x05hello")
    proxy = proxy_factory(origin=raw_origin.url)

    assert_proxy_error(proxy.get("/switch"), 502)
    assert_proxy_error(proxy.get("/switch"), 502)
    assert raw_origin.count("/switch") == 2


@pytest.mark.gunicorn("25.0", "wsgi.early_hints, through which the proxy sends a 103")
def test_early_hints_are_passed_on_when_enabled(
    raw_origin: RawOrigin, proxy_factory: ProxyFactory
) -> None:
    raw_origin.route("/early", PROCESSING + HINTS + FINAL)
    proxy = proxy_factory({"WSGI_PROXY_EARLY_HINTS": "on"}, origin=raw_origin.url)
    request = b"GET /early HTTP/1.1\r\nHost: site.example\r\nConnection: close\r\n\r\n"

    received = exchange(proxy.port, request)
    again = exchange(proxy.port, request)

    hints, _, rest = received.partition(b"\r\n\r\n")
    assert hints.startswith(b"HTTP/1.1 103 "), received
    assert b"\r\nLink: </style.css>; rel=preload; as=style" in hints, received
    assert b"X-Interim" in hints  # an end-to-end field of the hint, passed on as sent
    assert rest.startswith(b"HTTP/1.1 200 OK\r\n"), received  # no 102: only 103 goes on
    assert rest.endswith(b"\r\n\r\nthe final\r\n"), received
    assert b"X-Interim" not in rest and b"Link:" not in rest, received
    assert again.startswith(b"HTTP/1.1 200 OK\r\n"), again  # a HIT: no origin, no hints
    assert b"X-Cache: HIT" in again, again
    # HTTP/1.0 clients cannot take interim responses: they get the final one only.
    assert raw_origin.count("/early") == 1
    raw_origin.route("/early10", HINTS + FINAL)
    old = exchange(proxy.port, b"GET /early10 HTTP/1.0\r\nHost: site.example\r\n\r\n")
    assert old.startswith(b"HTTP/1.0 200 OK\r\n"), old
    assert b"103" not in old and b"Link:" not in old, old


def test_early_hints_are_dropped_by_default(
    raw_origin: RawOrigin, proxy_factory: ProxyFactory
) -> None:
    raw_origin.route("/quiet", HINTS + FINAL)
    proxy = proxy_factory(origin=raw_origin.url)

    received = exchange(
        proxy.port, b"GET /quiet HTTP/1.1\r\nHost: site.example\r\nConnection: close\r\n\r\n"
    )

    assert received.startswith(b"HTTP/1.1 200 OK\r\n"), received
    assert b"103" not in received.split(b"\r\n", 1)[0]
    assert b"Link:" not in received
