"""What is stored and reused (RFC 9111 sections 3, 4 and 4.4), through real gunicorn.

Each test requests through the shared proxy under its own path prefix and checks both the
client's bytes and the number of requests the origin received.
"""

from __future__ import annotations

import time
from email.utils import formatdate

import pytest
from support.checks import assert_response
from support.origin import Origin, Recorded, Reply
from support.proxy import ProxyProcess

BODY = b"cached body \x00\xff bytes\n"


def test_miss_then_hit_serves_identical_bytes_from_one_origin_request(
    origin: Origin, proxy: ProxyProcess
) -> None:
    path = origin.route(
        "/fresh",
        headers=[("Cache-Control", "max-age=60"), ("Content-Type", "application/octet-stream")],
        body=BODY,
    )
    first = proxy.get(path)
    second = proxy.get(path)

    assert_response(first, cache="MISS", body=BODY)
    assert_response(second, cache="HIT", body=BODY)
    assert int(second.header("Age") or "-1") < 60
    assert "hit" in (second.header("Cache-Status") or "")
    assert second.header("Content-Type") == "application/octet-stream"
    assert second.header("Cache-Control") == "max-age=60"
    assert origin.count(path) == 1


@pytest.mark.parametrize(
    "cache_control",
    ["no-store", "max-age=60, no-store", "private", "private, max-age=60"],
)
def test_no_store_and_private_responses_are_never_reused(
    origin: Origin, proxy: ProxyProcess, cache_control: str
) -> None:
    path = origin.route("/mine", headers=[("Cache-Control", cache_control)], body=BODY)
    replies = [proxy.get(path), proxy.get(path)]

    for reply in replies:
        assert_response(reply, cache="MISS", body=BODY)
        assert reply.header("Cache-Control") == cache_control
    assert origin.count(path) == 2


def test_response_without_freshness_or_validator_is_not_reused(
    origin: Origin, proxy: ProxyProcess
) -> None:
    path = origin.route("/plain", headers=[("Content-Type", "text/plain")], body=BODY)
    replies = [proxy.get(path), proxy.get(path)]

    for reply in replies:
        assert_response(reply, cache="MISS", body=BODY)
    assert origin.count(path) == 2


@pytest.mark.parametrize(
    ("cache_control", "shared"),
    [
        ("max-age=60", False),
        ("public, max-age=60", True),
        ("s-maxage=60", True),
    ],
)
def test_response_to_authorization_is_shared_only_when_allowed(
    origin: Origin, proxy: ProxyProcess, cache_control: str, shared: bool
) -> None:
    path = origin.route("/auth", headers=[("Cache-Control", cache_control)], body=BODY)
    first = proxy.get(path, [("Authorization", "Bearer alice")])
    second = proxy.get(path, [("Authorization", "Bearer bob")])

    assert_response(first, cache="MISS", body=BODY)
    assert_response(second, cache="HIT" if shared else "MISS", body=BODY)
    assert origin.count(path) == (1 if shared else 2)
    assert origin.requests(path)[0].header("Authorization") == "Bearer alice"
    if not shared:
        assert origin.requests(path)[1].header("Authorization") == "Bearer bob"


@pytest.mark.parametrize(
    ("cache_control", "reused"),
    [
        ("max-age=0, s-maxage=60", True),
        ("s-maxage=60, max-age=0", True),
        ("max-age=60, s-maxage=0", False),
    ],
)
def test_s_maxage_wins_over_max_age(
    origin: Origin, proxy: ProxyProcess, cache_control: str, reused: bool
) -> None:
    path = origin.route("/shared", headers=[("Cache-Control", cache_control)], body=BODY)
    first = proxy.get(path)
    second = proxy.get(path)

    assert_response(first, cache="MISS", body=BODY)
    assert_response(second, cache="HIT" if reused else "MISS", body=BODY)
    assert origin.count(path) == (1 if reused else 2)


