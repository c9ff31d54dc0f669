"""How the proxy reads the fields whose parsing decides caching, end to end: ``Age`` (RFC 9111
section 5.1), ``Expires`` (RFC 9111 section 5.3, RFC 9110 section 5.6.7),
``If-Modified-Since`` (RFC 9110 section 13.1.3) and the targeted fields (RFC 9213). Real
gunicorn with two workers in front of the recording origin; each test asserts on what the
client received and on how often the origin was asked.

A response is "reused" when the second request is a HIT and the origin saw one request; it
is "not reused" when the origin saw both (the proxy found it stale, or did not store it).
"""

from __future__ import annotations

import time

import pytest
from support.origin import Origin
from support.proxy import ProxyProcess

from wsgi_proxy.core.headers import format_http_date


def reused(proxy: ProxyProcess, origin: Origin, path: str) -> bool:
    """Ask twice; whether the second answer came from the cache without asking the origin."""
    first = proxy.get(path)
    second = proxy.get(path)
    assert (first.status, second.status) == (200, 200), second.describe()
    count = origin.count(path)
    assert count in (1, 2), count
    assert (second.x_cache == "HIT") == (count == 1), second.describe()
    return count == 1


# ---- Age (RFC 9111 section 5.1) -----------------------------------------------------------

AGE_CASES = [
    # (case, Age field lines, reused with max-age=3600)
    ("a list uses its first member", ["0, 7200"], True),
    ("a list whose first member is old", ["7200, 0"], False),
    ("two lines use the first", ["0", "7200"], True),
    ("two lines, the first old", ["7200", "0"], False),
    ("non-numeric: the field is ignored", ["abc"], True),
    ("negative: ignored", ["-7200"], True),
    ("with a parameter: ignored", ["7200;foo=bar"], True),
    ("2^31 or more: the largest age, stale", ["2147483648"], False),
]


@pytest.mark.parametrize(("case", "lines", "expected"), AGE_CASES)
def test_age_uses_its_first_member_and_an_invalid_age_is_ignored(
    proxy: ProxyProcess, origin: Origin, case: str, lines: list[str], expected: bool
) -> None:
    fields = [("Cache-Control", "max-age=3600"), *(("Age", line) for line in lines)]
    path = origin.route("/age", headers=fields, body=b"aged")
    assert reused(proxy, origin, path) is expected, case


# ---- Expires (RFC 9111 section 5.3, RFC 9110 section 5.6.7) -------------------------------


def _expires_cases() -> list[tuple[str, list[str], bool]]:
    later = time.time() + 3600
    imf = format_http_date(later)  # "Thu, 18 Aug 2050 02:01:18 GMT"
    day, rest = imf.split(", ", 1)
    return [
        ("IMF-fixdate", [imf], True),
        ("asctime-date", [time.strftime("%a %b %e %H:%M:%S %Y", time.gmtime(later))], True),
        ("no comma after the day name", [f"{day} {rest}"], False),
        ("a zone other than GMT", [imf.replace("GMT", "UTC")], False),
        ("upper-case month", [imf.replace(rest[3:6], rest[3:6].upper())], False),
        ("two lines, the first valid", [imf, "0"], True),
        ("two lines, the first invalid", ["0", imf], False),
    ]


@pytest.mark.parametrize(("case", "lines", "expected"), _expires_cases())
def test_expires_follows_the_http_date_grammar(
    proxy: ProxyProcess, origin: Origin, case: str, lines: list[str], expected: bool
) -> None:
    path = origin.route("/expires", headers=[("Expires", line) for line in lines], body=b"e")
    assert reused(proxy, origin, path) is expected, (case, lines)


def test_an_invalid_if_modified_since_is_ignored(proxy: ProxyProcess, origin: Origin) -> None:
    modified = format_http_date(time.time() - 86400)
    path = origin.route(
        "/ims",
        headers=[("Cache-Control", "max-age=600"), ("Last-Modified", modified)],
        body=b"ims",
    )
    proxy.get(path)
    later = format_http_date(time.time())
    valid = proxy.get(path, [("If-Modified-Since", later)])
    assert (valid.status, valid.body, valid.x_cache) == (304, b"", "HIT"), valid.describe()
    for invalid in (later.replace(",", ""), later.replace("GMT", "+0000")):
        reply = proxy.get(path, [("If-Modified-Since", invalid)])
        assert (reply.status, reply.body, reply.x_cache) == (200, b"ims", "HIT"), invalid
    assert origin.count(path) == 1


# ---- targeted fields (RFC 9213 section 2) -------------------------------------------------

TARGETED_CASES = [
    # (case, CDN-Cache-Control, Cache-Control, reused)
    ("valid: it wins over Cache-Control", "max-age=600", "no-store", True),
    ("an extension directive is ignored", "foobar, max-age=600", "no-store", True),
    ("not a dictionary: Cache-Control applies", "max-age=600, &&&&&", "no-store", False),
    ("not a dictionary, the other way", "no-store, &&&&&", "max-age=600", True),
    ("a String max-age: wrong type", 'max-age="600"', "no-store", False),
    ("a Decimal max-age: wrong type", "max-age=600.0", "no-store", False),
    ("space before =: invalid", "max-age =600", "no-store", False),
    ("upper-case key: invalid", "Max-Age=600", "no-store", False),
    ("a parameter is ignored", "max-age=600;a=1", "no-store", True),
]


@pytest.mark.parametrize(("case", "targeted", "cache_control", "expected"), TARGETED_CASES)
def test_an_invalid_cdn_cache_control_is_ignored_as_a_whole(
    proxy: ProxyProcess,
    origin: Origin,
    case: str,
    targeted: str,
    cache_control: str,
    expected: bool,
) -> None:
    fields = [("Cache-Control", cache_control), ("CDN-Cache-Control", targeted)]
    path = origin.route("/cdn", headers=fields, body=b"cdn")
    assert reused(proxy, origin, path) is expected, case


def test_cdn_cache_control_reaches_the_client_and_surrogate_control_does_not(
    proxy: ProxyProcess, origin: Origin
) -> None:
    """RFC 9213 section 3: a CDN passes CDN-Cache-Control on for the caches after it;
    Surrogate-Control (Edge Architecture 1.0) and the purge tags are this cache's alone."""
    path = origin.route(
        "/passed",
        headers=[
            ("Cache-Control", "no-store"),
            ("CDN-Cache-Control", "max-age=600"),
            ("Surrogate-Control", "max-age=600"),
            ("Surrogate-Key", "tag-a"),
        ],
        body=b"passed",
    )
    first = proxy.get(path)
    second = proxy.get(path)
    assert (first.x_cache, second.x_cache) == ("MISS", "HIT")
    for reply in (first, second):
        assert reply.header_values("CDN-Cache-Control") == ["max-age=600"], reply.describe()
        assert reply.header("Surrogate-Control") is None, reply.describe()
        assert reply.header("Surrogate-Key") is None, reply.describe()
        assert reply.header("Cache-Control") == "no-store"
    assert origin.count(path) == 1
