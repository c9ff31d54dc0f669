"""The deployment of deploy/: nginx from Debian's packages in front of gunicorn with the
repository's gunicorn.conf.py, on loopback ports. The nginx site is deploy/nginx's file with
only its two addresses replaced. nginx must be installed (tests/run.sh installs it): a
missing nginx fails these tests rather than skipping them."""

from __future__ import annotations

import http.client
import os
import re
import signal
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.origin import Origin, Recorded, Reply
from support.proxy import REPO, ProxyFactory, ProxyProcess, free_port
from support.services import Nginx, binary

SITE = REPO / "deploy" / "nginx" / "wsgi-proxy.conf"


def _start_nginx(proxy: ProxyProcess, root: Path) -> Nginx:
    """nginx with the shipped site, only its two addresses replaced."""
    port = free_port()
    site = SITE.read_text()
    assert "server 127.0.0.1:8080;" in site and "listen 80;" in site
    site = site.replace("server 127.0.0.1:8080;", f"server 127.0.0.1:{proxy.port};")
    site = site.replace("listen 80;", f"listen 127.0.0.1:{port};")
    return Nginx.start(site, port, root)


@pytest.fixture
def stack(proxy_factory: ProxyFactory, tmp_path: Path) -> Iterator[tuple[Nginx, ProxyProcess]]:
    proxy = proxy_factory({"WSGI_PROXY_TRUSTED_PROXIES": "1", "WSGI_PROXY_ADMIN_TOKEN": "tk"})
    nginx = _start_nginx(proxy, tmp_path / "nginx")
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
    second = nginx.get(path, [("Host", "shop.example")])
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


def test_a_poisoning_attempt_through_nginx_stays_with_its_host(
    stack: tuple[Nginx, ProxyProcess], origin: Origin
) -> None:
    """The shipped site passes the client's host on; with no setting at all, a page built
    for evil.example (its links from X-Forwarded-Host) is never served to shop.example."""
    nginx, _proxy = stack

    def page(request: Recorded) -> Reply:
        host = request.header("X-Forwarded-Host")
        return Reply(headers=[("Cache-Control", "max-age=60")], body=f"//{host}/a".encode())

    path = origin.respond("/page", page)
    evil = nginx.get(path, [("Host", "evil.example")])
    clean = nginx.get(path, [("Host", "shop.example")])
    clean_again = nginx.get(path, [("Host", "Shop.Example")])
    assert (evil.body, evil.x_cache) == (b"//evil.example/a", "MISS")
    assert (clean.body, clean.x_cache) == (b"//shop.example/a", "MISS")
    assert (clean_again.body, clean_again.x_cache) == (b"//shop.example/a", "HIT")
    assert origin.count(path) == 2


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


@pytest.mark.gunicorn(
    "24.0", "a stopping gthread worker answers what comes on its kept-alive connections"
)
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


PUBLIC = "127.0.0.2"  # a client address that is not in WSGI_PROXY_ADMIN_ALLOW
ADMIN_ROUTES = [
    ("PURGE", "{path}"),
    ("PURGE", "http://shop.example{path}"),
    ("POST", "/_wsgi_proxy/purge?url={path}"),
    ("POST", "/_wsgi_proxy/purge?all=1"),
    ("PURGE", "/_wsgi_proxy/purge?prefix=/"),
    ("GET", "/_wsgi_proxy/metrics"),
    ("GET", "/_wsgi_proxy/cluster"),
    ("GET", "/_wsgi_proxy/tags?tag=t"),
    ("GET", "/_wsgi_proxy"),
    ("GET", "//_wsgi_proxy/metrics"),
    ("GET", "/%5Fwsgi_proxy/metrics"),
    ("GET", "/x/../_wsgi_proxy/metrics"),
]


