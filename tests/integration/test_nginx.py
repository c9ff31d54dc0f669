"""The deployment of deploy/: nginx from Debian's packages in front of gunicorn with the
repository's gunicorn.conf.py, on loopback ports. The nginx site is deploy/nginx's file with
only its two addresses replaced. nginx must be installed (tests/run.sh installs it): a
missing nginx fails these tests rather than skipping them."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.origin import Origin
from support.proxy import REPO, ProxyFactory, ProxyProcess, free_port
from support.services import Nginx

SITE = REPO / "deploy" / "nginx" / "wsgi-proxy.conf"


@pytest.fixture
def stack(proxy_factory: ProxyFactory, tmp_path: Path) -> Iterator[tuple[Nginx, ProxyProcess]]:
    proxy = proxy_factory({"WSGI_PROXY_TRUSTED_PROXIES": "1", "WSGI_PROXY_ADMIN_TOKEN": "tk"})
    port = free_port()
    site = SITE.read_text()
    assert "server 127.0.0.1:8080;" in site and "listen 80;" in site
    site = site.replace("server 127.0.0.1:8080;", f"server 127.0.0.1:{proxy.port};")
    site = site.replace("listen 80;", f"listen 127.0.0.1:{port};")
    nginx = Nginx.start(site, port, tmp_path / "nginx")
    try:
        yield nginx, proxy
    finally:
        nginx.stop()


def test_hit_and_miss_through_nginx_with_the_client_address(
    stack: tuple[Nginx, ProxyProcess], origin: Origin
) -> None:
    nginx, _proxy = stack
    path = origin.route("/n", headers=[("Cache-Control", "max-age=60")], body=b"via nginx")
    first = nginx.get(path, [("X-Forwarded-For", "6.6.6.6"), ("Host", "shop.example")])
    second = nginx.get(path)
    assert (first.x_cache, second.x_cache) == ("MISS", "HIT")
    assert first.body == second.body == b"via nginx"
    seen = origin.last(path)
    # nginx appends the client (127.0.0.1) to the spoofed list; one trusted proxy means
    # only nginx's entry is kept, then nginx's own address as gunicorn saw it.
    assert seen.header("X-Forwarded-For") == "127.0.0.1, 127.0.0.1"
    assert seen.header("X-Forwarded-Host") == "shop.example"
    assert seen.header("X-Forwarded-Proto") == "http"
    assert seen.header("Host") == origin.host
    assert origin.count(path) == 1


def test_admin_is_not_reachable_through_nginx_but_health_is(
    stack: tuple[Nginx, ProxyProcess],
) -> None:
    nginx, proxy = stack
    assert nginx.get("/_wsgi_proxy/health").status == 200
    assert nginx.get("/_wsgi_proxy/ready").status == 200
    blocked = nginx.get("/_wsgi_proxy/metrics", [("Authorization", "Bearer tk")])
    assert blocked.status == 404
    direct = proxy.get("/_wsgi_proxy/metrics", [("Authorization", "Bearer tk")])
    assert direct.status == 200


def test_graceful_reload_under_load_fails_no_request_and_keeps_the_cache(
    stack: tuple[Nginx, ProxyProcess], origin: Origin
) -> None:
    nginx, proxy = stack
    cached = origin.route("/cached", headers=[("Cache-Control", "max-age=600")], body=b"c" * 5000)
    passed = origin.route("/passed", headers=[("Cache-Control", "no-store")], body=b"p" * 500)
    assert nginx.get(cached).status == 200
    failures: list[str] = []
    done = threading.Event()
    counts = {"requests": 0}

    def load() -> None:
        while not done.is_set():
            for path, body in ((cached, b"c" * 5000), (passed, b"p" * 500)):
                try:
                    reply = nginx.get(path)
                except OSError as exc:
                    failures.append(f"{path}: {exc}")
                    continue
                counts["requests"] += 1
                if reply.status != 200 or reply.body != body:
                    failures.append(f"{path}: {reply.status} {reply.body[:40]!r}")

    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        old_workers = set(proxy.worker_pids())
        for _ in range(2):
            time.sleep(0.5)
            os.kill(proxy.pid, signal.SIGHUP)
            deadline = time.monotonic() + 20
            while set(proxy.worker_pids()) & old_workers and time.monotonic() < deadline:
                time.sleep(0.1)
            assert not set(proxy.worker_pids()) & old_workers, "workers were not replaced"
            old_workers = set(proxy.worker_pids())
        time.sleep(0.5)
    finally:
        done.set()
        for thread in threads:
            thread.join(timeout=30)
    assert failures == [], failures[:5]
    assert counts["requests"] > 50
    assert origin.count(cached) == 1  # the cache outlived both reloads
    assert nginx.get(cached).x_cache == "HIT"
    proxy.assert_alive()
