"""RFC 9111 decisions, as tables of (request, stored response, now) -> outcome."""

from __future__ import annotations

from dataclasses import replace

import pytest

from wsgi_proxy.core import policy, reuse
from wsgi_proxy.core.headers import Headers, format_http_date
from wsgi_proxy.core.model import Entry, RequestHead, ResponseHead

T0 = 1_700_000_000.0
DATE = ("Date", format_http_date(T0))


def req(*fields: tuple[str, str], method: str = "GET") -> RequestHead:
    return RequestHead(method, "/x", tuple(fields))


def resp(*fields: tuple[str, str], status: int = 200) -> ResponseHead:
    return ResponseHead(status, "OK", (DATE, *fields))


def entry(*fields: tuple[str, str], status: int = 200, stored_at: float = T0) -> Entry:
    return Entry("GET http://o/x", resp(*fields, status=status), stored_at, stored_at, (), 0)


# ---- section 3: storing ------------------------------------------------------------------

STORE_CASES: list[tuple[str, RequestHead, ResponseHead, str | None]] = [
    ("3: max-age", req(), resp(("Cache-Control", "max-age=60")), None),
    ("3: s-maxage", req(), resp(("Cache-Control", "s-maxage=60")), None),
    ("3: Expires", req(), resp(("Expires", format_http_date(T0 + 60))), None),
    ("3: public alone", req(), resp(("Cache-Control", "public"), ("ETag", '"a"')), None),
    ("4.2.2: heuristic 200 + Last-Modified", req(),
     resp(("Last-Modified", format_http_date(T0 - 1000))), None),
    ("3: nothing to go on", req(), resp(status=302), "no freshness information"),
    ("4.2.2: heuristic status, no validator", req(), resp(), "stale and no validator"),
    ("5.2.2.5: no-store", req(), resp(("Cache-Control", "no-store, max-age=60")), "no-store"),
    ("5.2.2.5: NO-STORE is case-insensitive", req(),
     resp(("Cache-Control", "NO-STORE, max-age=60")), "no-store"),
    ("5.2.1.5: request no-store", req(("Cache-Control", "no-store")),
     resp(("Cache-Control", "max-age=60")), "request no-store"),
    ("5.2.2.7: private", req(), resp(("Cache-Control", "private, max-age=60")), "private"),
    ("5.2.2.7: private with fields is storable", req(),
     resp(("Cache-Control", 'private="x-user", max-age=60')), None),
    ("3.5: Authorization, max-age only", req(("Authorization", "Basic x")),
     resp(("Cache-Control", "max-age=60")), "authorization"),
    ("3.5: Authorization with public", req(("Authorization", "Basic x")),
     resp(("Cache-Control", "public, max-age=60")), None),
    ("3.5: Authorization with s-maxage", req(("Authorization", "Basic x")),
     resp(("Cache-Control", "s-maxage=60")), None),
    ("3.5: Authorization with must-revalidate", req(("Authorization", "Basic x")),
     resp(("Cache-Control", "must-revalidate, max-age=60")), None),
    ("ours: Set-Cookie is not shared", req(),
     resp(("Cache-Control", "max-age=60"), ("Set-Cookie", "s=1")), "set-cookie"),
    ("ours: Set-Cookie named by no-cache is stripped", req(),
     resp(("Cache-Control", 'max-age=60, no-cache="Set-Cookie"'), ("Set-Cookie", "s=1")), None),
    ("4.1: Vary *", req(), resp(("Cache-Control", "max-age=60"), ("Vary", "*")), "vary *"),
    ("3: partial content", req(), resp(("Cache-Control", "max-age=60"), status=206),
     "status 206"),
    ("3: 304 is never stored", req(), resp(("Cache-Control", "max-age=60"), status=304),
     "status 304"),
    ("3: POST responses are not stored", req(method="POST"),
     resp(("Cache-Control", "max-age=60")), "method"),
    ("5.2.2.3: must-understand overrides no-store for known status", req(),
     resp(("Cache-Control", "must-understand, no-store, max-age=60")), None),
    ("5.2.2.3: must-understand with unknown status", req(),
     resp(("Cache-Control", "must-understand, max-age=60"), status=299), "must-understand"),
    ("4.2.1: max-age=0 with ETag is stored for revalidation", req(),
     resp(("Cache-Control", "max-age=0"), ("ETag", '"a"')), None),
    ("4.2.1: max-age=0 without validator", req(), resp(("Cache-Control", "max-age=0")),
     "stale and no validator"),
    ("4.2.1: invalid Expires means stale", req(), resp(("Expires", "0")),
     "stale and no validator"),
    ("3: explicit freshness on 500", req(), resp(("Cache-Control", "max-age=60"), status=500),
     None),
]  # fmt: skip


