"""Header parsing edges (RFC 9110, RFC 9111 section 5.2), table-driven."""

from __future__ import annotations

import pytest

from wsgi_proxy.core import headers as h

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


# ---- HTTP-date (RFC 9110 section 5.6.7), by the grammar's productions ----------------------

NOW = 1_700_000_000.0  # Tue, 14 Nov 2023 22:13:20 GMT: the reference for two-digit years
NOV_6_1994 = 784_111_777.0  # Sun, 06 Nov 1994 08:49:37 GMT, RFC 9110's example
IMF = "Sun, 06 Nov 1994 08:49:37 GMT"
DATE_CASES: list[tuple[str, str, float | None]] = [
    # HTTP-date = IMF-fixdate / obs-date; obs-date = rfc850-date / asctime-date
    ("IMF-fixdate", IMF, NOV_6_1994),
    ("rfc850-date", "Sunday, 06-Nov-94 08:49:37 GMT", NOV_6_1994),
    ("asctime-date, date3 = month SP SP DIGIT", "Sun Nov  6 08:49:37 1994", NOV_6_1994),
    ("asctime-date, date3 = month SP 2DIGIT", "Sun Nov 06 08:49:37 1994", NOV_6_1994),
    ("field OWS around the value", f" {IMF}\t", NOV_6_1994),
    ("the epoch", "Thu, 01 Jan 1970 00:00:00 GMT", 0.0),
    ("before the epoch", "Wed, 31 Dec 1969 23:59:59 GMT", -1.0),
    ("year = 4DIGIT: 9999", "Fri, 31 Dec 9999 23:59:59 GMT", 253_402_300_799.0),
    ("year = 4DIGIT: 0000", "Sat, 01 Jan 0000 00:00:00 GMT", -62_167_219_200.0),
    ("29 February of a leap year", "Thu, 29 Feb 2024 00:00:00 GMT", 1_709_164_800.0),
    ("second 60: the leap second", "Sat, 31 Dec 2016 23:59:60 GMT", 1_483_228_800.0),
    ("day-name not the date's: the grammar does not tie them", IMF.replace("Sun", "Mon"),
     NOV_6_1994),
    # rfc850's two-digit year: more than 50 years ahead means the previous century
    ("rfc850 year 50 is 2050", "Thursday, 18-Aug-50 02:01:18 GMT", 2_544_400_878.0),
    ("rfc850 year 80 is 1980", "Monday, 18-Aug-80 02:01:18 GMT", 335_412_078.0),
    ("rfc850 exactly 50 years ahead", "Tuesday, 14-Nov-73 22:13:20 GMT", 3_277_923_200.0),
    ("rfc850 a second more than 50 years ahead", "Wednesday, 14-Nov-73 22:13:21 GMT",
     122_163_201.0),
    ("rfc850 year 23 is this year", "Tuesday, 14-Nov-23 22:13:20 GMT", NOW),
    # case-sensitive literals (%s"...")
    ("day-name in lower case", IMF.replace("Sun", "sun"), None),
    ("day-name in upper case", IMF.replace("Sun", "SUN"), None),
    ("month in upper case", IMF.replace("Nov", "NOV"), None),
    ("GMT in lower case", IMF.replace("GMT", "gmt"), None),
    ("GMT in mixed case", IMF.replace("GMT", "gMT"), None),
    ("rfc850 day-name-l in lower case", "sunday, 06-Nov-94 08:49:37 GMT", None),
    # zones: GMT only, and none in asctime-date
    ("UTC", IMF.replace("GMT", "UTC"), None),
    ("+0000", IMF.replace("GMT", "+0000"), None),
    ("Z", IMF.replace(" GMT", "Z"), None),
    ("EST", IMF.replace("GMT", "EST"), None),
    ("no zone", IMF.removesuffix(" GMT"), None),
    ("asctime-date with GMT", "Sun Nov  6 08:49:37 1994 GMT", None),
    # digits: exactly as many as the grammar says, ASCII only
    ("one-digit day", "Sun, 6 Nov 1994 08:49:37 GMT", None),
    ("two-digit year in IMF-fixdate", "Sun, 06 Nov 94 08:49:37 GMT", None),
    ("five-digit year", "Sun, 06 Nov 19940 08:49:37 GMT", None),
    ("four-digit year in rfc850-date", "Sunday, 06-Nov-1994 08:49:37 GMT", None),
    ("one-digit hour", IMF.replace("08:", "8:"), None),
    ("one-digit second", IMF.replace(":37", ":7"), None),
    ("asctime one-digit day after one space", "Sun Nov 6 08:49:37 1994", None),
    ("non-ASCII digits", IMF.replace("06", "\u0660\u0666"), None),
    # separators and spacing
    ("no comma after day-name", IMF.replace(",", ""), None),
    ("comma in asctime-date", "Sun, Nov  6 08:49:37 1994", None),
    ("two spaces", IMF.replace(" Nov ", "  Nov "), None),
    ("a tab for a space", IMF.replace(" Nov", "\tNov"), None),
    ("dashes in IMF-fixdate", "Sun, 06-Nov-1994 08:49:37 GMT", None),
    ("spaces in rfc850-date", "Sunday, 06 Nov 94 08:49:37 GMT", None),
    ("periods for colons", IMF.replace(":", "."), None),
    ("short day-name in rfc850-date", "Sun, 06-Nov-94 08:49:37 GMT", None),
    ("long day-name in IMF-fixdate", IMF.replace("Sun", "Sunday"), None),
    ("a final newline", IMF + "\n", None),
    ("trailing text", IMF + " x", None),
    ("two field lines joined", f"{IMF}, {IMF}", None),
    # dates that do not exist
    ("hour 24", IMF.replace("08:49", "24:00"), None),
    ("minute 60", IMF.replace(":49:", ":60:"), None),
    ("second 61", IMF.replace(":37", ":61"), None),
    ("day 00", IMF.replace("06 Nov", "00 Nov"), None),
    ("day 32", IMF.replace("06 Nov", "32 Dec"), None),
    ("31 November", IMF.replace("06 Nov", "31 Nov"), None),
    ("29 February of a common year", "Wed, 29 Feb 2023 00:00:00 GMT", None),
    ("29 February 1900, not a leap year", "Thu, 29 Feb 1900 00:00:00 GMT", None),
    # other things seen in Expires
    ("0", "0", None),
    ("-1", "-1", None),
    ("empty", "", None),
    ("ISO 8601", "1994-11-06T08:49:37Z", None),
]  # fmt: skip