def _http_date(offset: float) -> str:
    return formatdate(time.time() + offset, usegmt=True)


@pytest.mark.parametrize(
    ("expires", "reused"),
    [
        (_http_date(3600), True),
        ("0", False),
        ("not a date", False),
        (_http_date(-3600), False),
    ],
    ids=["future", "zero", "garbage", "past"],
)
def test_expires_gives_freshness_only_when_valid_and_future(
    origin: Origin, proxy: ProxyProcess, expires: str, reused: bool
) -> None:
    path = origin.route(
        "/expires", headers=[("Date", _http_date(0)), ("Expires", expires)], body=BODY
    )
    first = proxy.get(path)
    second = proxy.get(path)

    assert_response(first, cache="MISS", body=BODY)
    assert_response(second, cache="HIT" if reused else "MISS", body=BODY)
    assert second.header("Expires") == expires
    assert origin.count(path) == (1 if reused else 2)


def test_head_after_get_is_answered_from_the_cache(origin: Origin, proxy: ProxyProcess) -> None:
    path = origin.route("/head", headers=[("Cache-Control", "max-age=60")], body=BODY)
    got = proxy.get(path)
    head = proxy.request("HEAD", path)

    assert_response(got, cache="MISS", body=BODY)
    assert_response(head, cache="HIT", body=b"")
    assert head.header("Content-Length") == str(len(BODY))
    assert head.header("Cache-Control") == "max-age=60"
    assert origin.count(path) == 1


def test_successful_post_invalidates_the_stored_get(origin: Origin, proxy: ProxyProcess) -> None:
    path = origin.route("/doc", headers=[("Cache-Control", "max-age=60")], body=BODY)
    origin.route("/doc", method="POST", status=201, body=b"created")
    before = [proxy.get(path), proxy.get(path)]
    posted = proxy.request("POST", path, body=b"new content")
    after = [proxy.get(path), proxy.get(path)]

    assert_response(before[0], cache="MISS", body=BODY)
    assert_response(before[1], cache="HIT", body=BODY)
    assert_response(posted, cache="MISS", status=201, body=b"created")
    assert_response(after[0], cache="MISS", body=BODY)
    assert_response(after[1], cache="HIT", body=BODY)
    assert origin.count(path, method="GET") == 2
    assert origin.count(path, method="POST") == 1
    assert [r.method for r in origin.requests(path)] == ["GET", "POST", "GET"]
    assert origin.requests(path)[1].body == b"new content"


def _by_language(record: Recorded) -> Reply:
    language = record.header("Accept-Language") or "none"
    return Reply(
        headers=[("Cache-Control", "max-age=60"), ("Vary", "Accept-Language")],
        body=f"body for {language}".encode(),
    )


def test_vary_stores_one_response_per_variant(origin: Origin, proxy: ProxyProcess) -> None:
    path = origin.respond("/vary", _by_language)
    english = [("Accept-Language", "en")]
    french = [("Accept-Language", "fr")]
    replies = [
        proxy.get(path, english),
        proxy.get(path, french),
        proxy.get(path, english),
        proxy.get(path, french),
    ]

    assert_response(replies[0], cache="MISS", body=b"body for en")
    assert_response(replies[1], cache="MISS", body=b"body for fr")
    assert_response(replies[2], cache="HIT", body=b"body for en")
    assert_response(replies[3], cache="HIT", body=b"body for fr")
    assert replies[2].header("Vary") == "Accept-Language"
    assert origin.count(path) == 2
    assert [r.header("Accept-Language") for r in origin.requests(path)] == ["en", "fr"]


def test_vary_star_is_never_reused(origin: Origin, proxy: ProxyProcess) -> None:
    path = origin.route(
        "/star", headers=[("Cache-Control", "max-age=60"), ("Vary", "*")], body=BODY
    )
    replies = [proxy.get(path), proxy.get(path)]

    for reply in replies:
        assert_response(reply, cache="MISS", body=BODY)
    assert origin.count(path) == 2
