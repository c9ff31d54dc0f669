"""The site a request is for (its Host and scheme) is part of the cache key, and exactly
what the origin is told (X-Forwarded-Host, X-Forwarded-Proto): a client cannot make the
proxy store a page built for another host and serve it to everyone (cache poisoning).
WSGI_PROXY_ALLOWED_HOSTS refuses other hosts before they reach the origin."""

from __future__ import annotations

import socket

import pytest
from support.checks import assert_proxy_error, assert_response
from support.origin import Origin, Recorded, Reply
from support.proxy import ProxyFactory, ProxyProcess

from wsgi_proxy.store.purge import BANNED

CACHED = (("Cache-Control", "max-age=600"),)
TOKEN = "purge-token"
AUTH = [("Authorization", f"Bearer {TOKEN}")]


def _page(request: Recorded) -> Reply:
    """A page with absolute links built from the forwarded host and scheme, as Rails and
    Django (USE_X_FORWARDED_HOST) build them."""
    scheme = request.header("X-Forwarded-Proto") or "http"
    host = request.header("X-Forwarded-Host") or "origin"
    return Reply(headers=CACHED, body=f'<a href="{scheme}://{host}/next">'.encode())


def _link(scheme: str, host: str) -> bytes:
    return f'<a href="{scheme}://{host}/next">'.encode()


def test_a_request_for_another_host_does_not_poison_the_cache(
    proxy: ProxyProcess, origin: Origin
) -> None:
    path = origin.respond("/page", _page)

    poisoned = proxy.get(path, [("Host", "evil.example")])
    clean = proxy.get(path, [("Host", "shop.example")])
    clean_again = proxy.get(path, [("Host", "shop.example")])
    evil_again = proxy.get(path, [("Host", "evil.example")])

    assert_response(poisoned, cache="MISS", body=_link("http", "evil.example"))
    assert_response(clean, cache="MISS", body=_link("http", "shop.example"))
    assert_response(clean_again, cache="HIT", body=_link("http", "shop.example"))
    assert_response(evil_again, cache="HIT", body=_link("http", "evil.example"))
    assert [r.header("X-Forwarded-Host") for r in origin.requests(path)] == [
        "evil.example",
        "shop.example",
    ]


def test_two_virtual_hosts_of_one_origin_get_their_own_entries_and_ready_answers(
    proxy: ProxyProcess, origin: Origin
) -> None:
    path = origin.respond("/home", _page)
    for host in ("a.example", "b.example"):
        for round_ in range(4):  # past the first HITs: ready answers (ready.py) take over
            reply = proxy.get(path, [("Host", host)])
            assert_response(reply, cache="MISS" if round_ == 0 else "HIT", body=_link("http", host))
    assert origin.count(path) == 2


@pytest.mark.parametrize(
    ("spelling", "sent"),
    [
        ("Shop.EXAMPLE", "shop.example"),
        ("shop.example:80", "shop.example"),
        ("shop.example:", "shop.example"),
        ("shop.example:8080", "shop.example:8080"),
        ("SHOP.example:08080", "shop.example:8080"),
        ("[::1]:80", "[::1]"),
    ],
)
def test_the_host_is_normalised_in_the_key_and_for_the_origin(
    proxy: ProxyProcess, origin: Origin, spelling: str, sent: str
) -> None:
    path = origin.respond("/normal", _page)

    first = proxy.get(path, [("Host", sent)])
    second = proxy.get(path, [("Host", spelling)])

    assert_response(first, cache="MISS", body=_link("http", sent))
    assert_response(second, cache="HIT", body=_link("http", sent))
    assert origin.last(path).header("X-Forwarded-Host") == sent


def test_the_forwarded_scheme_is_keyed_when_proxies_are_trusted(
    proxy_factory: ProxyFactory, origin: Origin
) -> None:
    path = origin.respond("/scheme", _page)
    trusting = proxy_factory({"WSGI_PROXY_TRUSTED_PROXIES": "1"})
    host = [("Host", "shop.example")]

    https = trusting.get(path, [*host, ("X-Forwarded-Proto", "https")])
    http = trusting.get(path, [*host, ("X-Forwarded-Proto", "http")])
    https_again = trusting.get(path, [*host, ("X-Forwarded-Proto", "https")])

    assert_response(https, cache="MISS", body=_link("https", "shop.example"))
    assert_response(http, cache="MISS", body=_link("http", "shop.example"))
    assert_response(https_again, cache="HIT", body=_link("https", "shop.example"))
    assert origin.count(path) == 2


def test_a_client_cannot_claim_https_without_a_trusted_proxy(
    proxy: ProxyProcess, origin: Origin
) -> None:
    path = origin.respond("/claim", _page)

    claimed = proxy.get(path, [("Host", "shop.example"), ("X-Forwarded-Proto", "https")])
    plain = proxy.get(path, [("Host", "shop.example")])

    assert_response(claimed, cache="MISS", body=_link("http", "shop.example"))
    assert_response(plain, cache="HIT", body=_link("http", "shop.example"))
    assert origin.last(path).header("X-Forwarded-Proto") == "http"