@pytest.mark.parametrize(("case", "request_", "response", "expected"), STORE_CASES)
def test_decide_store(
    case: str, request_: RequestHead, response: ResponseHead, expected: str | None
) -> None:
    decision = policy.decide_store(request_, response, T0)
    if expected is None:
        assert isinstance(decision, policy.Store), case
    else:
        assert decision == policy.NotStorable(expected), case


def test_stored_headers_strip_named_fields_but_keep_age() -> None:
    response = resp(
        ("Cache-Control", 'private="X-User", max-age=60'), ("X-User", "bob"), ("Age", "5")
    )
    decision = policy.decide_store(req(), response, T0)
    assert isinstance(decision, policy.Store)
    stored = policy.stored_headers(response, decision)
    names = [k.lower() for k, _ in stored.headers]
    assert "x-user" not in names
    assert "age" in names  # section 4.2.3 needs it
    assert "cache-control" in names


# ---- section 4.2: freshness -------------------------------------------------------------

LIFETIME_CASES: list[tuple[str, Headers, float]] = [
    ("s-maxage before max-age", (("Cache-Control", "max-age=10, s-maxage=100"),), 100),
    ("max-age before Expires", (("Cache-Control", "max-age=10"),
                                ("Expires", format_http_date(T0 + 500))), 10),
    ("Expires minus Date", (("Expires", format_http_date(T0 + 500)),), 500),
    ("Expires in the past", (("Expires", format_http_date(T0 - 500)),), 0),
    ("invalid Expires", (("Expires", "never"),), 0),
    # section 5.3 with RFC 9110 section 5.6.7: only an HTTP-date is valid, else expired
    ("Expires as an rfc850-date", (("Expires", "Tuesday, 14-Nov-23 22:21:40 GMT"),), 500),
    ("Expires as an asctime-date", (("Expires", "Tue Nov 14 22:21:40 2023"),), 500),
    ("Expires without the comma: expired",
     (("Expires", format_http_date(T0 + 500).replace(",", "")),), 0),
    ("Expires in UTC: expired", (("Expires", format_http_date(T0 + 500).replace("GMT", "UTC")),),
     0),
    ("Expires in lower case: expired", (("Expires", format_http_date(T0 + 500).lower()),), 0),
    ("Expires empty: expired", (("Expires", ""),), 0),
    # section 4.2.1: of two Expires lines, the first
    ("two Expires lines: the first", (("Expires", format_http_date(T0 + 500)),
                                      ("Expires", format_http_date(T0 + 900))), 500),
    ("two Expires lines, the first invalid", (("Expires", "0"),
                                              ("Expires", format_http_date(T0 + 900))), 0),
    ("two Expires lines, the second invalid", (("Expires", format_http_date(T0 + 500)),
                                               ("Expires", "0")), 500),

    ("first duplicate max-age wins", (("Cache-Control", "max-age=10, max-age=100"),), 10),
    ("negative max-age is invalid: stale", (("Cache-Control", "max-age=-5"),), 0),
    ("quoted max-age", (("Cache-Control", 'max-age="20"'),), 20),
    ("invalid max-age: stale", (("Cache-Control", "max-age=ten"),), 0),
    ("heuristic: 10% of Date - Last-Modified",
     (("Last-Modified", format_http_date(T0 - 1000)),), 100),
    ("heuristic capped at a day", (("Last-Modified", format_http_date(T0 - 10**8)),), 86400),
    ("no information", (), 0),
]  # fmt: skip