@pytest.mark.parametrize("trusted", ["1", "0"])
def test_no_admin_action_through_nginx_even_from_an_allowed_loopback(
    proxy_factory: ProxyFactory, origin: Origin, tmp_path: Path, trusted: str
) -> None:
    """ADMIN_ALLOW=127.0.0.1 behind a local nginx, as deploy/wsgi-proxy.env once presented
    as safe (and with TRUSTED_PROXIES left at 0): every request through nginx comes from
    127.0.0.1, yet none may purge, read metrics or the cluster. Straight to gunicorn from
    loopback, the same requests work."""
    proxy = proxy_factory(
        {"WSGI_PROXY_TRUSTED_PROXIES": trusted, "WSGI_PROXY_ADMIN_ALLOW": "127.0.0.1"}
    )
    nginx = _start_nginx(proxy, tmp_path / "nginx")
    try:
        path = origin.route("/kept", headers=[("Cache-Control", "max-age=600")], body=b"kept")
        host = [("Host", "shop.example")]
        assert nginx.request("GET", path, host).x_cache == "MISS"
        for method, target in ADMIN_ROUTES:
            reply = nginx.request(method, target.format(path=path), host, source=PUBLIC)
            assert reply.status in (403, 404, 405), (method, target, reply.describe())
            assert b"purged" not in reply.body and b"wsgi_proxy_" not in reply.body
            assert nginx.request("GET", path, host).x_cache == "HIT", (method, target)
        assert origin.count(path) == 1
        metrics = proxy.get("/_wsgi_proxy/metrics")
        assert metrics.status == 200 and b"wsgi_proxy_" in metrics.body
        purged = proxy.request("PURGE", path, host)
        assert (purged.status, purged.body) == (200, b"purged 1\n")
        assert nginx.request("GET", path, host).x_cache == "MISS"
    finally:
        nginx.stop()


def test_a_custom_admin_prefix_through_nginx_still_needs_the_token(
    proxy_factory: ProxyFactory, origin: Origin, tmp_path: Path
) -> None:
    """nginx's site blocks only the default prefix: the address check holds the rest."""
    settings = {"WSGI_PROXY_TRUSTED_PROXIES": "1", "WSGI_PROXY_ADMIN_ALLOW": "127.0.0.1",
                "WSGI_PROXY_ADMIN_PREFIX": "/ops", "WSGI_PROXY_ADMIN_TOKEN": "tk"}  # fmt: skip
    proxy = proxy_factory(settings)
    nginx = _start_nginx(proxy, tmp_path / "nginx")
    try:
        path = origin.route("/custom", headers=[("Cache-Control", "max-age=600")], body=b"c")
        nginx.get(path)
        # A public client (127.0.0.2: not in ADMIN_ALLOW), its own X-Forwarded-For forged.
        forged = [("X-Forwarded-For", "127.0.0.1")]
        refused = nginx.request("POST", f"/ops/purge?url={path}", forged, source=PUBLIC)
        assert refused.status == 403, refused.describe()
        assert nginx.get(path).x_cache == "HIT"
        token = nginx.request(
            "POST", f"/ops/purge?url={path}", [("Authorization", "Bearer tk")], source=PUBLIC
        )
        assert (token.status, token.body) == (200, b"purged 1\n")
        assert origin.count(path) == 1
    finally:
        nginx.stop()


def _upstream_connections(port: int) -> set[int]:
    """The client ports of every TCP connection to ``port`` the kernel still knows of, open,
    closing or in TIME_WAIT, from either end (/proc/net/tcp): one per connection nginx
    opened to the proxy."""
    found = set()
    for row in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = row.split()
        local, remote, state = (int(fields[1].split(":")[1], 16),
                                int(fields[2].split(":")[1], 16), fields[3])  # fmt: skip
        if state == "0A":  # listening
            continue
        if local == port:
            found.add(remote)
        elif remote == port:
            found.add(local)
    return found


def test_health_ready_and_pages_reuse_one_upstream_connection(
    stack: tuple[Nginx, ProxyProcess], origin: Origin
) -> None:
    """One nginx worker, requests one after another: with HTTP/1.1 and an empty Connection
    in every location, nginx sends them all on the one connection it keeps (the upstream's
    keepalive). Health and ready went as HTTP/1.0 with Connection: close, one connection
    each."""
    nginx, proxy = stack
    path = origin.route("/reuse", headers=[("Cache-Control", "max-age=60")], body=b"reused")
    before = _upstream_connections(proxy.port)  # the test harness's readiness probe
    for _ in range(4):
        assert nginx.get("/_wsgi_proxy/health").status == 200
        assert nginx.get("/_wsgi_proxy/ready").status == 200
        assert nginx.get(path).body == b"reused"
    opened = _upstream_connections(proxy.port) - before
    assert len(opened) == 1, opened


