"""Header parsing edges (RFC 9110, RFC 9111 section 5.2), table-driven."""

from __future__ import annotations

import pytest

from wsgi_proxy import headers as h

CC_CASES: list[tuple[str, dict[str, str | None]]] = [
    ("max-age=60", {"max-age": "60"}),
    ("Max-Age=60, NO-CACHE", {"max-age": "60", "no-cache": None}),
    ('private="Set-Cookie, X-A", max-age=5', {"private": "Set-Cookie, X-A", "max-age": "5"}),
    ("max-age=1, max-age=2", {"max-age": "1"}),
    ('max-age="3"', {"max-age": "3"}),
    (" , ,public,, ", {"public": None}),
    ('no-cache="a\\"b"', {"no-cache": 'a"b'}),
    ("max-age = 7", {"max-age": "7"}),
    ("", {}),
]


@pytest.mark.parametrize(("value", "expected"), CC_CASES)
def test_parse_cache_control(value: str, expected: dict[str, str | None]) -> None:
    assert h.parse_cache_control(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [("0", 0), ("60", 60), ("-1", None), ("1.5", None), ("", None), (None, None), ("٣", None)],
)
def test_parse_delta_seconds(value: str | None, expected: int | None) -> None:
    assert h.parse_delta_seconds(value) == expected


def test_end_to_end_drops_hop_by_hop_and_connection_named_fields() -> None:
    fields = (
        ("Connection", "close, X-Secret"),
        ("X-Secret", "1"),
        ("Keep-Alive", "timeout=5"),
        ("Transfer-Encoding", "chunked"),
        ("TE", "trailers"),
        ("Upgrade", "h2c"),
        ("Proxy-Authorization", "Basic x"),
        ("X-Kept", "yes"),
        ("Set-Cookie", "a=1"),
        ("Set-Cookie", "b=2"),
    )
    assert h.end_to_end(fields) == (("X-Kept", "yes"), ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2"))


def test_from_environ_keeps_order_and_content_fields() -> None:
    environ: dict[str, object] = {
        "HTTP_ACCEPT": "*/*",
        "CONTENT_TYPE": "text/plain",
        "CONTENT_LENGTH": "3",
        "HTTP_X_FOO_BAR": "1",
        "wsgi.input": object(),
    }
    assert h.from_environ(environ) == (
        ("Accept", "*/*"),
        ("Content-Type", "text/plain"),
        ("Content-Length", "3"),
        ("X-Foo-Bar", "1"),
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [('"a", W/"b"', ['"a"', 'W/"b"']), ("*", ["*"]), ("junk", []), (None, [])],
)
def test_parse_etags(value: str | None, expected: list[str]) -> None:
    assert h.parse_etags(value) == expected


def test_http_date_round_trip_and_invalid() -> None:
    assert h.parse_http_date(h.format_http_date(1_700_000_000)) == 1_700_000_000
    assert h.parse_http_date("0") is None
    assert h.parse_http_date(None) is None


def test_format_cache_status() -> None:
    assert h.format_cache_status("p", hit=True, ttl=5) == "p; hit; ttl=5"
    assert (
        h.format_cache_status("p", fwd="uri-miss", fwd_status=200, stored=True)
        == "p; fwd=uri-miss; fwd-status=200; stored"
    )
    assert h.format_cache_status("p", fwd="method", detail="no-store") == (
        'p; fwd=method; detail="no-store"'
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("bytes=0-4", (0, 5)),
        ("bytes=5-", (5, 10)),
        ("bytes=-3", (7, 10)),
        ("bytes=8-100", (8, 10)),
        ("bytes=10-", False),
        ("bytes=0-1, 3-4", None),
        ("items=0-1", None),
        ("garbage", None),
        (None, None),
    ],
)
def test_parse_byte_range(value: str | None, expected: object) -> None:
    assert h.parse_byte_range(value, 10) == expected


@pytest.mark.parametrize(
    ("prior", "trusted", "expected"),
    [
        (None, 0, "10.0.0.9"),
        ("1.1.1.1", 0, "10.0.0.9"),
        ("6.6.6.6, 1.1.1.1", 1, "1.1.1.1, 10.0.0.9"),
        ("6.6.6.6, 1.1.1.1, 2.2.2.2", 2, "1.1.1.1, 2.2.2.2, 10.0.0.9"),
        (None, 1, "10.0.0.9"),
    ],
)
def test_forwarded_for_keeps_only_trusted_entries(
    prior: str | None, trusted: int, expected: str
) -> None:
    assert h.forwarded_for(prior, "10.0.0.9", trusted) == expected
