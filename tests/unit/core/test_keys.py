"""Cache keys and Vary selection (RFC 9111 sections 2 and 4.1)."""

from __future__ import annotations

import pytest

from wsgi_proxy.core import keys


def test_targets_that_differ_byte_for_byte_have_different_keys() -> None:
    targets = ["/a", "/a?", "/a?x=1", "/A", "/a%2Fb", "/a/b", "/a%2fb", "//a"]
    digests = {keys.digest(keys.primary_key("http://o", t, "http://s")) for t in targets}
    assert len(digests) == len(targets)


def test_sites_have_different_keys() -> None:
    site_urls = ["http://shop.example", "https://shop.example", "http://evil.example",
                 "http://shop.example:8080", "http://"]  # fmt: skip
    digests = {keys.digest(keys.primary_key("http://o", "/a", s)) for s in site_urls}
    assert len(digests) == len(site_urls)


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("GET http://o/a?b https://shop.example", ("/a?b", "https://shop.example")),
        ("GET http://o/ http://", ("/", "http://")),
        ("GET http://o/a", None),  # written before sites were keyed
        ("GET http://other/a http://s", None),
        ("GET http://o:81/a http://s", None),
    ],
)
def test_split_key(key: str, expected: tuple[str, str] | None) -> None:
    assert keys.split_key(key, "http://o") == expected


def test_split_key_undoes_primary_key() -> None:
    key = keys.primary_key("http://o:8000", "/x%20y?q=1", "https://[::1]:8443")
    assert keys.split_key(key, "http://o:8000") == ("/x%20y?q=1", "https://[::1]:8443")
    assert keys.site_of_key(key) == "https://[::1]:8443"


def test_digest_is_a_safe_file_name() -> None:
    name = keys.digest(keys.primary_key("http://o", "/../../etc/passwd\x00", "http://s"))
    assert len(name) == 64
    assert set(name) <= set("0123456789abcdef")


@pytest.mark.parametrize(
    ("vary", "expected"),
    [
        ("Accept-Encoding", ("accept-encoding",)),
        ("accept-language, Accept-Encoding", ("accept-encoding", "accept-language")),
        ("Accept, *", None),
        ("", ()),
    ],
)
def test_vary_names(vary: str, expected: tuple[str, ...] | None) -> None:
    assert keys.vary_names((("Vary", vary),)) == expected


def test_vary_values_normalise_whitespace_and_absence() -> None:
    request = (("Accept-Language", "en,  fr"), ("Accept-Language", "de"))
    values = keys.vary_values(("accept-encoding", "accept-language"), request)
    assert values == (("accept-encoding", None), ("accept-language", "en,fr,de"))


@pytest.mark.parametrize(
    ("name", "first", "second"),
    [
        ("foo", (("Foo", "1, 2"),), (("Foo", "1"), ("Foo", "2"))),
        ("foo", (("Foo", "1,2"),), (("Foo", " 1, 2 "),)),
        ("accept-language", (("Accept-Language", "en, de"),), (("Accept-Language", "eN, De"),)),
        ("accept-language", (("Accept-Language", "en, de"),), (("Accept-Language", " en ,  de"),)),
    ],
)
def test_equivalent_values_select_the_same_variant(
    name: str, first: tuple[tuple[str, str], ...], second: tuple[tuple[str, str], ...]
) -> None:
    assert keys.vary_values((name,), first) == keys.vary_values((name,), second)


def test_case_matters_outside_caseless_fields() -> None:
    assert keys.vary_values(("foo",), (("Foo", "A"),)) != keys.vary_values(
        ("foo",), (("Foo", "a"),)
    )


def test_absent_and_empty_fields_are_different_variants() -> None:
    absent = keys.vary_values(("x",), ())
    empty = keys.vary_values(("x",), (("X", ""),))
    assert keys.variant_digest(absent) != keys.variant_digest(empty)