@pytest.mark.parametrize(
    ("host", "forwarded"),
    [
        ("shop.example:8443", "shop.example:8443"),
        ("Shop.Example:8443", "shop.example:8443"),  # one entry: the proxy lower-cases it
        ("shop.example:80", "shop.example"),  # the default port of http: dropped
        ("shop.example", "shop.example"),
        ("[::1]:8080", "[::1]:8080"),
    ],
)
def test_the_port_the_client_used_reaches_the_origin(
    stack: tuple[Nginx, ProxyProcess], origin: Origin, host: str, forwarded: str
) -> None:
    """nginx's $host drops the port: an origin building links from X-Forwarded-Host sent
    clients to another port. The proxy normalises the rest (core/sites.py)."""
    nginx, _proxy = stack

    def page(request: Recorded) -> Reply:
        return Reply(headers=[("Cache-Control", "max-age=60")],
                     body=f"//{request.header('X-Forwarded-Host')}/a".encode())  # fmt: skip

    path = origin.respond("/ported", page)
    reply = nginx.get(path, [("Host", host)])
    assert (reply.status, reply.body) == (200, f"//{forwarded}/a".encode()), reply.describe()
    assert origin.last(path).header("X-Forwarded-Host") == forwarded


def _self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate and key for shop.example, made with the openssl command."""
    folder.mkdir(parents=True, exist_ok=True)
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [binary("openssl"), "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=shop.example", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def _tls_site(site: str, tls_port: int, cert: Path, key: Path) -> str:
    """The site's commented TLS example turned on, as its comment says to."""
    assert "    #listen 443 ssl;\n" in site
    site = site.replace("    #listen 443 ssl;", f"    listen 127.0.0.1:{tls_port} ssl;")
    site = re.sub(r"^(\s*)#(ssl_\w+ )", r"\1\2", site, flags=re.MULTILINE)
    site = site.replace("/etc/ssl/certs/wsgi-proxy.pem", str(cert))
    return site.replace("/etc/ssl/private/wsgi-proxy.key", str(key))


@pytest.mark.parametrize("site_file", [SITE, REPO / "deploy" / "cluster" / "nginx-cluster.conf"])
def test_the_tls_example_passes_nginx_t(tmp_path: Path, site_file: Path) -> None:
    cert, key = _self_signed(tmp_path / "tls")
    root = tmp_path / "nginx"
    root.mkdir()
    (root / "site.conf").write_text(_tls_site(site_file.read_text(), free_port(), cert, key))
    (root / "nginx.conf").write_text(
        f"pid {root / 'nginx.pid'};\nerror_log {root / 'error.log'};\nevents {{}}\n"
        f"http {{ include {root / 'site.conf'}; }}\n"
    )
    command = [binary("nginx"), "-t", "-p", str(root), "-c", str(root / "nginx.conf")]
    checked = subprocess.run(command, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    assert "test is successful" in checked.stderr


def test_https_through_the_tls_example(
    proxy_factory: ProxyFactory, origin: Origin, tmp_path: Path
) -> None:
    """nginx terminates TLS with the site's example turned on: the proxy is told https
    (X-Forwarded-Proto) and the port the client used, and keys the entry apart from
    plain http's."""
    proxy = proxy_factory({"WSGI_PROXY_TRUSTED_PROXIES": "1"})
    cert, key = _self_signed(tmp_path / "tls")
    port, tls_port = free_port(), free_port()
    site = SITE.read_text().replace("server 127.0.0.1:8080;", f"server 127.0.0.1:{proxy.port};")
    site = _tls_site(site.replace("listen 80;", f"listen 127.0.0.1:{port};"), tls_port, cert, key)
    nginx = Nginx.start(site, port, tmp_path / "nginx")
    try:
        path = origin.route("/tls", headers=[("Cache-Control", "max-age=60")], body=b"secure")
        context = ssl.create_default_context(cafile=str(cert))
        context.check_hostname = False  # the certificate names shop.example, not 127.0.0.1
        answers = []
        for _ in range(2):
            conn = http.client.HTTPSConnection("127.0.0.1", tls_port, timeout=10, context=context)
            conn.request("GET", path, headers={"Host": "shop.example:8443"})
            reply = conn.getresponse()
            answers.append((reply.status, reply.getheader("X-Cache"), reply.read()))
            conn.close()
        assert answers == [(200, "MISS", b"secure"), (200, "HIT", b"secure")]
        seen = origin.last(path)
        assert (seen.header("X-Forwarded-Proto"), seen.header("X-Forwarded-Host")) == (
            "https",
            "shop.example:8443",
        )
        plain = nginx.get(path, [("Host", "shop.example:8443")])
        assert (plain.status, plain.x_cache) == (200, "MISS")  # http's entry is another
        assert origin.count(path) == 2
    finally:
        nginx.stop()
