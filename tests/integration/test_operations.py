"""Operations end to end: the admin interface (health, readiness, metrics, purge), the CLI's
purge and check-config, and the access logs; real gunicorn with two workers."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from support.checks import poll
from support.origin import Origin, Recorded, Reply
from support.proxy import ProxyFactory, ProxyProcess, proxy_env

from wsgi_proxy.store import purge as purging

BANNED = (purging.BANNED + "\n").encode()
TOKEN = "t0ken"
AUTH = [("Authorization", f"Bearer {TOKEN}")]
CACHED = [("Cache-Control", "max-age=600")]


def admin_proxy(factory: ProxyFactory, **env: str) -> ProxyProcess:
    return factory({"WSGI_PROXY_ADMIN_TOKEN": TOKEN, **env})


def metric(text: str, name: str, labels: str = "") -> float:
    pattern = re.escape(name + (f"{{{labels}}}" if labels else "")) + r" ([0-9.e+]+)"
    match = re.search(r"^" + pattern + "$", text, re.MULTILINE)
    assert match, f"{name}{{{labels}}} not in metrics:\n{text}"
    return float(match.group(1))


def test_admin_is_closed_by_default_but_health_is_open(proxy: ProxyProcess, origin: Origin) -> None:
    assert (proxy.get("/_wsgi_proxy/health").status, proxy.get("/_wsgi_proxy/health").body) == (
        200,
        b"ok\n",
    )
    assert proxy.get("/_wsgi_proxy/ready").status == 200
    assert proxy.get("/_wsgi_proxy/metrics").status == 403
    assert proxy.request("POST", "/_wsgi_proxy/purge?all=1").status == 403
    path = origin.route("/closed", headers=CACHED, body=b"kept")
    proxy.get(path)
    assert proxy.request("PURGE", path).status == 403
    assert proxy.get(path).x_cache == "HIT"  # nothing was purged
    assert origin.count(path) == 1
    assert origin.requests(path)[0].method == "GET"  # the PURGE never reached the origin


PLAIN = [("Content-Type", "text/plain; charset=utf-8"), ("Cache-Control", "no-store")]

# (method, target) -> (status, Allow) with the token; every one is 403 without it.
ADMIN_ANSWERS = [
    ("GET", "/_wsgi_proxy/nope", 404, None),
    ("GET", "/_wsgi_proxy", 404, None),
    ("GET", "/_wsgi_proxy//metrics", 404, None),
    ("GET", "/_wsgi_proxy/metrics/", 404, None),
    ("POST", "/_wsgi_proxy/metrics", 405, "GET, HEAD"),
    ("PURGE", "/_wsgi_proxy/cluster", 405, "GET, HEAD"),
    ("DELETE", "/_wsgi_proxy/tags?tag=t", 405, "GET, HEAD"),
    ("GET", "/_wsgi_proxy/purge?all=1", 405, "POST, PURGE"),
    ("HEAD", "/_wsgi_proxy/purge?all=1", 405, "POST, PURGE"),
]


def test_admin_answers_404_and_405_in_plain_text_and_403_first(
    proxy_factory: ProxyFactory, origin: Origin
) -> None:
    """A path that is no endpoint's is a 404; a method the endpoint does not take, a 405
    naming those it takes; both as short plain text. Without the token, a 403 for all of
    them, so the interface shows nothing of itself. Nothing is purged on the way."""
    proxy = admin_proxy(proxy_factory)
    path = origin.route("/kept", headers=CACHED, body=b"kept")
    assert proxy.get(path).x_cache == "MISS"
    for method, target, status, allow in ADMIN_ANSWERS:
        refused = proxy.request(method, target)
        assert refused.status == 403, (method, target, refused.describe())
        reply = proxy.request(method, target, AUTH)
        assert (reply.status, reply.header("Allow")) == (status, allow), reply.describe()
        assert [(k, reply.header(k)) for k, _ in PLAIN] == PLAIN, reply.describe()
        if method != "HEAD":
            assert reply.body.startswith(f"{status} {reply.reason}: ".encode()), reply.body
            assert reply.body.endswith(b"\n") and reply.body.count(b"\n") == 1
    assert proxy.get(path).x_cache == "HIT"
    head = proxy.request("HEAD", "/_wsgi_proxy/metrics", AUTH)  # HEAD where GET is taken
    assert (head.status, head.body) == (200, b"")
    assert (head.header("Content-Type") or "").startswith("text/plain; version=")
    assert proxy.request("POST", "/_wsgi_proxy/health").status == 200  # open, every method
    assert origin.count(path) == 1


def test_metrics_are_summed_over_workers(proxy_factory: ProxyFactory, origin: Origin) -> None:
    proxy = admin_proxy(proxy_factory)
    path = origin.route("/m", headers=CACHED, body=b"0123456789")
    for _ in range(20):  # new connections: both workers answer some of them
        assert proxy.get(path).status == 200
    text = proxy.get("/_wsgi_proxy/metrics", AUTH).body.decode()
    assert metric(text, "wsgi_proxy_requests_total", 'cache="miss"') == 1
    assert metric(text, "wsgi_proxy_requests_total", 'cache="hit"') == 19
    assert metric(text, "wsgi_proxy_origin_requests_total", 'status="200"') == 1
    assert metric(text, "wsgi_proxy_body_bytes_total", 'source="cache"') == 190
    assert metric(text, "wsgi_proxy_origin_seconds_count") == 1
    assert metric(text, "wsgi_proxy_cache_limit_bytes") == 1024**3
    assert len(proxy.worker_pids()) == 2


@pytest.mark.tuned("gunicorn", "the elastic thread pool, whose counts these gauges are")
def test_metrics_show_the_thread_pools_of_live_workers(
    proxy_factory: ProxyFactory, origin: Origin
) -> None:
    """Requests held by the origin show in the pools' gauges, summed over the workers; a
    worker killed with its requests stops counting, and when the rest are answered
    nothing waits or queues."""
    count = 8
    answer = threading.Event()

    def held(_record: Recorded) -> Reply:
        assert answer.wait(30)
        return Reply(body=b"slow")

    paths = [origin.respond(f"/pool-{i}", held) for i in range(count)]
    proxy = admin_proxy(proxy_factory, WSGI_PROXY_ACTIVE_THREADS="1")

    def gauges(*names: str) -> tuple[float, ...]:
        text = proxy.get("/_wsgi_proxy/metrics", AUTH).body.decode()
        return tuple(metric(text, f"wsgi_proxy_pool_{name}") for name in names)

    workers = proxy.worker_pids()
    with ThreadPoolExecutor(max_workers=count) as clients:
        futures = [clients.submit(proxy.get, path, timeout=30) for path in paths]

        def cut() -> int:  # requests of a killed worker: their clients saw the reset
            return sum(1 for f in futures if f.done() and f.exception() is not None)

        # Waiting requests leave room: nothing queues behind them (one poll, as the
        # scrapes themselves may queue for a moment).
        assert poll(lambda: gauges("waiting", "queue_length") == (count, 0), 10.0, 0.05)
        assert gauges("threads")[0] >= count  # one each, at least
        for pid in workers:  # until the requests of one worker were cut
            os.kill(pid, signal.SIGKILL)
            if poll(lambda: cut() > 0, 2.0, 0.05):
                break
        assert poll(lambda: gauges("waiting") == (count - cut(),), 10.0, 0.05)
        answer.set()
        answered = [f.result(30) for f in futures if f.exception() is None]
    assert 0 < cut() <= count
    assert [r.body for r in answered] == [b"slow"] * (count - cut())
    assert poll(lambda: gauges("waiting", "queue_length") == (0, 0), 5.0, 0.05)


def test_allowed_address_needs_no_token(proxy_factory: ProxyFactory) -> None:
    proxy = proxy_factory({"WSGI_PROXY_ADMIN_ALLOW": "127.0.0.0/8"})
    assert proxy.get("/_wsgi_proxy/metrics").status == 200
    other = proxy_factory({"WSGI_PROXY_ADMIN_ALLOW": "10.0.0.0/8"})
    assert other.get("/_wsgi_proxy/metrics").status == 403


def test_purge_by_url_prefix_tag_and_all(proxy_factory: ProxyFactory, origin: Origin) -> None:
    proxy = admin_proxy(proxy_factory)
    tagged = [("Cache-Control", "max-age=600"), ("Surrogate-Key", "red shared")]
    paths = {
        "a": origin.route("/p/a", headers=tagged, body=b"a"),
        "b": origin.route("/p/b", headers=[*CACHED, ("Surrogate-Key", "blue shared")], body=b"b"),
        "c": origin.route("/q/c", headers=CACHED, body=b"c"),
    }

    def fill() -> None:
        for path in paths.values():
            proxy.get(path)

    def states() -> dict[str, str | None]:
        return {name: proxy.get(path).x_cache for name, path in paths.items()}

    fill()
    assert proxy.get(paths["a"]).header("Surrogate-Key") is None  # not for clients
    # By tag and prefix: bans, answered at once, with no count (docs/operations.md).
    purged = proxy.request("POST", "/_wsgi_proxy/purge?tag=red", AUTH)
    assert (purged.status, purged.body) == (200, BANNED)
    assert states() == {"a": "MISS", "b": "HIT", "c": "HIT"}
    prefix = origin.prefix + "/p/"
    assert proxy.request("POST", f"/_wsgi_proxy/purge?prefix={prefix}", AUTH).body == BANNED
    assert states() == {"a": "MISS", "b": "MISS", "c": "HIT"}
    assert proxy.request("PURGE", paths["c"], AUTH).body == b"purged 1\n"
    assert states() == {"a": "HIT", "b": "HIT", "c": "MISS"}
    assert proxy.request("POST", "/_wsgi_proxy/purge?all=1", AUTH).status == 200
    assert states() == {"a": "MISS", "b": "MISS", "c": "MISS"}
    assert proxy.request("POST", "/_wsgi_proxy/purge", AUTH).status == 400
    text = proxy.get("/_wsgi_proxy/metrics", AUTH).body.decode()
    assert metric(text, "wsgi_proxy_purges_total", 'kind="tag"') == 1


def test_soft_purge_revalidates_and_keeps_serving(
    proxy_factory: ProxyFactory, origin: Origin
) -> None:
    proxy = admin_proxy(proxy_factory)

    def respond(record: Recorded) -> Reply:
        fields = [*CACHED, ("ETag", '"s1"')]
        if record.header("If-None-Match") == '"s1"':
            return Reply(304, headers=fields)
        return Reply(200, headers=fields, body=b"soft body")

    path = origin.respond("/soft", respond)
    proxy.get(path)
    answer = proxy.request("POST", f"/_wsgi_proxy/purge?url={path}&soft=1", AUTH)
    assert answer.body == b"purged 1\n"
    reply = proxy.get(path)
    assert (reply.x_cache, reply.body) == ("HIT", b"soft body")
    assert origin.last(path).header("If-None-Match") == '"s1"'
    assert proxy.get(path).x_cache == "HIT"
    assert origin.count(path) == 2


def test_cli_purge_and_stats_while_serving(proxy_factory: ProxyFactory, origin: Origin) -> None:
    proxy = proxy_factory()
    path = origin.route("/cli", headers=CACHED, body=b"cli")
    proxy.get(path)
    env = proxy_env(origin.url, proxy.cache_dir)
    run = [sys.executable, "-m", "wsgi_proxy"]
    stats = subprocess.run([*run, "stats"], env=env, capture_output=True, text=True, timeout=30)
    assert "files=1" in stats.stdout, stats.stdout + stats.stderr
    done = subprocess.run(
        [*run, "purge", path], env=env, capture_output=True, text=True, timeout=30, check=True
    )
    assert done.stdout == "purged 1\n"
    assert proxy.get(path).x_cache == "MISS"
    assert origin.count(path) == 2


def test_check_config_prints_settings_or_names_the_bad_one(origin: Origin, tmp_path: Path) -> None:
    run = [sys.executable, "-m", "wsgi_proxy", "check-config"]
    env = proxy_env(origin.url, tmp_path / "cache")
    good = subprocess.run(run, env=env, capture_output=True, text=True, timeout=30)
    assert good.returncode == 0, good.stderr
    assert f"WSGI_PROXY_ORIGIN={origin.url}" in good.stdout
    assert "WSGI_PROXY_ADMIN_TOKEN=(none)" in good.stdout
    bad = subprocess.run(
        run, env={**env, "WSGI_PROXY_READ_TIMEOUT": "soon"}, capture_output=True, text=True
    )
    assert bad.returncode == 1
    assert "WSGI_PROXY_READ_TIMEOUT" in bad.stderr


def test_access_log_carries_cache_status_and_origin_time(
    proxy_factory: ProxyFactory, origin: Origin, tmp_path: Path
) -> None:
    text_proxy = proxy_factory(cache_dir=tmp_path / "text")
    json_proxy = proxy_factory({"WSGI_PROXY_LOG_FORMAT": "json"}, cache_dir=tmp_path / "json")
    path = origin.route("/log", headers=CACHED, body=b"log")
    for proxy in (text_proxy, json_proxy):
        proxy.get(path)
        proxy.get(path)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        lines = json_proxy.stdout_path.read_text().splitlines()
        if len([line for line in lines if path in line]) >= 2:
            break
        time.sleep(0.05)
    # Each worker writes its line once its answer is sent: the two workers' lines (and so
    # the MISS and the HIT) may come in either order.
    records = {r["cache"]: r for r in (json.loads(line) for line in lines if path in line)}
    assert sorted(records) == ["HIT", "MISS"]
    assert records["MISS"]["path"] == records["HIT"]["path"] == path
    assert float(records["MISS"]["origin_ms"]) >= 0
    assert records["HIT"]["origin_ms"] is None
    text = [line for line in text_proxy.stdout_path.read_text().splitlines() if path in line]
    assert len(text) == 2
    assert any("cache=MISS origin_ms=" in line and "origin_ms=-" not in line for line in text)
    assert any("cache=HIT origin_ms=- " in line for line in text)