@pytest.mark.parametrize(("case", "fields", "expected"), LIFETIME_CASES)
def test_freshness_lifetime(case: str, fields: Headers, expected: float) -> None:
    assert policy.freshness_lifetime(resp(*fields), T0) == pytest.approx(expected), case


@pytest.mark.parametrize(
    ("date", "expected"),
    [
        (format_http_date(T0 - 100), 600),
        (format_http_date(T0 - 100).replace(",", ""), 600),  # not an HTTP-date, but a date
        ("soon", 500),  # invalid: the time the response was received
    ],
)
def test_date_is_read_robustly(date: str, expected: float) -> None:
    """RFC 9110 section 5.6.7: robust parsing, as Date's definition does not restrict it;
    Expires, whose definition does, is read strictly (LIFETIME_CASES)."""
    head = ResponseHead(200, "OK", (("Date", date), ("Expires", format_http_date(T0 + 500))))
    assert policy.freshness_lifetime(head, T0) == pytest.approx(expected)


AGE_CASES: list[tuple[str, Headers, float, float, float, float]] = [
    # (case, fields, request_time, response_time, now, expected age)
    ("resident time only", (), T0, T0, T0 + 30, 30),
    ("Age field counts", (("Age", "100"),), T0, T0, T0 + 30, 130),
    ("response delay corrects Age", (("Age", "100"),), T0 - 5, T0, T0, 105),
    ("apparent age from Date", (), T0 + 50, T0 + 50, T0 + 50, 50),
    # section 5.1: of a list the first member counts; an invalid value is ignored
    ("Age list: the first member", (("Age", "0, 7200"),), T0, T0, T0, 0),
    ("Age list, first member old", (("Age", "7200,0"),), T0, T0, T0, 7200),
    ("Age list of equal members", (("Age", "0, 0"),), T0, T0, T0, 0),
    ("two Age lines: the first", (("Age", "0"), ("Age", "7200")), T0, T0, T0, 0),
    ("two Age lines, first old", (("Age", "7200"), ("Age", "0")), T0, T0, T0, 7200),
    ("empty members do not count", (("Age", ", 30"),), T0, T0, T0, 30),
    ("OWS around the value", (("Age", " 30 "),), T0, T0, T0, 30),
    ("non-numeric Age: ignored", (("Age", "abc"),), T0, T0, T0, 0),
    ("negative Age: ignored", (("Age", "-10"),), T0, T0, T0, 0),
    ("float Age: ignored", (("Age", "10.0"),), T0, T0, T0, 0),
    ("Age with a parameter: ignored", (("Age", "5;a=1"),), T0, T0, T0, 0),
    ("first member invalid: ignored", (("Age", "abc, 7200"),), T0, T0, T0, 0),
    ("empty Age: ignored", (("Age", ""),), T0, T0, T0, 0),
    ("non-ASCII digits: ignored", (("Age", "\u0663"),), T0, T0, T0, 0),
    ("ignored Age still adds the response delay", (("Age", "abc"),), T0 - 5, T0, T0, 5),
    # section 1.2.2: delta-seconds of 2^31 or more count as 2^31
    ("Age 2^31 - 1", (("Age", "2147483647"),), T0, T0, T0, 2**31 - 1),
    ("Age 2^31", (("Age", "2147483648"),), T0, T0, T0, 2**31),
    ("Age past 2^31", (("Age", "99999999999"),), T0, T0, T0, 2**31),
]


@pytest.mark.parametrize(("case", "fields", "sent", "received", "now", "expected"), AGE_CASES)
def test_current_age(
    case: str, fields: Headers, sent: float, received: float, now: float, expected: float
) -> None:
    stored = Entry("k", resp(*fields), sent, received, (), 0)
    assert policy.current_age(stored, now) == pytest.approx(expected), case


# ---- section 4: reuse --------------------------------------------------------------------

