"""The status page (``/_wsgi_proxy/``) and its figures (``/_wsgi_proxy/status.json``), on
real gunicorn with two workers: the figures agree with a ``/metrics`` scrape taken with no
traffic between, the access rules are metrics', the last purges of every worker and of the
CLI are listed, a cluster's nodes are shown; and the page in a real browser (headless
Chromium, tests/support/browser.py) draws its chart from live traffic, shows the figures
``/metrics`` has, and logs no error on its console."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from support.browser import browser
from support.checks import poll
from support.origin import Origin
from support.proxy import ProxyFactory, ProxyProcess, free_port, gunicorn_command, proxy_env

TOKEN = "t0ken"
AUTH = [("Authorization", f"Bearer {TOKEN}")]
CACHED = [("Cache-Control", "max-age=600")]
OUTCOMES = ("hit", "stale", "revalidated", "miss", "pass", "method", "error")
POOL = {"threads": "wsgi_proxy_pool_threads", "running": "wsgi_proxy_pool_running",
        "waiting": "wsgi_proxy_pool_waiting", "queued": "wsgi_proxy_pool_queue_length"}  # fmt: skip

Scrape = dict[str, dict[str, float]]


def parse_metrics(text: str) -> Scrape:
    """The exposition text as {name: {labels as written: value}}."""
    found: Scrape = {}
    for line in text.splitlines():
        match = re.match(r"^([a-z_]+)(?:\{(.*)\})? (\S+)$", line)
        if match:
            name, labels, value = match.groups()
            found.setdefault(name, {})[labels or ""] = float(value)
    return found


def by_label(scrape: Scrape, name: str, label: str) -> dict[str, float]:
    pattern = re.compile(rf'{label}="([^"]*)"')
    sums: dict[str, float] = {}
    for labels, value in scrape.get(name, {}).items():
        match = pattern.search(labels)
        key = match.group(1) if match else ""
        sums[key] = sums.get(key, 0.0) + value
    return sums


def one(scrape: Scrape, name: str) -> float:
    return sum(scrape.get(name, {}).values())


def expected_figures(scrape: Scrape) -> dict[str, Any]:
    """What status.json must say, computed from the scrape (independently of ops/status)."""
    requests = {o: by_label(scrape, "wsgi_proxy_requests_total", "cache").get(o, 0.0)
                for o in OUTCOMES}  # fmt: skip
    from_cache = requests["hit"] + requests["stale"] + requests["revalidated"]
    answered = sum(requests.values())
    return {
        "requests": requests,
        "requests_total": answered,
        "from_cache": from_cache,
        "hit_ratio": from_cache / answered if answered else None,
        "bytes": {
            "cache": 0.0,
            "origin": 0.0,
            **by_label(scrape, "wsgi_proxy_body_bytes_total", "source"),
        },
        "origin_requests": by_label(scrape, "wsgi_proxy_origin_requests_total", "status"),
        "latency": (
            one(scrape, "wsgi_proxy_origin_seconds_count"),
            one(scrape, "wsgi_proxy_origin_seconds_sum"),
        ),
        "disk": (
            one(scrape, "wsgi_proxy_cache_bytes"),
            one(scrape, "wsgi_proxy_cache_limit_bytes"),
            one(scrape, "wsgi_proxy_cache_files"),
        ),
        "pools": {field: one(scrape, name) for field, name in POOL.items()},
        "purged": by_label(scrape, "wsgi_proxy_purged_entries_total", "kind"),
        "applied": by_label(scrape, "wsgi_proxy_purges_total", "kind"),
        "evictions": one(scrape, "wsgi_proxy_evictions_total"),
        "errors": by_label(scrape, "wsgi_proxy_errors_total", "kind"),
    }


def actual_figures(status: dict[str, Any]) -> dict[str, Any]:
    latency = status["origin"]["latency"]
    disk = status["disk"]
    return {
        "requests": status["requests"],
        "requests_total": status["requests_total"],
        "from_cache": status["from_cache"],
        "hit_ratio": status["hit_ratio"],
        "bytes": status["bytes"],
        "origin_requests": status["origin"]["requests"],
        "latency": (latency["count"], latency["sum"]),
        "disk": (disk["bytes"], disk["limit"], disk["files"]),
        "pools": {field: status["pools"][field] for field in POOL},
        "purged": status["purges"]["purged"],
        "applied": status["purges"]["applied"],
        "evictions": status["evictions"],
        "errors": status["errors"],
    }


def scrape(proxy: ProxyProcess, headers: list[tuple[str, str]]) -> Scrape:
    reply = proxy.get("/_wsgi_proxy/metrics", headers)
    assert reply.status == 200, reply.describe()
    return parse_metrics(reply.body.decode())


def status_json(proxy: ProxyProcess, headers: list[tuple[str, str]]) -> dict[str, Any]:
    reply = proxy.get("/_wsgi_proxy/status.json", headers)
    assert reply.status == 200, reply.describe()
    assert reply.header("Content-Type") == "application/json", reply.describe()
    assert reply.header("Cache-Control") == "no-store", reply.describe()
    result: dict[str, Any] = json.loads(reply.body)
    return result


def quiet_pair(
    proxy: ProxyProcess, headers: list[tuple[str, str]]
) -> tuple[Scrape, dict[str, Any]]:
    """A scrape and status.json taken between two equal scrapes: nothing changed meanwhile
    (a pool's gauges move while the admin requests themselves run)."""
    for _ in range(20):
        before = scrape(proxy, headers)
        status = status_json(proxy, headers)
        if scrape(proxy, headers) == before:
            return before, status
    raise AssertionError("the metrics kept changing with no traffic")


def send_traffic(proxy: ProxyProcess, origin: Origin, rounds: int) -> None:
    cached = [origin.route(f"/c{i}", headers=CACHED, body=b"x" * (100 + i)) for i in range(3)]
    passed = origin.route("/p", headers=[("Cache-Control", "no-store")], body=b"p" * 50)
    for _ in range(rounds):
        for path in [*cached, passed]:
            assert proxy.get(path).status == 200


def test_status_json_agrees_with_metrics(proxy_factory: ProxyFactory, origin: Origin) -> None:
    proxy = proxy_factory({"WSGI_PROXY_ADMIN_TOKEN": TOKEN})
    send_traffic(proxy, origin, rounds=6)
    assert proxy.request("POST", f"/_wsgi_proxy/purge?url={origin.prefix}/c0", AUTH).status == 200
    send_traffic(proxy, origin, rounds=2)
    metrics, status = quiet_pair(proxy, AUTH)
    assert actual_figures(status) == expected_figures(metrics)
    assert status["requests"]["hit"] > 0 and status["requests"]["pass"] == 8
    assert 0 < status["hit_ratio"] < 1
    workers = status["workers"]
    assert len(workers) == len(proxy.worker_pids()) == 2
    for field in POOL:  # the sums taken apart by worker
        assert sum(worker[field] for worker in workers) == status["pools"][field], status
    latency = status["origin"]["latency"]
    assert latency["p50"] is not None and latency["p50"] <= latency["p99"]


def test_status_page_and_json_follow_the_metrics_access_rules(proxy_factory: ProxyFactory) -> None:
    """The token, or an allowed address for every hop: as for /metrics. A refused client
    gets the same 403 on all three."""
    closed = proxy_factory({"WSGI_PROXY_ADMIN_TOKEN": TOKEN})
    allowed = proxy_factory({"WSGI_PROXY_ADMIN_ALLOW": "127.0.0.0/8"})
    elsewhere = proxy_factory({"WSGI_PROXY_ADMIN_ALLOW": "10.0.0.0/8"})
    paths = ("/_wsgi_proxy/metrics", "/_wsgi_proxy/", "/_wsgi_proxy/status.json")
    forwarded = [("X-Forwarded-For", "203.0.113.9")]
    cases = [
        (closed, [], 403),
        (closed, [("Authorization", "Bearer wrong")], 403),
        (closed, AUTH, 200),
        (allowed, [], 200),
        (allowed, forwarded, 403),  # a hop that is not allowed
        (elsewhere, [], 403),
        (elsewhere, AUTH, 403),  # no token set there: nothing opens it
    ]
    for proxy, headers, code in cases:
        for path in paths:
            reply = proxy.get(path, headers)
            assert reply.status == code, (path, headers, reply.describe())
            assert reply.header("Cache-Control") == "no-store", reply.describe()
    page = allowed.get("/_wsgi_proxy/")
    assert page.header("Content-Type") == "text/html; charset=utf-8"
    policy = page.header("Content-Security-Policy") or ""
    assert "default-src 'none'" in policy and "connect-src 'self'" in policy
    assert b"status.json" in page.body and b"<script" in page.body
    assert not re.search(rb"""(src|href)=["']?(https?:)?//""", page.body)  # nothing outside
    assert allowed.request("POST", "/_wsgi_proxy/status.json").status == 405


def test_last_purges_from_every_worker_and_the_cli(
    proxy_factory: ProxyFactory, origin: Origin, tmp_path: Path
) -> None:
    proxy = proxy_factory({"WSGI_PROXY_ADMIN_TOKEN": TOKEN})
    path = origin.route("/gone", headers=CACHED, body=b"gone")
    assert proxy.get(path).x_cache == "MISS"
    orders = [f"url={path}", "tag=red", f"prefix={origin.prefix}/", "tag=blue&soft=1"]
    for order in orders:  # a connection each: both workers take some
        assert proxy.request("POST", f"/_wsgi_proxy/purge?{order}", AUTH).status == 200
    env = proxy_env(origin.url, proxy.cache_dir)
    cli = [sys.executable, "-m", "wsgi_proxy", "purge", "--tag", "from-cli"]
    done = subprocess.run(cli, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr  # a ban: no count at once (docs/operations.md)

    # The bans are listed at once, pending until the lurker has been through the folder
    # (the lurker may be done already: tests/unit/store/test_recent_purges.py has the rest).
    def settled() -> bool:
        return not any(r["pending"] for r in status_json(proxy, AUTH)["purges"]["recent"])

    assert poll(settled, timeout=20)
    recent = status_json(proxy, AUTH)["purges"]["recent"]
    shown = [(r["kind"], r["value"], r["soft"], r["purged"]) for r in recent]
    assert shown == [
        ("tag", "from-cli", False, 0),
        ("tag", "blue", True, 0),
        ("prefix", f"{origin.prefix}/", False, 0),
        ("tag", "red", False, 0),
        ("url", path, False, 1),
    ]
    times = [r["time"] for r in recent]
    assert times == sorted(times, reverse=True)


def test_cluster_nodes_are_shown(
    proxy_factory: ProxyFactory, origin: Origin, tmp_path: Path
) -> None:
    """Each node of WSGI_PROXY_PEERS with its state: this one, a peer that answers, and
    one that does not."""
    ports = [free_port() for _ in range(3)]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    nodes = []
    for index in range(2):  # the third is never started
        settings = {"WSGI_PROXY_ADMIN_TOKEN": TOKEN, "WSGI_PROXY_PEERS": ",".join(urls),
                    "WSGI_PROXY_NODE_URL": urls[index]}  # fmt: skip
        cache = tmp_path / f"node{index}"
        env = proxy_env(origin.url, cache, settings)
        node = ProxyProcess(gunicorn_command(ports[index]), env, ports[index], cache, tmp_path)
        proxy_factory.started.append(node)  # stopped at teardown
        nodes.append(node)
    for node in nodes:
        node.wait_ready()
    shown = status_json(nodes[0], AUTH)["cluster"]["nodes"]
    states = {node["node"]: node["state"] for node in shown}
    assert list(states) == urls
    assert states[urls[0]] == "this node" and states[urls[1]] == "up"
    assert states[urls[2]].startswith("unreachable"), shown
    assert shown[1]["peers"] == ", ".join(urls)  # what the peer said of itself
    single = proxy_factory({"WSGI_PROXY_ADMIN_TOKEN": TOKEN})
    assert status_json(single, AUTH)["cluster"] is None


@contextmanager
def traffic(proxy: ProxyProcess, origin: Origin) -> Iterator[threading.Event]:
    """Requests sent from a thread until the block ends (hits, misses and passes)."""
    stop = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            count = 0
            while not stop.is_set():
                send_traffic(proxy, origin, rounds=1)
                new = origin.route(f"/new{count}", headers=CACHED, body=b"n")
                assert proxy.get(new).status == 200
                count += 1
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, name="traffic")
    thread.start()
    try:
        yield stop
    finally:
        stop.set()
        thread.join(30)
    assert not errors, errors


# The page's elements (their data-value) and the same figure from a scrape.
FIGURES: dict[str, Callable[[Scrape], float]] = {
    "requests-total": lambda s: sum(by_label(s, "wsgi_proxy_requests_total", "cache").values()),
    "from-cache": lambda s: sum(
        v
        for k, v in by_label(s, "wsgi_proxy_requests_total", "cache").items()
        if k in ("hit", "stale", "revalidated")
    ),
    "bytes-cache": lambda s: by_label(s, "wsgi_proxy_body_bytes_total", "source")["cache"],
    "bytes-origin": lambda s: by_label(s, "wsgi_proxy_body_bytes_total", "source")["origin"],
    "origin-count": lambda s: one(s, "wsgi_proxy_origin_seconds_count"),
    "disk-bytes": lambda s: one(s, "wsgi_proxy_cache_bytes"),
    "disk-limit": lambda s: one(s, "wsgi_proxy_cache_limit_bytes"),
    "evictions": lambda s: one(s, "wsgi_proxy_evictions_total"),
    "errors-total": lambda s: sum(by_label(s, "wsgi_proxy_errors_total", "kind").values()),
}


def test_status_page_in_a_browser(
    proxy_factory: ProxyFactory, origin: Origin, tmp_path: Path
) -> None:
    """Headless Chromium loads the page while a thread sends traffic: the chart gets
    points, the figures shown are those of /metrics once the traffic stopped, and the
    console shows no error (and would show one: a deliberate console.error is seen)."""
    proxy = proxy_factory({"WSGI_PROXY_ADMIN_ALLOW": "127.0.0.0/8"})
    url = f"http://127.0.0.1:{proxy.port}/_wsgi_proxy/"
    chart = "document.getElementById('chart-requests').dataset"
    with browser(tmp_path) as page:
        with traffic(proxy, origin):
            page.open(url)
            drawn = poll(lambda: int(page.evaluate(f"{chart}.points || 0")) >= 3, 30.0, 0.2)
            assert drawn, page.evaluate("document.body.innerText")
            assert poll(lambda: float(page.evaluate(f"{chart}.max")) > 0, 10.0, 0.2)
        stopped = time.time()
        # A poll made after the traffic stopped: its figures are final.
        assert poll(lambda: float(page.evaluate("document.body.dataset.time")) > stopped, 10, 0.2)
        metrics = scrape(proxy, [])
        for name, figure in FIGURES.items():
            shown = page.evaluate(f"document.getElementById('{name}').dataset.value")
            assert float(shown) == figure(metrics), (name, shown, metrics)
        assert page.evaluate("document.getElementById('state').textContent") == "live"
        paths = page.evaluate("document.querySelectorAll('#chart-requests path').length")
        assert paths == len(OUTCOMES)
        assert int(page.evaluate("document.getElementById('chart-ratio').dataset.points")) >= 3
        assert page.evaluate("document.getElementById('workers').dataset.workers") == "2"
        assert page.console_errors() == []
        page.evaluate("console.error('deliberate')")
        assert poll(lambda: page.console_errors() == ["console.error: deliberate"], 5.0)
