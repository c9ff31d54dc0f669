"""The site of a request (sites.py), the list of sites (sitelist.py) and purge URLs."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from wsgi_proxy.core.sites import (
    Site,
    forwarded_scheme,
    is_allowed,
    normalise_host,
    parse_allowed_hosts,
    raw_key,
    request_scheme,
    request_site,
    site_of,
)
from wsgi_proxy.store import site_list as sitelist
from wsgi_proxy.store.purge import parse_purge_url

HOSTS: list[tuple[str, str, str | None]] = [
    ("shop.example", "http", "shop.example"),
    ("Shop.EXAMPLE", "http", "shop.example"),
    ("shop.example:80", "http", "shop.example"),
    ("shop.example:080", "http", "shop.example"),
    ("shop.example:443", "https", "shop.example"),
    ("shop.example:443", "http", "shop.example:443"),
    ("shop.example:80", "https", "shop.example:80"),
    ("shop.example:", "http", "shop.example"),
    ("shop.example:08080", "http", "shop.example:8080"),
    (" shop.example\t", "http", "shop.example"),
    ("shop.example.", "http", "shop.example."),
    ("127.0.0.1:8000", "http", "127.0.0.1:8000"),
    ("[::1]", "http", "[::1]"),
    ("[::1]:80", "http", "[::1]"),
    ("[2001:DB8::1]:8443", "https", "[2001:db8::1]:8443"),
    ("xn--bcher-kva.example", "http", "xn--bcher-kva.example"),
    ("a%2eb", "http", "a%2eb"),
    ("", "http", ""),
    ("a b", "http", None),
    ("shop.example/x", "http", None),
    ("user@shop.example", "http", None),
    ("shop.example,evil.example", "http", None),
    ("shop.example:99999", "http", None),
    ("shop.example:-1", "http", None),
    ("shop.example:8080:1", "http", None),
    ("[::1", "http", None),
    ("[::1]x", "http", None),
    ("[zz]", "http", None),
    ("bücher.example", "http", None),
    ("shop.example\x00", "http", None),
    ("shop.example?x", "http", None),
    ("shop.example#x", "http", None),
    ("shop\\example", "http", None),
]


@pytest.mark.parametrize(("value", "scheme", "expected"), HOSTS)
def test_normalise_host(value: str, scheme: str, expected: str | None) -> None:
    assert normalise_host(value, scheme) == expected


SITES: list[tuple[str, str | None, str, bool, Site | None]] = [
    ("http", "shop.example", "/a", True, Site("http", "shop.example")),
    ("https", "Shop.example:443", "/a", True, Site("https", "shop.example")),
    ("http", None, "/a", True, None),  # HTTP/1.1 requires Host
    ("http", None, "/a", False, Site("http", "")),  # HTTP/1.0 may leave it out
    ("http", "bad host", "/a", True, None),
    # absolute form: the target's authority wins over Host (RFC 9112 section 3.2.2)
    ("http", "shop.example", "http://Other.example:80/a", True, Site("http", "other.example")),
    ("http", None, "http://other.example/a", True, Site("http", "other.example")),
    ("http", "shop.example", "http://u@other.example/a", True, None),
    ("http", "shop.example", "http://bad host/a", True, None),
]


@pytest.mark.parametrize(("scheme", "host", "target", "http11", "expected"), SITES)
def test_site_of(
    scheme: str, host: str | None, target: str, http11: bool, expected: Site | None
) -> None:
    assert site_of(scheme, host, target, http11=http11) == expected


@pytest.mark.parametrize(
    ("proto", "connection", "trusted", "expected"),
    [
        ("https", "http", 1, "https"),
        ("HTTPS", "http", 1, "https"),
        ("https", "http", 0, "http"),  # nobody in front to trust
        ("http, https", "http", 1, "https"),  # the last value: the proxy next to us
        ("https, http", "https", 1, "http"),
        ("gopher", "http", 1, "http"),
        ("", "https", 1, "https"),
        (None, "https", 2, "https"),
    ],
)
def test_forwarded_scheme(proto: str | None, connection: str, trusted: int, expected: str) -> None:
    assert forwarded_scheme(proto, connection, trusted) == expected


ALLOW: list[tuple[str, tuple[str, ...], bool]] = [
    ("anything.example", (), True),
    ("", (), True),
    ("shop.example", ("shop.example",), True),
    ("shop.example:8443", ("shop.example",), True),
    ("shop.example.", ("shop.example",), True),
    ("www.shop.example", ("shop.example",), False),
    ("evil.example", ("shop.example",), False),
    ("", ("shop.example",), False),
    ("example.org", (".example.org",), True),
    ("a.b.example.org", (".example.org",), True),
    ("xexample.org", (".example.org",), False),
    ("example.org.evil", (".example.org",), False),
    ("[::1]:8080", ("[::1]",), True),
    ("evil.example", ("*",), True),
    ("", ("*",), False),
    ("a.example.org", ("*.example.org",), True),
    ("example.org", ("*.example.org",), False),
]


@pytest.mark.parametrize(("host", "allowed", "expected"), ALLOW)
def test_is_allowed(host: str, allowed: tuple[str, ...], expected: bool) -> None:
    assert is_allowed(host, allowed) is expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("", ()),
        ("Shop.example, .Example.org,*", ("shop.example", ".example.org", "*")),
        ("shop.example.,[::1]", ("shop.example", "[::1]")),
        ("*.example.org", ("*.example.org",)),
    ],
)
def test_parse_allowed_hosts(raw: str, expected: tuple[str, ...]) -> None:
    assert parse_allowed_hosts(raw) == expected


@pytest.mark.parametrize(
    "raw", ["shop.example:8080", "a b", "http://x", ".", "a*b.example", "**", "*example.org"]
)
def test_parse_allowed_hosts_refuses(raw: str) -> None:
    with pytest.raises(ValueError, match="not a host name"):
        parse_allowed_hosts(raw)


def test_request_site_and_raw_key_from_an_environ() -> None:
    environ: dict[str, object] = {
        "HTTP_HOST": "Shop.example",
        "RAW_URI": "/a?b",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.url_scheme": "http",
        "HTTP_X_FORWARDED_PROTO": "https",
    }
    assert request_scheme(environ, 1) == "https"
    assert request_scheme(environ, 0) == "http"
    assert request_site(environ, "https") == Site("https", "shop.example")
    normalised = request_site({**environ, "HTTP_HOST": "Shop.example:443"}, "https")
    assert normalised is not None and normalised.url == "https://shop.example"
    assert request_site({**environ, "HTTP_HOST": "bad host"}, "http") is None
    assert request_site({**environ, "RAW_URI": "http://Other/a"}, "http") == Site("http", "other")
    assert request_site({**environ, "HTTP_HOST": None}, "http") is None  # HTTP/1.1
    old = {**environ, "HTTP_HOST": None, "SERVER_PROTOCOL": "HTTP/1.0"}
    assert request_site(old, "http") == Site("http", "")
    assert raw_key(environ, "https") == "https://Shop.example/a?b"
    assert raw_key({**environ, "HTTP_HOST": None}, "https") is None


PURGE_URLS: list[tuple[str, bool, tuple[str, str | None]]] = [
    ("/a?b", False, ("/a?b", None)),
    ("https://Shop.example/a?b", False, ("/a?b", "shop.example")),
    ("http://shop.example:80/a", False, ("/a", "shop.example")),
    ("https://shop.example:8443", False, ("/", "shop.example:8443")),
    ("https://shop.example?q", False, ("/?q", "shop.example")),
    ("https://shop.example", True, ("", "shop.example")),
    ("https://shop.example/blog/", True, ("/blog/", "shop.example")),
]


@pytest.mark.parametrize(("url", "prefix", "expected"), PURGE_URLS)
def test_parse_purge_url(url: str, prefix: bool, expected: tuple[str, str | None]) -> None:
    assert parse_purge_url(url, prefix=prefix) == expected


@pytest.mark.parametrize("url", ["a/b", "ftp://x/y", "https:///y", "https://a b/", "*"])
def test_parse_purge_url_refuses(url: str) -> None:
    with pytest.raises(ValueError, match="not a"):
        parse_purge_url(url)


def test_the_list_of_sites_is_shared_and_bounded(tmp_path: Path) -> None:
    first, second = sitelist.SiteList(tmp_path), sitelist.SiteList(tmp_path)
    assert first.sites() is None  # no list at all: unknown
    first.start(tmp_path / "objects")
    assert first.sites() == []
    first.note("http://a.example")
    second.note("https://a.example")
    second.note("http://a.example")  # read from the file: not written again
    first.note("https://a.example")  # the other worker's line, read: not written again
    assert first.sites() == ["http://a.example", "https://a.example"]
    assert (tmp_path / "sites").read_text().count("\n") == 2
    first.note("http://" + "x" * sitelist.MAX_LINE)  # too long: the list is incomplete
    assert second.sites() is None
    second.note("http://b.example")  # read anew: incomplete, nothing more to write
    assert (tmp_path / "sites").read_text().count("\n") == 3


def test_the_list_of_sites_is_incomplete_past_its_bound(tmp_path: Path) -> None:
    listings = [sitelist.SiteList(tmp_path), sitelist.SiteList(tmp_path)]
    listings[0].start(tmp_path / "objects")

    def note_many(n: int) -> None:
        for i in range(260):
            listings[n % 2].note(f"http://h{n}-{i}")

    threads = [threading.Thread(target=note_many, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    lines = (tmp_path / "sites").read_text().splitlines()
    assert sitelist.INCOMPLETE in lines
    # Each worker counts what it read: a few lines more than the bound at most, no more.
    assert sitelist.MAX_SITES <= len(lines) <= sitelist.MAX_SITES + len(listings)
    assert listings[1].sites() is None


def test_a_list_deleted_while_serving_becomes_incomplete(tmp_path: Path) -> None:
    listing = sitelist.SiteList(tmp_path)
    listing.start(tmp_path / "objects")
    listing.note("http://a.example")
    (tmp_path / "sites").unlink()
    assert listing.sites() is None
    listing.note("http://a.example")  # remembered, but the file it was in is gone
    assert (tmp_path / "sites").read_text() == "*\n"
    assert listing.sites() is None


def test_a_reset_list_is_written_anew_by_every_worker(tmp_path: Path) -> None:
    first, second = sitelist.SiteList(tmp_path), sitelist.SiteList(tmp_path)
    first.start(tmp_path / "objects")
    first.note("http://a.example")
    second.note("http://" + "x" * sitelist.MAX_LINE)  # incomplete
    assert second.sites() is None
    second.reset()  # a clear: the cache is empty now
    assert first.sites() == []
    first.note("http://a.example")  # known from the old file: listed again in the new one
    assert first.sites() == ["http://a.example"]


def test_a_missing_list_starts_empty_only_for_an_empty_cache(tmp_path: Path) -> None:
    objects = tmp_path / "objects"
    (objects / "ab").mkdir(parents=True)  # folders, but no entry
    sitelist.SiteList(tmp_path).start(objects)
    assert sitelist.SiteList(tmp_path).sites() == []
    (tmp_path / "sites").unlink()
    (objects / "ab" / "entry").write_bytes(b"x")  # an entry nobody listed
    sitelist.SiteList(tmp_path).start(objects)
    assert sitelist.SiteList(tmp_path).sites() is None
    sitelist.SiteList(tmp_path).start(objects)  # there: left as it is
    assert (tmp_path / "sites").read_text() == "*\n"


def test_a_site_that_cannot_be_listed_is_refused(tmp_path: Path) -> None:
    listing = sitelist.SiteList(tmp_path / "missing-folder")
    with pytest.raises(OSError):
        listing.note("http://a.example")