ETAG = ("ETag", '"v1"')
LOOKUP_CASES: list[tuple[str, RequestHead, Entry | None, float, type]] = [
    ("nothing stored", req(), None, T0, reuse.Forward),
    ("only-if-cached, nothing stored", req(("Cache-Control", "only-if-cached")), None, T0,
     reuse.Unavailable),
    ("fresh", req(), entry(("Cache-Control", "max-age=60")), T0 + 10, reuse.Fresh),
    ("stale without validator", req(), entry(("Cache-Control", "max-age=60")), T0 + 100,
     reuse.Forward),
    ("stale with validator", req(), entry(("Cache-Control", "max-age=60"), ETAG), T0 + 100,
     reuse.Revalidate),
    ("5.2.1.4: request no-cache", req(("Cache-Control", "no-cache")),
     entry(("Cache-Control", "max-age=60"), ETAG), T0 + 1, reuse.Revalidate),
    ("5.4: Pragma no-cache", req(("Pragma", "no-cache")),
     entry(("Cache-Control", "max-age=60")), T0 + 1, reuse.Forward),
    ("5.4: Pragma ignored beside Cache-Control", req(("Pragma", "no-cache"),
     ("Cache-Control", "max-stale")), entry(("Cache-Control", "max-age=60")), T0 + 1,
     reuse.Fresh),
    ("5.2.2.4: response no-cache", req(), entry(("Cache-Control", "no-cache, max-age=60"), ETAG),
     T0 + 1, reuse.Revalidate),
    ("5.2.1.1: request max-age exceeded", req(("Cache-Control", "max-age=5")),
     entry(("Cache-Control", "max-age=60")), T0 + 10, reuse.Forward),
    ("5.2.1.3: min-fresh not met", req(("Cache-Control", "min-fresh=55")),
     entry(("Cache-Control", "max-age=60")), T0 + 10, reuse.Forward),
    ("5.2.1.2: max-stale allows", req(("Cache-Control", "max-stale=100")),
     entry(("Cache-Control", "max-age=60")), T0 + 100, reuse.Fresh),
    ("5.2.1.2: max-stale too small", req(("Cache-Control", "max-stale=10")),
     entry(("Cache-Control", "max-age=60")), T0 + 100, reuse.Forward),
    ("5.2.2.2: must-revalidate forbids max-stale", req(("Cache-Control", "max-stale")),
     entry(("Cache-Control", "max-age=60, must-revalidate")), T0 + 100, reuse.Forward),
    ("5.2.2.10: s-maxage forbids max-stale", req(("Cache-Control", "max-stale")),
     entry(("Cache-Control", "s-maxage=60")), T0 + 100, reuse.Forward),
    ("5.2.1.7: only-if-cached and stale", req(("Cache-Control", "only-if-cached")),
     entry(("Cache-Control", "max-age=60")), T0 + 100, reuse.Unavailable),
]  # fmt: skip


@pytest.mark.parametrize(("case", "request_", "stored", "now", "expected"), LOOKUP_CASES)
def test_decide_lookup(
    case: str, request_: RequestHead, stored: Entry | None, now: float, expected: type
) -> None:
    assert type(reuse.decide_lookup(request_, stored, now)) is expected, case


def test_revalidation_uses_stored_validators() -> None:
    lm = ("Last-Modified", format_http_date(T0 - 100))
    decision = reuse.decide_lookup(req(), entry(("Cache-Control", "max-age=1"), ETAG, lm), T0 + 5)
    assert decision == reuse.Revalidate(
        (("If-None-Match", '"v1"'), ("If-Modified-Since", lm[1])), "stale"
    )


# ---- RFC 9213 targeted fields ------------------------------------------------------------