@pytest.mark.parametrize(("case", "value", "expected"), DATE_CASES)
def test_parse_http_date_follows_the_grammar(case: str, value: str, expected: float | None) -> None:
    assert h.parse_http_date(value, NOW) == expected, case


def test_parse_http_date_round_trips_format_http_date() -> None:
    for timestamp in (0, 1_700_000_000, 253_402_300_799):
        assert h.parse_http_date(h.format_http_date(timestamp), NOW) == timestamp
    assert h.parse_http_date(None, NOW) is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (IMF, NOV_6_1994),
        ("Sunday, 06-Nov-94 08:49:37 GMT", NOV_6_1994),
        (IMF.replace(",", ""), NOV_6_1994),  # not an HTTP-date, but plainly a date
        (IMF.replace("GMT", "+0000"), NOV_6_1994),
        ("Sun, 06 Nov 1994 09:49:37 +0100", NOV_6_1994),
        ("0", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_robust_date_takes_other_date_forms(
    value: str | None, expected: float | None
) -> None:
    """Date and Last-Modified: RFC 9110 section 5.6.7 encourages robust parsing."""
    assert h.parse_robust_date(value, NOW) == expected


# ---- targeted fields: RFC 9213 section 2.1 (Structured Field dictionaries) ----------------

TARGETED_CASES: list[tuple[str, str | None, dict[str, str | None] | None]] = [
    ("max-age", "max-age=60", {"max-age": "60"}),
    ("several directives", "max-age=60, stale-while-revalidate=30, must-revalidate",
     {"max-age": "60", "stale-while-revalidate": "30", "must-revalidate": None}),
    ("no value is Boolean true", "no-store", {"no-store": None}),
    ("?1 is Boolean true too", "no-store=?1", {"no-store": None}),
    ("no-cache with field names", 'no-cache="Set-Cookie, X-A"', {"no-cache": "Set-Cookie, X-A"}),
    ("private with one field name as a Token", "private=Set-Cookie", {"private": "Set-Cookie"}),
    ("an Integer past 2^31 is valid (delta-seconds caps it)", "max-age=99999999999",
     {"max-age": "99999999999"}),
    ("an extension directive is ignored", "foobar, max-age=3600", {"max-age": "3600"}),
    ("an extension directive of any type", 'foo=(1 2), bar=:AQID:, baz="x", max-age=1',
     {"max-age": "1"}),
    ("parameters are ignored", "max-age=60;a=1, no-store;b", {"max-age": "60", "no-store": None}),
    ("of duplicate keys the last counts", "max-age=1, max-age=2", {"max-age": "2"}),
    ("OWS around the commas", "max-age=1 ,\ts-maxage=2", {"max-age": "1", "s-maxage": "2"}),
    ("leading and trailing spaces", "  max-age=1  ", {"max-age": "1"}),
    ("lines joined by the caller", "max-age=1, no-store", {"max-age": "1", "no-store": None}),
    ("a directive this cache obeys nowhere is dropped", "none", {}),
    # ignored as a whole: empty, or not a dictionary (section 2.1)
    ("absent", None, None),
    ("empty", "", None),
    ("only spaces", "   ", None),
    ("not a key", "max-age=10000, &&&&&", None),
    ("upper-case key", "MaX-aGe=1", None),
    ("space before =", "max-age =100", None),
    ("space after =", "max-age= 100", None),
    ("trailing comma", "max-age=1,", None),
    ("an Integer of 16 digits", "max-age=9999999999999999", None),
    ("an unterminated String", 'no-cache="a', None),
    ("non-ASCII", 'no-cache="caf\u00e9"', None),
    ("a leading tab", "\tmax-age=1", None),
    # ignored as a whole: a known directive of the wrong type (section 2.1, "SHOULD NOT
    # consume values that violate these inferred constraints")
    ("max-age as a String", 'max-age="10000"', None),
    ("max-age as a Decimal", "max-age=1.5", None),
    ("max-age as a Token", "max-age=ten", None),
    ("max-age as a Boolean", "max-age=?1", None),
    ("max-age negative", "max-age=-1", None),
    ("s-maxage as a String", 's-maxage="5"', None),
    ("stale-while-revalidate as a Decimal", "stale-while-revalidate=1.0", None),
    ("no-store false", "no-store=?0", None),
    ("no-store with an Integer", "no-store=1", None),
    ("public with a String", 'public="x"', None),
    ("no-cache as an Integer", "no-cache=1", None),
    ("private as an inner list", "private=(a b)", None),
    ("one wrong directive spoils the valid ones", 'max-age=60, s-maxage="5"', None),
]  # fmt: skip


@pytest.mark.parametrize(("case", "value", "expected"), TARGETED_CASES)
def test_parse_targeted_cache_control(
    case: str, value: str | None, expected: dict[str, str | None] | None
) -> None:
    assert h.parse_targeted_cache_control(value) == expected, case


SURROGATE_CASES: list[tuple[str, str, dict[str, str | None]]] = [
    ("Cache-Control's syntax", 'Max-Age=60, no-cache="a"', {"max-age": "60", "no-cache": "a"}),
    ("a directive for this device", "max-age=7;me", {"max-age": "7"}),
    ("for another device: ignored", "max-age=7;other", {}),
    ("targeted beats untargeted", "max-age=9;me, max-age=1", {"max-age": "9"}),
    ("the device token is case-insensitive", "no-store;ME", {"no-store": None}),
]


@pytest.mark.parametrize(("case", "value", "expected"), SURROGATE_CASES)
def test_parse_surrogate_control(case: str, value: str, expected: dict[str, str | None]) -> None:
    assert h.parse_surrogate_control(value, "me") == expected, case


def test_field_lines_keep_each_line() -> None:
    fields = (("Expires", IMF), ("X", "1"), ("expires", "0"))
    assert h.field_lines(fields, "EXPIRES") == [IMF, "0"]
    assert h.field_lines(fields, "age") == []


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


@pytest.mark.parametrize(
    ("prior", "trusted", "expected"),
    [
        ("1.1.1.1, 2.2.2.2", 0, "10.0.0.9"),  # nobody trusted: the connecting address
        ("1.1.1.1, 2.2.2.2", 1, "2.2.2.2"),  # what the one trusted proxy appended
        ("1.1.1.1, 2.2.2.2", 2, "1.1.1.1"),
        ("1.1.1.1, 2.2.2.2", 5, "1.1.1.1"),  # fewer entries than trusted proxies
        ("", 1, "10.0.0.9"),
        (None, 1, "10.0.0.9"),
    ],
)
def test_client_address_is_the_first_entry_sent_on(
    prior: str | None, trusted: int, expected: str
) -> None:
    assert h.client_address(prior, "10.0.0.9", trusted) == expected
    assert h.forwarded_for(prior, "10.0.0.9", trusted).split(", ")[0] == expected