def _raw(proxy: ProxyProcess, head: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        sock.sendall(head)
        received = b""
        while data := sock.recv(65536):
            received += data
    return received


@pytest.mark.parametrize(
    "host_lines",
    [
        b"Host: a b\r\n",
        b"Host: shop.example/evil\r\n",
        b"Host: user@shop.example\r\n",
        b"Host: shop.example:99999\r\n",
        b"Host: shop.example:x\r\n",
        b"Host: shop.example\r\nHost: evil.example\r\n",
        b"",  # HTTP/1.1 requires a Host
    ],
    ids=["space", "slash", "userinfo", "port-range", "port-text", "two-lines", "none"],
)
def test_a_missing_or_invalid_host_is_a_400_and_reaches_nobody(
    proxy: ProxyProcess, origin: Origin, host_lines: bytes
) -> None:
    path = origin.respond("/badhost", _page)

    answer = _raw(
        proxy, f"GET {path} HTTP/1.1\r\n".encode() + host_lines + b"Connection: close\r\n\r\n"
    )

    assert answer.startswith(b"HTTP/1.1 400 "), answer
    if host_lines.count(b"Host") < 2:  # two Host lines: gunicorn answers itself
        assert b"text/plain" in answer, answer
    assert origin.count(path) == 0
    proxy.assert_alive()


def test_an_http10_request_without_host_is_served(proxy: ProxyProcess, origin: Origin) -> None:
    path = origin.respond("/old", _page)

    answer = _raw(proxy, f"GET {path} HTTP/1.0\r\n\r\n".encode())

    assert answer.startswith(b"HTTP/1.0 200 "), answer
    assert answer.endswith(_link("http", "origin")), answer
    assert origin.last(path).header("X-Forwarded-Host") is None


def test_allowed_hosts_refuse_the_others_before_the_origin(
    proxy_factory: ProxyFactory, origin: Origin
) -> None:
    path = origin.respond("/allowed", _page)
    proxy = proxy_factory({"WSGI_PROXY_ALLOWED_HOSTS": "shop.example, .example.org"})

    for host in ("evil.example", "shop.example.evil", "example.org.evil", "xexample.org"):
        assert_proxy_error(proxy.get(path, [("Host", host)]), 421)
    assert origin.count(path) == 0
    for host in ("shop.example", "SHOP.example:8443", "example.org", "www.example.org"):
        assert_response(proxy.get(path, [("Host", host)]), cache="MISS")
    health = proxy.get("/_wsgi_proxy/health", [("Host", "10.1.2.3:8080")])
    assert health.status == 200  # the admin interface is not a site


def test_a_purge_by_path_reaches_every_host_and_by_url_one(
    proxy_factory: ProxyFactory, origin: Origin
) -> None:
    path = origin.respond("/purged", _page)
    proxy = proxy_factory({"WSGI_PROXY_ADMIN_TOKEN": TOKEN})
    hosts = ("a.example", "b.example", "c.example:8080")

    def warm() -> None:
        for host in hosts:
            proxy.get(path, [("Host", host)])
            assert_response(proxy.get(path, [("Host", host)]), cache="HIT")

    warm()
    by_path = proxy.request("PURGE", path, AUTH)
    assert (by_path.status, by_path.body) == (200, b"purged 3\n")
    for host in hosts:
        assert_response(proxy.get(path, [("Host", host)]), cache="MISS")
    warm()
    one = proxy.request("POST", f"/_wsgi_proxy/purge?url=https://C.example:8080{path}", AUTH)
    assert (one.status, one.body) == (200, b"purged 1\n")
    assert_response(proxy.get(path, [("Host", "c.example:8080")]), cache="MISS")
    assert_response(proxy.get(path, [("Host", "a.example")]), cache="HIT")
    bad = proxy.request("POST", "/_wsgi_proxy/purge?url=ftp://x/y", AUTH)
    assert bad.status == 400, bad.describe()
    assert origin.count(path) == 3 * 2 + 1


def test_purges_by_path_stay_whole_when_the_list_of_sites_is_lost_or_cleared(
    proxy_factory: ProxyFactory, origin: Origin
) -> None:
    path = origin.respond("/listed", _page)
    proxy = proxy_factory({"WSGI_PROXY_ADMIN_TOKEN": TOKEN})
    listing = proxy.cache_dir / "v1" / "state" / "sites"
    for host in ("a.example", "b.example"):
        assert_response(proxy.get(path, [("Host", host)]), cache="MISS")
    listing.unlink()  # lost while serving: which sites are stored is unknown now
    assert_response(proxy.get(path, [("Host", "c.example")]), cache="MISS")
    assert listing.read_text() == "*\n"
    purged = proxy.request("PURGE", path, AUTH)  # a ban: finding the files would scan
    assert (purged.status, purged.body) == (200, (BANNED + "\n").encode())
    for host in ("a.example", "b.example", "c.example"):
        assert_response(proxy.get(path, [("Host", host)]), cache="MISS")

    cleared = proxy.request("POST", "/_wsgi_proxy/purge?all=1", AUTH)
    assert cleared.status == 200, cleared.describe()
    assert listing.read_text() == ""  # an empty cache: a list complete again
    assert_response(proxy.get(path, [("Host", "b.example")]), cache="MISS")
    assert listing.read_text() == "http://b.example\n"
    assert proxy.request("PURGE", path, AUTH).body == b"purged 1\n"
    assert_response(proxy.get(path, [("Host", "b.example")]), cache="MISS")


def test_a_host_longer_than_a_dns_name_is_a_400(proxy: ProxyProcess, origin: Origin) -> None:
    path = origin.respond("/long", _page)
    longest = "a" * 63 + "." + "b" * 63 + "." + "c" * 63 + "." + "d" * 61  # 253 characters
    assert_response(proxy.get(path, [("Host", longest)]), cache="MISS")
    assert_proxy_error(proxy.get(path, [("Host", longest + "e")]), 400)
    assert origin.count(path) == 1