TARGETING = policy.Targeting(("CDN-Cache-Control", "Surrogate-Control"), "me")
TARGETED_CASES: list[tuple[str, Headers, float]] = [
    ("CDN-Cache-Control wins over Cache-Control",
     (("Cache-Control", "max-age=1"), ("CDN-Cache-Control", "max-age=100")), 100),
    ("first field in the list wins",
     (("Surrogate-Control", "max-age=5"), ("CDN-Cache-Control", "max-age=100")), 100),
    ("targeted field silences Expires",
     (("Surrogate-Control", "max-age=0"), ("Expires", format_http_date(T0 + 500))), 0),
    ("directive for me", (("Surrogate-Control", "max-age=7;me"),), 7),
    ("directive for another device is ignored",
     (("Cache-Control", "max-age=3"), ("Surrogate-Control", "max-age=7;other")), 0),
    ("targeted beats untargeted", (("Surrogate-Control", "max-age=1, max-age=9;me"),), 9),
    ("empty targeted field falls back", (("CDN-Cache-Control", " "),
                                         ("Cache-Control", "max-age=4")), 4),
    # RFC 9213 section 2.1: an invalid field is ignored as a whole; the next valid field
    # of the target list applies, else Cache-Control and Expires
    ("not a dictionary: Cache-Control", (("CDN-Cache-Control", "max-age=100, &&&&&"),
                                         ("Cache-Control", "max-age=4")), 4),
    ("not a dictionary: Expires again", (("CDN-Cache-Control", "max-age=100, &&&&&"),
                                         ("Expires", format_http_date(T0 + 50))), 50),
    ("wrong type: Cache-Control", (("CDN-Cache-Control", 'max-age="100"'),
                                   ("Cache-Control", "max-age=4")), 4),
    ("invalid: the next field of the list", (("CDN-Cache-Control", "max-age =100"),
                                             ("Surrogate-Control", "max-age=6"),
                                             ("Cache-Control", "max-age=4")), 6),
    ("upper-case key: Cache-Control", (("CDN-Cache-Control", "MaX-aGe=100"),
                                       ("Cache-Control", "max-age=4")), 4),
    ("an extension directive: valid", (("CDN-Cache-Control", "foobar, max-age=100"),
                                       ("Cache-Control", "max-age=4")), 100),
    ("an Integer beyond 2^31 counts as 2^31", (("CDN-Cache-Control", "max-age=99999999999"),),
     2**31),
    ("a parameter is ignored, no device targeting", (("CDN-Cache-Control", "max-age=100;other"),
                                                     ("Cache-Control", "max-age=4")), 100),
    ("the last of duplicate keys", (("CDN-Cache-Control", "max-age=1, max-age=100"),), 100),
    ("two lines are one dictionary", (("CDN-Cache-Control", "no-cache"),
                                      ("CDN-Cache-Control", "max-age=100")), 100),
    ("valid without a directive for freshness: Cache-Control silenced",
     (("CDN-Cache-Control", "none"), ("Cache-Control", "max-age=4")), 0),
]  # fmt: skip


@pytest.mark.parametrize(("case", "fields", "expected"), TARGETED_CASES)
def test_targeted_fields_lifetime(case: str, fields: Headers, expected: float) -> None:
    assert policy.freshness_lifetime(resp(*fields), T0, TARGETING) == pytest.approx(expected), case


def test_targeted_no_store_beats_fresh_cache_control() -> None:
    response = resp(("Cache-Control", "max-age=100"), ("Surrogate-Control", "no-store"))
    assert policy.decide_store(req(), response, T0, TARGETING) == policy.NotStorable("no-store")


def test_targeted_max_age_beats_cache_control_no_store() -> None:
    response = resp(("Cache-Control", "no-store"), ("Surrogate-Control", "max-age=100;me"))
    assert isinstance(policy.decide_store(req(), response, T0, TARGETING), policy.Store)


def test_an_invalid_targeted_no_store_is_ignored() -> None:
    response = resp(("Cache-Control", "max-age=100"), ("CDN-Cache-Control", "no-store, &&"))
    assert isinstance(policy.decide_store(req(), response, T0, TARGETING), policy.Store)
    valid = resp(("Cache-Control", "max-age=100"), ("CDN-Cache-Control", "no-store"))
    assert policy.decide_store(req(), valid, T0, TARGETING) == policy.NotStorable("no-store")


def test_rfc_9213_fields_are_passed_on_and_surrogate_control_is_not() -> None:
    """RFC 9213 section 3: CDN-Cache-Control goes on for the caches downstream; a surrogate
    removes the Surrogate-Control aimed at it (Edge Architecture 1.0)."""
    assert TARGETING.removed_fields == ("surrogate-control",)
    assert policy.Targeting(("Akamai-Cache-Control", "CDN-Cache-Control")).removed_fields == ()
    assert policy.Targeting(("SURROGATE-CONTROL",)).removed_fields == ("surrogate-control",)


