"""Validation and invalidation (validation.py), as tables: RFC 9111 sections 3.2, 4.3 and
4.4, RFC 9110 section 13.1.5."""

from __future__ import annotations

import pytest

from wsgi_proxy.core import validation
from wsgi_proxy.core.headers import Headers, format_http_date
from wsgi_proxy.core.model import RequestHead, ResponseHead

T0 = 1_700_000_000.0
DATE = ("Date", format_http_date(T0))
ETAG = ("ETag", '"v1"')


def req(*fields: tuple[str, str], method: str = "GET") -> RequestHead:
    return RequestHead(method, "/x", tuple(fields))


def resp(*fields: tuple[str, str], status: int = 200) -> ResponseHead:
    return ResponseHead(status, "OK", (DATE, *fields))


def test_validators_come_from_etag_and_last_modified() -> None:
    lm = ("Last-Modified", format_http_date(T0 - 100))
    assert validation.validators(resp(ETAG, lm)) == (
        ("If-None-Match", '"v1"'),
        ("If-Modified-Since", lm[1]),
    )
    assert validation.validators(resp(lm)) == (("If-Modified-Since", lm[1]),)
    assert validation.validators(resp()) == ()


def test_updated_head_replaces_fields_but_not_content_length() -> None:
    stored = resp(("Cache-Control", "max-age=1"), ("Content-Length", "10"), ("X-A", "old"))
    fresh = ResponseHead(
        304, "Not Modified", (("Cache-Control", "max-age=99"), ("Content-Length", "0"))
    )
    updated = validation.updated_head(stored, fresh)
    assert updated.status == 200
    assert updated.get("cache-control") == "max-age=99"
    assert updated.get("content-length") == "10"
    assert updated.get("x-a") == "old"


def test_updated_head_takes_age_from_the_new_response_only() -> None:
    stored = resp(("Cache-Control", "max-age=60"), ("Age", "100"))
    without_age = ResponseHead(304, "Not Modified", (("ETag", '"a"'),))
    assert validation.updated_head(stored, without_age).get("age") is None
    with_age = ResponseHead(304, "Not Modified", (("Age", "30"),))
    assert validation.updated_head(stored, with_age).get("age") == "30"


NOT_MODIFIED_CASES: list[tuple[str, RequestHead, bool]] = [
    ("matching etag", req(("If-None-Match", '"v1"')), True),
    ("weak comparison", req(("If-None-Match", 'W/"v1"')), True),
    ("one of a list", req(("If-None-Match", '"x", "v1"')), True),
    ("star", req(("If-None-Match", "*")), True),
    ("other etag", req(("If-None-Match", '"v2"')), False),
    ("If-Modified-Since after Last-Modified", req(("If-Modified-Since", format_http_date(T0))),
     True),
    ("If-Modified-Since before Last-Modified",
     req(("If-Modified-Since", format_http_date(T0 - 500))), False),
    ("If-None-Match wins over If-Modified-Since", req(("If-None-Match", '"v2"'),
     ("If-Modified-Since", format_http_date(T0))), False),
    # RFC 9110 section 13.1.3: an If-Modified-Since that is not one valid HTTP-date is
    # ignored (each of these is a date later than Last-Modified to a lenient parser)
    ("If-Modified-Since without the comma: ignored",
     req(("If-Modified-Since", format_http_date(T0).replace(",", ""))), False),
    ("If-Modified-Since in +0000: ignored",
     req(("If-Modified-Since", format_http_date(T0).replace("GMT", "+0000"))), False),
    ("If-Modified-Since in lower case: ignored",
     req(("If-Modified-Since", format_http_date(T0).lower())), False),
    ("two If-Modified-Since lines: ignored", req(("If-Modified-Since", format_http_date(T0)),
     ("If-Modified-Since", format_http_date(T0))), False),
    ("If-Modified-Since as an rfc850-date", req(("If-Modified-Since",
     "Tuesday, 14-Nov-23 22:13:20 GMT")), True),
    ("no conditional", req(), False),
]  # fmt: skip


@pytest.mark.parametrize(("case", "request_", "expected"), NOT_MODIFIED_CASES)
def test_is_not_modified(case: str, request_: RequestHead, expected: bool) -> None:
    stored = resp(ETAG, ("Last-Modified", format_http_date(T0 - 100)))
    assert validation.is_not_modified(request_, stored, T0) is expected, case


INVALIDATION_CASES: list[tuple[str, str, int, Headers, list[str]]] = [
    ("POST success", "POST", 200, (), ["/x"]),
    ("POST error does not invalidate", "POST", 500, (), []),
    ("GET never invalidates", "GET", 200, (), []),
    ("same-origin Location", "PUT", 201, (("Location", "http://o/y"),), ["/x", "/y"]),
    ("the site's Location", "PUT", 201, (("Location", "https://s/y?q"),), ["/x", "/y?q"]),
    ("another site's Location", "PUT", 201, (("Location", "https://s2/y"),), ["/x"]),
    ("relative Content-Location", "DELETE", 204, (("Content-Location", "/z"),), ["/x", "/z"]),
    ("foreign Location ignored", "POST", 303, (("Location", "http://evil/y"),), ["/x"]),
    ("scheme-relative Location ignored", "PATCH", 200, (("Location", "//evil/y"),), ["/x"]),
]


@pytest.mark.parametrize(("case", "method", "status", "fields", "expected"), INVALIDATION_CASES)
def test_invalidated_targets(
    case: str, method: str, status: int, fields: Headers, expected: list[str]
) -> None:
    response = ResponseHead(status, "", fields)
    same_origin = ("http://o", "https://s")
    targets = validation.invalidated_targets(req(method=method), response, same_origin)
    assert targets == expected, case


LM = format_http_date(T0 - 100)
IF_RANGE_CASES: list[tuple[str, Headers, bool]] = [
    ("no If-Range", (), True),
    ("strong etag match", (("If-Range", '"v1"'),), True),
    ("other etag", (("If-Range", '"v2"'),), False),
    ("weak etag never matches", (("If-Range", 'W/"v1"'),), False),
    ("date equal to Last-Modified", (("If-Range", LM),), True),
    ("other date", (("If-Range", format_http_date(T0)),), False),
    (
        "Last-Modified's date, but not an HTTP-date",
        (("If-Range", LM.replace("GMT", "UTC")),),
        False,
    ),
]


@pytest.mark.parametrize(("case", "fields", "expected"), IF_RANGE_CASES)
def test_is_range_applicable(case: str, fields: Headers, expected: bool) -> None:
    stored = resp(ETAG, ("Last-Modified", LM))
    assert validation.is_range_applicable(req(*fields), stored, T0) is expected, case
