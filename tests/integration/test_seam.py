"""The seam (wsgi_proxy/tuning/) as start-up shows it, and switched off with
``WSGI_PROXY_TUNING=off``: gunicorn's own gthread worker and urllib3's ``urlopen`` serve a
miss, a hit, a pass-through and an interim response as documented (README, "What a client
sees"), and start-up says so in one warning; real gunicorn with two workers."""

from __future__ import annotations

import re

import pytest
from support.checks import assert_response, poll
from support.origin import Origin
from support.proxy import ProxyFactory, ProxyProcess
from support.raw_origin import RawOrigin
from support.sockets import exchange

from wsgi_proxy import tuning

PLAIN = "wsgi_proxy.server.plain_worker.PlainWorker"
TUNED = "wsgi_proxy.server.worker.ProxyWorker"
OFF = {"WSGI_PROXY_TUNING": "off"}
CACHED = [("Cache-Control", "max-age=600")]
HINTS = b"HTTP/1.1 103 Early Hints\r\nLink: </app.css>; rel=preload; as=style\r\n\r\n"
FINAL = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n"
    b"Cache-Control: max-age=600\r\n\r\nfinal"
)


def _started(proxy: ProxyProcess) -> tuple[str, list[str]]:
    """The worker class gunicorn says it uses, and the start-up warnings' texts."""
    assert poll(lambda: "Using worker: " in proxy.stderr(200), 10), proxy.stderr()
    text = proxy.stderr(200)
    found = re.search(r"Using worker: (\S+)", text)
    assert found is not None, text
    warnings = re.findall(r"\[WARNING\] (.*)", text)
    return found.group(1), warnings


def test_start_up_names_the_worker_and_each_library_whose_tunings_are_off(
    proxy_factory: ProxyFactory,
) -> None:
    """With the default setting: the tuned worker where gunicorn's tunings are on (the
    pinned gunicorn), else gunicorn's own; one warning per library not verified (none on
    the pinned set, gunicorn's and urllib3's on the oldest)."""
    worker, warnings = _started(proxy_factory())
    assert worker == (TUNED if tuning.is_tuned("gunicorn") else PLAIN)
    assert warnings == tuning.report()


def test_with_the_tunings_off_a_miss_a_hit_and_a_pass_through_are_served(
    proxy_factory: ProxyFactory, origin: Origin
) -> None:
    proxy = proxy_factory(OFF)
    worker, warnings = _started(proxy)
    assert worker == PLAIN
    assert warnings == ["WSGI_PROXY_TUNING=off: the libraries' own behaviour throughout"]
    cached = origin.route("/cached", headers=CACHED, body=b"cached body")
    passed = origin.route("/passed", headers=[("Cache-Control", "no-store")], body=b"passed")

    assert_response(proxy.get(cached), cache="MISS", body=b"cached body")
    hit = proxy.get(cached)
    assert_response(hit, cache="HIT", body=b"cached body")
    assert hit.header("Age") is not None, hit.describe()
    for _ in range(2):
        assert_response(proxy.get(passed), cache="MISS", body=b"passed")

    assert (origin.count(cached), origin.count(passed)) == (1, 2)
    assert origin.last(passed).header("Via") == "1.1 wsgi_proxy"


@pytest.mark.gunicorn("25.0", "wsgi.early_hints, through which the proxy sends a 103")
def test_with_the_tunings_off_an_early_hint_is_passed_on_and_never_stored(
    raw_origin: RawOrigin, proxy_factory: ProxyFactory
) -> None:
    raw_origin.route("/hinted", HINTS + FINAL)
    proxy = proxy_factory({**OFF, "WSGI_PROXY_EARLY_HINTS": "on"}, origin=raw_origin.url)
    request = b"GET /hinted HTTP/1.1\r\nHost: site.example\r\nConnection: close\r\n\r\n"

    first = exchange(proxy.port, request)
    again = exchange(proxy.port, request)

    hint, _, final = first.partition(b"\r\n\r\n")
    assert hint.startswith(b"HTTP/1.1 103 "), first
    assert b"\r\nLink: </app.css>; rel=preload; as=style" in hint, first
    assert final.startswith(b"HTTP/1.1 200 OK\r\n"), first
    assert b"X-Cache: MISS" in final and final.endswith(b"\r\n\r\nfinal"), first
    assert again.startswith(b"HTTP/1.1 200 OK\r\n"), again  # stored: the final response only
    assert b"X-Cache: HIT" in again and b"Link:" not in again, again
    assert raw_origin.count("/hinted") == 1