# ---- plain requests: decide_lookup as a function of time (the ready answers, ready.py) ----

PLAIN_ENTRIES: list[tuple[str, Entry, bool]] = [
    ("max-age", entry(("Cache-Control", "max-age=60")), True),
    ("s-maxage beats max-age", entry(("Cache-Control", "s-maxage=5, max-age=60")), True),
    ("Expires", entry(("Expires", format_http_date(T0 + 30))), True),
    ("heuristic", entry(("Last-Modified", format_http_date(T0 - 1000))), True),
    ("stored with an Age", entry(("Cache-Control", "max-age=60"), ("Age", "50")), True),
    ("an invalid Age, ignored", entry(("Cache-Control", "max-age=60"), ("Age", "-3")), True),
    ("an Age of 2^31", entry(("Cache-Control", "max-age=60"), ("Age", "2147483648")), True),
    ("received late (apparent age)",
     Entry("GET http://o/x", resp(("Cache-Control", "max-age=60")), T0 + 20, T0 + 25, (), 0),
     True),
    ("stale-while-revalidate", entry(("Cache-Control", "max-age=10, stale-while-revalidate=60"),
                                     ETAG), True),
    ("must-revalidate", entry(("Cache-Control", "max-age=10, must-revalidate"), ETAG), True),
    ("no freshness at all", entry(ETAG), True),
    ("targeted field", entry(("Cache-Control", "max-age=5"), ("CDN-Cache-Control", "max-age=40")),
     True),
    ("response no-cache", entry(("Cache-Control", "no-cache, max-age=60"), ETAG), False),
    ("no-cache with fields is not no-cache",
     entry(("Cache-Control", 'no-cache="Set-Cookie", max-age=60')), True),
    ("soft-purged", replace(entry(("Cache-Control", "max-age=60"), ETAG), soft_purged=True),
     False),
    ("varies", replace(entry(("Cache-Control", "max-age=60"), ("Vary", "Accept")),
                       vary=(("accept", "a"),)), False),
]  # fmt: skip
NEVER_FRESH = {"an Age of 2^31", "no freshness at all"}  # cases fresh at no time of the table
PLAIN_REQUESTS = [
    req(),
    req(("Accept", "*/*"), ("User-Agent", "wrk"), ("Authorization", "Basic x")),
    req(("Accept", "*/*"), method="HEAD"),
]
PLAIN_TIMES = [T0 - 100, T0, T0 + 4.5, T0 + 9.99, T0 + 10, T0 + 29, T0 + 31, T0 + 59.9, T0 + 60,
               T0 + 61, T0 + 100, T0 + 5000]  # fmt: skip


@pytest.mark.parametrize(("case", "stored", "depends_on_time_alone"), PLAIN_ENTRIES)
def test_plain_freshness_is_decide_lookup_for_plain_requests(
    case: str, stored: Entry, depends_on_time_alone: bool
) -> None:
    """Wherever plain_freshness answers, a request without the reuse fields is Fresh exactly
    while its lifetime exceeds its age, with the age and ttl decide_lookup gives."""
    plain = reuse.plain_freshness(stored, TARGETING)
    assert (plain is not None) == depends_on_time_alone, case
    if plain is None:
        return
    outcomes = set()
    for request_ in PLAIN_REQUESTS:
        assert not {k.lower() for k, _ in request_.headers} & set(reuse.REUSE_REQUEST_FIELDS)
        for now in PLAIN_TIMES:
            decision = reuse.decide_lookup(request_, stored, now, TARGETING)
            age = plain.initial_age + max(0.0, now - stored.response_time)
            ttl = plain.lifetime - age
            outcomes.add(ttl > 0)
            if ttl > 0:
                assert decision == reuse.Fresh(age, ttl), (case, now)
            else:
                assert not isinstance(decision, reuse.Fresh), (case, now)
    assert outcomes == ({True, False} if case not in NEVER_FRESH else {False}), case
