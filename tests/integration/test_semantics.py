"""HTTP caching semantics end to end (RFC 9111, 5861, 9211, 9213): real gunicorn with two
workers in front of the recording origin. Each test asserts on what the client received
and on what the origin saw.

Responses are made stale without sleeping by sending an ``Age`` larger than their
``max-age``: the proxy stores them (they have a lifetime) but must treat them as stale.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from support.origin import Origin, Recorded, Reply
from support.proxy import ProxyFactory, ProxyProcess
from support.raw_origin import RawOrigin

from wsgi_proxy.core.headers import format_http_date

STALE = ("Age", "100")  # with max-age=60: stored, but stale on arrival


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def conditional_origin(origin: Origin, path: str, etag: str, body: bytes, **extra: str) -> str:
    """A route answering 304 to a matching If-None-Match, else 200 with ``body``; the first
    answer carries ``Age: 100`` so that it is stale when stored."""
    seen: list[int] = []

    def respond(record: Recorded) -> Reply:
        seen.append(1)
        fields = [("Cache-Control", "max-age=60"), ("ETag", etag), *extra.items()]
        if len(seen) == 1:
            fields.append(STALE)
        if record.header("If-None-Match") == etag:
            return Reply(304, headers=[*fields, ("X-Version", f"v{len(seen)}")])
        return Reply(200, headers=[*fields, ("X-Version", f"v{len(seen)}")], body=body)

    return origin.respond(path, respond)


# ---- validation (RFC 9111 section 4.3) ---------------------------------------------------


def test_stale_entry_is_revalidated_and_refreshed_by_a_304(
    proxy: ProxyProcess, origin: Origin
) -> None:
    path = conditional_origin(origin, "/reval", '"e1"', b"stored body")
    first = proxy.get(path)
    assert (first.status, first.x_cache, first.body) == (200, "MISS", b"stored body")
    second = proxy.get(path)
    assert second.status == 200, second.describe()
    assert second.x_cache == "HIT"
    assert second.body == b"stored body"
    assert second.header("X-Version") == "v2"  # the 304's fields replace the stored ones
    assert "fwd=stale; fwd-status=304" in (second.header("Cache-Status") or "")
    assert origin.last(path).header("If-None-Match") == '"e1"'
    third = proxy.get(path)
    assert (third.x_cache, third.body, third.header("X-Version")) == ("HIT", b"stored body", "v2")
    assert origin.count(path) == 2


def test_last_modified_validator_is_sent_as_if_modified_since(
    proxy: ProxyProcess, origin: Origin
) -> None:
    modified = format_http_date(time.time() - 3600)
    path = origin.route(
        "/lm",
        headers=[("Cache-Control", "max-age=60"), ("Last-Modified", modified), STALE],
        body=b"lm body",
    )
    proxy.get(path)
    proxy.get(path)
    assert origin.count(path) == 2
    assert origin.last(path).header("If-Modified-Since") == modified


def test_a_changed_resource_replaces_the_stored_one(proxy: ProxyProcess, origin: Origin) -> None:
    versions = iter([b"old", b"new"])

    def respond(_record: Recorded) -> Reply:
        body = next(versions)
        fields = [("Cache-Control", "max-age=60"), ("ETag", f'"{body.decode()}"')]
        return Reply(200, headers=[*fields, STALE] if body == b"old" else fields, body=body)

    path = origin.respond("/changed", respond)
    assert proxy.get(path).body == b"old"
    second = proxy.get(path)
    assert (second.body, second.x_cache) == (b"new", "MISS")
    third = proxy.get(path)
    assert (third.body, third.x_cache) == (b"new", "HIT")
    assert origin.count(path) == 2


def test_client_conditional_is_answered_from_a_fresh_entry(
    proxy: ProxyProcess, origin: Origin
) -> None:
    path = origin.route(
        "/inm", headers=[("Cache-Control", "max-age=60"), ("ETag", '"abc"')], body=b"x" * 100
    )
    proxy.get(path)
    reply = proxy.get(path, [("If-None-Match", '"abc"')])
    assert (reply.status, reply.body, reply.x_cache) == (304, b"", "HIT")
    assert reply.header("ETag") == '"abc"'
    other = proxy.get(path, [("If-None-Match", '"zzz"')])
    assert (other.status, other.body) == (200, b"x" * 100)
    assert origin.count(path) == 1


@pytest.mark.parametrize(
    "request_fields", [[("Cache-Control", "no-cache")], [("Pragma", "no-cache")]]
)
def test_request_no_cache_revalidates(
    proxy: ProxyProcess, origin: Origin, request_fields: list[tuple[str, str]]
) -> None:
    path = origin.route(
        "/nocache", headers=[("Cache-Control", "max-age=60"), ("ETag", '"n1"')], body=b"body"
    )
    proxy.get(path)
    reply = proxy.get(path, request_fields)
    assert reply.status == 200
    assert origin.count(path) == 2
    assert origin.last(path).header("If-None-Match") == '"n1"'


def test_response_no_cache_is_stored_but_always_revalidated(
    proxy: ProxyProcess, origin: Origin
) -> None:
    path = origin.route(
        "/resp-nocache", headers=[("Cache-Control", "no-cache"), ("ETag", '"r"')], body=b"b"
    )
    proxy.get(path)
    proxy.get(path)
    assert origin.count(path) == 2
    assert origin.last(path).header("If-None-Match") == '"r"'


# ---- request directives (RFC 9111 section 5.2.1) -----------------------------------------


def test_only_if_cached(proxy: ProxyProcess, origin: Origin) -> None:
    path = origin.route("/oic", headers=[("Cache-Control", "max-age=60")], body=b"cached")
    missing = proxy.get(path, [("Cache-Control", "only-if-cached")])
    assert missing.status == 504
    assert missing.header("Content-Type") == "text/plain; charset=utf-8"
    assert origin.count(path) == 0
    proxy.get(path)
    present = proxy.get(path, [("Cache-Control", "only-if-cached")])
    assert (present.status, present.body, present.x_cache) == (200, b"cached", "HIT")
    assert origin.count(path) == 1


def test_max_stale_and_must_revalidate(proxy: ProxyProcess, origin: Origin) -> None:
    loose = origin.route("/stale-ok", headers=[("Cache-Control", "max-age=60"), STALE], body=b"s")
    strict = origin.route(
        "/stale-no",
        headers=[("Cache-Control", "max-age=60, must-revalidate"), STALE],
        body=b"s",
    )
    for path in (loose, strict):
        proxy.get(path)
        proxy.get(path, [("Cache-Control", "max-stale=1000")])
    assert origin.count(loose) == 1  # the stale entry was acceptable to the client
    assert origin.count(strict) == 2  # must-revalidate forbids it


def test_request_max_age_zero_goes_to_the_origin(proxy: ProxyProcess, origin: Origin) -> None:
    path = origin.route("/maxage0", headers=[("Cache-Control", "max-age=60")], body=b"m")
    proxy.get(path)
    proxy.get(path, [("Cache-Control", "max-age=0")])
    assert origin.count(path) == 2


# ---- stale-while-revalidate and stale-if-error (RFC 5861) --------------------------------


def test_stale_while_revalidate_serves_at_once_and_refreshes_in_background(
    proxy: ProxyProcess, origin: Origin
) -> None:
    answers: list[int] = []

    def respond(_record: Recorded) -> Reply:
        answers.append(1)
        fields = [("Cache-Control", "max-age=60, stale-while-revalidate=600")]
        if len(answers) == 1:
            fields.append(STALE)
        return Reply(200, headers=fields, body=f"version {len(answers)}".encode())

    path = origin.respond("/swr", respond)
    assert proxy.get(path).body == b"version 1"
    stale = proxy.get(path)
    assert (stale.body, stale.x_cache) == (b"version 1", "HIT")
    assert 'detail="stale-while-revalidate"' in (stale.header("Cache-Status") or "")
    assert wait_for(lambda: origin.count(path) == 2), "no background refresh"
    assert wait_for(lambda: proxy.get(path).body == b"version 2")
    fresh = proxy.get(path)
    assert (fresh.body, fresh.x_cache) == (b"version 2", "HIT")
    assert origin.count(path) == 2


def test_stale_if_error_serves_stale_when_the_origin_answers_5xx(
    proxy: ProxyProcess, origin: Origin
) -> None:
    path = origin.route("/sie", headers=[("Cache-Control", "max-age=60"), STALE], body=b"good")
    proxy.get(path)
    origin.route("/sie", status=503, headers=[("Cache-Control", "no-store")], body=b"down")
    reply = proxy.get(path)
    assert (reply.status, reply.body, reply.x_cache) == (200, b"good", "HIT"), reply.describe()
    status = reply.header("Cache-Status") or ""
    assert "fwd-status=503" in status
    assert 'detail="stale-if-error"' in status
    assert origin.count(path) == 2


def test_must_revalidate_forbids_stale_on_error(proxy: ProxyProcess, origin: Origin) -> None:
    path = origin.route(
        "/sie-mr",
        headers=[("Cache-Control", "max-age=60, must-revalidate"), STALE],
        body=b"good",
    )
    proxy.get(path)
    origin.route("/sie-mr", status=503, headers=[("Cache-Control", "no-store")], body=b"down")
    reply = proxy.get(path)
    assert (reply.status, reply.body) == (503, b"down")


def test_stale_served_when_the_origin_breaks_the_connection(
    proxy_factory: ProxyFactory, raw_origin: RawOrigin
) -> None:
    body = b"kept body"
    raw_origin.route(
        "/down",
        b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nAge: 100\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body),
    )
    proxy = proxy_factory(origin=raw_origin.url)
    assert proxy.get("/down").body == body
    raw_origin.route("/down", b"")  # close at once, no response
    reply = proxy.get("/down")
    assert (reply.status, reply.body, reply.x_cache) == (200, body, "HIT"), reply.describe()
    assert raw_origin.count("/down") >= 2
    off = proxy_factory({"WSGI_PROXY_STALE_IF_ERROR": "0"}, origin=raw_origin.url)
    assert off.get("/down").status == 502


# ---- targeted fields (RFC 9213) and Cache-Status (RFC 9211) ------------------------------


def test_cdn_cache_control_wins_and_is_passed_on(proxy: ProxyProcess, origin: Origin) -> None:
    path = origin.route(
        "/cdn",
        headers=[("Cache-Control", "no-store"), ("CDN-Cache-Control", "max-age=60")],
        body=b"cdn",
    )
    first = proxy.get(path)
    second = proxy.get(path)
    assert (first.x_cache, second.x_cache) == ("MISS", "HIT")
    assert second.header("CDN-Cache-Control") == "max-age=60"  # for the caches downstream
    assert second.header("Cache-Control") == "no-store"  # meant for the browser
    assert origin.count(path) == 1


def test_surrogate_control_no_store_beats_cache_control(
    proxy: ProxyProcess, origin: Origin
) -> None:
    path = origin.route(
        "/sc",
        headers=[("Cache-Control", "max-age=60"), ("Surrogate-Control", "no-store")],
        body=b"sc",
    )
    proxy.get(path)
    proxy.get(path)
    assert origin.count(path) == 2
    capability = origin.last(path).header("Surrogate-Capability")
    assert capability == 'wsgi_proxy="Surrogate/1.0"'


def test_cache_status_explains_each_outcome(proxy: ProxyProcess, origin: Origin) -> None:
    stored = origin.route("/cs", headers=[("Cache-Control", "max-age=60")], body=b"c")
    private = origin.route("/cs-private", headers=[("Cache-Control", "private")], body=b"p")
    miss = proxy.get(stored).header("Cache-Status") or ""
    hit = proxy.get(stored).header("Cache-Status") or ""
    passed = proxy.get(private).header("Cache-Status") or ""
    assert miss.startswith("wsgi_proxy; fwd=uri-miss; fwd-status=200; stored; ttl=")
    assert hit.startswith("wsgi_proxy; hit; ttl=")
    assert passed == 'wsgi_proxy; fwd=uri-miss; fwd-status=200; detail="private"'


# ---- what is stored ----------------------------------------------------------------------


def test_set_cookie_is_not_shared(proxy: ProxyProcess, origin: Origin) -> None:
    path = origin.route(
        "/cookie", headers=[("Cache-Control", "max-age=60"), ("Set-Cookie", "s=1")], body=b"c"
    )
    assert proxy.get(path).header("Set-Cookie") == "s=1"
    assert proxy.get(path).header("Set-Cookie") == "s=1"
    assert origin.count(path) == 2


def test_set_cookie_named_by_no_cache_is_stored_without_the_cookie(
    proxy: ProxyProcess, origin: Origin
) -> None:
    path = origin.route(
        "/cookie-ok",
        headers=[("Cache-Control", 'max-age=60, no-cache="Set-Cookie"'), ("Set-Cookie", "s=1")],
        body=b"c",
    )
    first = proxy.get(path)
    second = proxy.get(path)
    assert first.header("Set-Cookie") == "s=1"
    assert (second.x_cache, second.header("Set-Cookie")) == ("HIT", None)
    assert origin.count(path) == 1


def test_heuristic_freshness_from_last_modified(proxy: ProxyProcess, origin: Origin) -> None:
    path = origin.route(
        "/heuristic",
        headers=[("Last-Modified", format_http_date(time.time() - 86400 * 30))],
        body=b"h",
    )
    proxy.get(path)
    assert proxy.get(path).x_cache == "HIT"
    assert origin.count(path) == 1


def test_unsafe_method_invalidates_same_origin_location_only(
    proxy: ProxyProcess, origin: Origin
) -> None:
    target = origin.route("/item", headers=[("Cache-Control", "max-age=60")], body=b"i")
    other = origin.route("/other", headers=[("Cache-Control", "max-age=60")], body=b"o")
    poster = origin.route(
        "/form",
        method="POST",
        status=201,
        headers=[("Location", f"{origin.url}{target}"), ("Content-Location", other + "x")],
    )
    proxy.get(target)
    proxy.get(other)
    proxy.request("POST", poster, body=b"data")
    assert proxy.get(target).x_cache == "MISS"  # named by Location: invalidated
    assert proxy.get(other).x_cache == "HIT"  # not named
    failed = origin.route("/fails", method="DELETE", status=500)
    proxy.request("DELETE", failed)
    assert proxy.get(other).x_cache == "HIT"


# ---- ranges ------------------------------------------------------------------------------


def test_ranges_are_answered_from_a_complete_entry(proxy: ProxyProcess, origin: Origin) -> None:
    body = bytes(range(256)) * 4
    path = origin.route(
        "/range", headers=[("Cache-Control", "max-age=60"), ("ETag", '"r1"')], body=body
    )
    proxy.get(path)
    part = proxy.get(path, [("Range", "bytes=10-19")])
    assert (part.status, part.body) == (206, body[10:20])
    assert part.header("Content-Range") == f"bytes 10-19/{len(body)}"
    suffix = proxy.get(path, [("Range", "bytes=-5")])
    assert (suffix.status, suffix.body) == (206, body[-5:])
    outside = proxy.get(path, [("Range", f"bytes={len(body)}-")])
    assert outside.status == 416
    assert outside.header("Content-Range") == f"bytes */{len(body)}"
    stale_validator = proxy.get(path, [("Range", "bytes=0-1"), ("If-Range", '"old"')])
    assert (stale_validator.status, stale_validator.body) == (200, body)
    matching = proxy.get(path, [("Range", "bytes=0-1"), ("If-Range", '"r1"')])
    assert (matching.status, matching.body) == (206, body[:2])
    assert origin.count(path) == 1
