"""Three proxy nodes as one cache, on loopback: real gunicorn (two workers each, each node its
own cache folder), nginx with deploy/cluster's consistent-hash site (only its addresses
replaced), and a real redis-server without persistence. Each test asserts on what the
client received and on what the origin saw; nodes are killed with SIGKILL, Redis is
stopped by its PID.
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from support import client
from support.origin import Origin
from support.proxy import ProxyFactory, ProxyProcess, free_port, gunicorn_command, proxy_env
from support.services import Nginx, RedisServer

from wsgi_proxy.core import keys

ROOT = Path(__file__).resolve().parents[2]
SITE = ROOT / "deploy" / "cluster" / "nginx-cluster.conf"
TOKEN = "cluster-token"
AUTH = [("Authorization", f"Bearer {TOKEN}")]
CACHED = [("Cache-Control", "max-age=600")]
NODES = 3


class Cluster:
    """The nodes, nginx in front of them and Redis beside them."""

    def __init__(self, factory: ProxyFactory, origin_url: str, workdir: Path) -> None:
        self.factory = factory
        self.origin_url = origin_url
        self.workdir = workdir
        self.ports = [free_port() for _ in range(NODES)]
        self.urls = [f"http://127.0.0.1:{port}" for port in self.ports]
        # The Host nginx's site sends the nodes (the client's, port included: the tests'
        # client names nginx's address): asked with it, a node finds the entries stored
        # for requests that came through nginx. Set once nginx's port is chosen.
        self.site_host = ""
        self.redis = RedisServer(free_port(), workdir / "redis")
        self.nodes: list[ProxyProcess] = []

    def env(self, index: int) -> dict[str, str]:
        settings = {
            "WSGI_PROXY_TRUSTED_PROXIES": "1",
            "WSGI_PROXY_ADMIN_TOKEN": TOKEN,
            "WSGI_PROXY_PEERS": ",".join(self.urls),
            "WSGI_PROXY_NODE_URL": self.urls[index],
            "WSGI_PROXY_REDIS_URL": self.redis.url,
            "WSGI_PROXY_VIA_NAME": f"node{index}",
            "WSGI_PROXY_LOCK_TIMEOUT": "5",
        }
        return proxy_env(self.origin_url, self.cache(index), settings)

    def cache(self, index: int) -> Path:
        return self.workdir / f"node{index}"

    def start_node(self, index: int) -> ProxyProcess:
        port = self.ports[index]
        node = ProxyProcess(
            gunicorn_command(port), self.env(index), port, self.cache(index), self.workdir
        )
        self.factory.started.append(node)  # stopped at teardown
        return node

    def start(self) -> None:
        self.redis.start()
        self.nodes = [self.start_node(i) for i in range(NODES)]
        for node in self.nodes:
            node.wait_ready()

    def restart(self, index: int) -> ProxyProcess:
        self.nodes[index] = self.start_node(index)
        self.nodes[index].wait_ready()
        return self.nodes[index]

    def kill(self, index: int) -> None:
        """SIGKILL the node's master and workers: a machine that is suddenly gone."""
        node = self.nodes[index]
        workers = node.worker_pids()
        node.process.kill()
        node.process.wait(timeout=10)
        for pid in workers:
            try:
                Path(f"/proc/{pid}").stat()
            except FileNotFoundError:
                continue
            subprocess.run(["kill", "-9", str(pid)], check=False)

    def holders(self, target: str) -> list[int]:
        """The nodes whose cache folder holds the response for ``target`` (asked through
        nginx, which sends the nodes the client's ``Host``: ``site_host``)."""
        digest = keys.digest(keys.primary_key(self.origin_url, target, f"http://{self.site_host}"))
        return [
            i
            for i in range(NODES)
            if (self.cache(i) / "v1" / "objects" / digest[:2] / digest).exists()
        ]

    @property
    def as_nginx(self) -> list[tuple[str, str]]:
        """The request fields that make a node take a request as nginx would send it."""
        return [("Host", self.site_host)]

    def holder(self, target: str) -> int:
        found = self.holders(target)
        assert len(found) == 1, f"{target} is held by nodes {found}"
        return found[0]

    def admin(self, index: int, method: str, target: str) -> client.Response:
        return client.request(self.ports[index], method, target, AUTH)

    def status(self, index: int) -> dict[str, str]:
        text = self.admin(index, "GET", "/_wsgi_proxy/cluster").body.decode()
        return dict(line.split(": ", 1) for line in text.splitlines())


@pytest.fixture
def cluster(
    proxy_factory: ProxyFactory, origin: Origin, tmp_path: Path
) -> Iterator[tuple[Cluster, Nginx]]:
    nodes = Cluster(proxy_factory, origin.url, tmp_path)
    site = SITE.read_text()
    servers = re.findall(r"server 10\.0\.0\.\d:8080 ", site)
    assert len(servers) == NODES and "listen 80;" in site
    for server, port in zip(servers, nodes.ports, strict=True):
        site = site.replace(server, f"server 127.0.0.1:{port} ")
    port = free_port()
    site = site.replace("listen 80;", f"listen 127.0.0.1:{port};")
    nodes.site_host = f"127.0.0.1:{port}"
    nginx = None
    try:
        nodes.start()
        nginx = Nginx.start(site, port, tmp_path / "nginx")
        yield nodes, nginx
    finally:
        if nginx is not None:
            nginx.stop()
        stopping = [threading.Thread(target=node.stop) for node in nodes.nodes]
        for thread in stopping:
            thread.start()
        for thread in stopping:
            thread.join(timeout=30)
        nodes.redis.stop()


BANNED_ON_ALL = "banned on 3 of 3 nodes: entries stop being served now; removed in the background"


def served_by(reply: client.Response) -> str:
    """The node that answered: its name opens Cache-Status."""
    return (reply.header("Cache-Status") or "").split(";")[0]


def routes(origin: Origin, name: str, count: int, tags: str | None = None) -> list[str]:
    fields = [*CACHED, *([("Surrogate-Key", tags)] if tags else [])]
    body = name.rsplit("/", 1)[-1]
    return [origin.route(f"/{name}{i}", headers=fields, body=f"{body}-{i}".encode())
            for i in range(count)]  # fmt: skip


def expected_body(path: str) -> bytes:
    """What ``routes`` made the origin answer for ``path``: ``/name7`` -> ``name-7``."""
    segment = path.rsplit("/", 1)[1]
    name = segment.rstrip("0123456789")
    return f"{name}-{segment[len(name) :]}".encode()


def fetch_all(get: Callable[[str], client.Response], paths: list[str]) -> list[client.Response]:
    """``get`` each path; every answer must be a 200 with the origin's body."""
    replies = [get(path) for path in paths]
    for path, reply in zip(paths, replies, strict=True):
        assert (reply.status, reply.body) == (200, expected_body(path)), reply.describe()
    return replies


def text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.1)


def test_keys_are_spread_over_the_nodes(cluster: tuple[Cluster, Nginx], origin: Origin) -> None:
    nodes, nginx = cluster
    paths = routes(origin, "spread", 30)
    first = fetch_all(nginx.get, paths)
    second = fetch_all(nginx.get, paths)
    assert [r.x_cache for r in first] == ["MISS"] * 30
    assert [r.x_cache for r in second] == ["HIT"] * 30
    assert [origin.count(p) for p in paths] == [1] * 30
    holders = [nodes.holder(p) for p in paths]  # each URL on exactly one node
    assert set(holders) == {0, 1, 2}
    assert [served_by(r) for r in first] == [f"node{i}" for i in holders]
    assert [served_by(r) for r in second] == [f"node{i}" for i in holders]


def test_no_admin_action_through_the_cluster_site(
    cluster: tuple[Cluster, Nginx], origin: Origin
) -> None:
    """The cluster's nginx site refuses PURGE and the admin prefix, as the single node's:
    the token is needed on a node's own address (and nowhere else)."""
    nodes, nginx = cluster
    path = routes(origin, "admin", 1)[0]
    fetch_all(nginx.get, [path])
    for method, target in [
        ("PURGE", path),
        ("POST", f"/_wsgi_proxy/purge?url={path}"),
        ("GET", "/_wsgi_proxy/metrics"),
        ("GET", "/_wsgi_proxy/cluster"),
    ]:
        reply = nginx.request(method, target, AUTH)
        assert reply.status in (404, 405), (method, target, reply.describe())
    assert nginx.get(path).x_cache == "HIT"
    assert origin.count(path) == 1
    purged = nodes.admin(nodes.holder(path), "PURGE", path)
    assert purged.body.decode().splitlines()[0] == "purged 1 on 3 of 3 nodes"


def test_a_killed_node_moves_only_its_slice(cluster: tuple[Cluster, Nginx], origin: Origin) -> None:
    nodes, nginx = cluster
    paths = routes(origin, "kill", 30)
    fetch_all(nginx.get, paths)
    dead = nodes.holder(paths[0])
    moved = [p for p in paths if nodes.holder(p) == dead]
    kept = [p for p in paths if p not in moved]
    nodes.kill(dead)
    after = dict(zip(paths, fetch_all(nginx.get, paths), strict=True))
    for path in kept:
        assert (after[path].x_cache, origin.count(path)) == ("HIT", 1), path
    for path in moved:
        assert after[path].x_cache == "MISS" and served_by(after[path]) != f"node{dead}"
        assert origin.count(path) == 2, path
    again = fetch_all(nginx.get, moved)  # the slice now lives on the survivors
    assert [r.x_cache for r in again] == ["HIT"] * len(moved)
    assert [origin.count(p) for p in moved] == [2] * len(moved)


TAGGED = 45


def test_purge_by_tag_reaches_every_node(cluster: tuple[Cluster, Nginx], origin: Origin) -> None:
    nodes, nginx = cluster
    # Enough URLs that nginx's consistent hash (over nodes on random ports) gives each node
    # some: with 15, about one run in a hundred left a node without any.
    tagged = routes(origin, "tagged", TAGGED, tags="grp other")
    plain = routes(origin, "plain", 9)
    fetch_all(nginx.get, tagged + plain)
    assert {nodes.holder(p) for p in tagged} == {0, 1, 2}

    def indexed() -> list[str]:
        reply = nodes.admin(1, "GET", "/_wsgi_proxy/tags?tag=grp")
        return reply.body.decode().splitlines()[1:]

    wait_for(lambda: len(indexed()) == TAGGED, "the tag index")
    expected = sorted(f"{nodes.urls[nodes.holder(p)]}\t{p}" for p in tagged)
    assert sorted(indexed()) == expected
    purged = nodes.admin(0, "POST", "/_wsgi_proxy/purge?tag=grp")
    assert purged.status == 200, purged.describe()
    lines = purged.body.decode().splitlines()
    assert lines[0] == BANNED_ON_ALL, purged.body  # a ban: no count (docs/operations.md)
    replies = dict(zip(tagged + plain, fetch_all(nginx.get, tagged + plain), strict=True))
    assert [(replies[p].x_cache, origin.count(p)) for p in tagged] == [("MISS", 2)] * TAGGED
    assert [(replies[p].x_cache, origin.count(p)) for p in plain] == [("HIT", 1)] * 9


def test_purge_by_url_prefix_and_soft_all_reach_every_node(
    cluster: tuple[Cluster, Nginx], origin: Origin
) -> None:
    nodes, nginx = cluster
    under = routes(origin, "dir/u", 12)
    other = routes(origin, "o", 12)
    fetch_all(nginx.get, under + other)
    target = other[0]
    asker = (nodes.holder(target) + 1) % NODES  # asked on a node that does not hold it
    one = client.request(nodes.ports[asker], "PURGE", target, AUTH)
    assert (one.status, one.body.decode().splitlines()[0]) == (200, "purged 1 on 3 of 3 nodes")
    prefix = nodes.admin(asker, "POST", f"/_wsgi_proxy/purge?prefix={origin.prefix}/dir/")
    assert prefix.body.decode().splitlines()[0] == BANNED_ON_ALL
    # Each node's lurker removes the banned files in the background.
    wait_for(lambda: [nodes.holders(p) for p in [target, *under]] == [[]] * 13, "the lurkers")
    soft = nodes.admin(asker, "POST", "/_wsgi_proxy/purge?all=1&soft=1")
    assert soft.body.decode().splitlines()[0] == BANNED_ON_ALL
    assert all(len(nodes.holders(p)) == 1 for p in other[1:])  # kept, marked stale
    replies = fetch_all(nginx.get, other)  # no validator: fetched again, all of them
    assert [(r.x_cache, origin.count(p)) for r, p in zip(replies, other, strict=True)] == [
        ("MISS", 2)
    ] * 12
    assert [origin.count(p) for p in under] == [1] * 12


def test_a_purge_issued_while_a_node_is_down_is_applied_when_it_is_back(
    cluster: tuple[Cluster, Nginx], origin: Origin
) -> None:
    nodes, nginx = cluster
    tagged = routes(origin, "gone", 15, tags="batch")
    plain = routes(origin, "stays", 30)
    fetch_all(nginx.get, tagged + plain)
    dead = nodes.holder(tagged[0])
    nodes.kill(dead)
    # On another node's machine: there the CLI purges its own node's folder directly.
    issuer = (dead + 1) % NODES
    run = [sys.executable, "-m", "wsgi_proxy", "purge", "--tag", "batch"]
    done = subprocess.run(run, env=nodes.env(issuer), capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stdout + done.stderr
    out = done.stdout.splitlines()
    assert out[0].startswith("banned on 2 of 3 nodes: "), done.stdout
    assert f"{nodes.urls[dead]}: failed: " in done.stdout
    assert "purge log: 1" in out
    back = nodes.restart(dead)
    for path in tagged:
        reply = back.get(path, nodes.as_nginx) if nodes.holders(path) == [dead] else nginx.get(path)
        assert (reply.status, reply.x_cache, origin.count(path)) == (200, "MISS", 2), path
    on_dead = [p for p in plain if nodes.holder(p) == dead]
    assert on_dead, "no untagged URL landed on the node"
    assert [(back.get(p, nodes.as_nginx).x_cache, origin.count(p)) for p in on_dead] == [
        ("HIT", 1)
    ] * len(on_dead)
    assert nodes.status(dead)["purge_log_applied"] == "1"


def test_redis_down_and_back(cluster: tuple[Cluster, Nginx], origin: Origin) -> None:
    nodes, nginx = cluster
    tagged = routes(origin, "rt", 12, tags="outage")
    plain = routes(origin, "rp", 30)
    fetch_all(nginx.get, tagged + plain)
    dead = nodes.holder(tagged[0])
    alive = [i for i in range(NODES) if i != dead]
    held = {p: nodes.holder(p) for p in plain}
    nodes.kill(dead)  # a node that misses the purge, and Redis's restart
    nodes.redis.stop()
    during = dict(zip(plain, fetch_all(nginx.get, plain), strict=True))
    assert all(during[p].x_cache == "HIT" for p in plain if held[p] != dead)
    cold = routes(origin, "cold", 6)
    first, second = fetch_all(nginx.get, cold), fetch_all(nginx.get, cold)
    assert [r.x_cache for r in first + second] == ["MISS"] * 6 + ["HIT"] * 6
    assert [origin.count(p) for p in cold] == [1] * 6
    issuer = alive[0]
    purged = nodes.admin(issuer, "POST", "/_wsgi_proxy/purge?tag=outage")
    assert purged.status == 502, purged.describe()
    answer = purged.body.decode()
    assert "on 2 of 3 nodes" in answer and f"{nodes.urls[dead]}: failed" in answer
    assert "purge log: pending" in answer
    assert nodes.status(issuer)["purge_log_pending"] == "1"
    old_epoch = nodes.status(issuer)["purge_log_epoch"]

    nodes.redis.start()  # empty: it lost the log
    db = redis.Redis.from_url(nodes.redis.url)
    wait_for(lambda: db.llen("wsgi_proxy:purge:log") == 1, "the pending purge to be logged")
    entry = text(db.lrange("wsgi_proxy:purge:log", 0, -1)[0])
    assert re.match(r"1 \d+ \{", entry) and '"value": "outage"' in entry
    epoch = text(db.get("wsgi_proxy:purge:epoch"))
    assert epoch not in ("None", old_epoch)
    for i in alive:

        def caught_up(i: int = i) -> bool:
            return nodes.status(i)["purge_log_applied"] == "1"

        wait_for(caught_up, f"node{i} to catch up")
        assert nodes.status(i)["purge_log_epoch"] == epoch
    # The nodes that watched Redis go away kept their caches.
    kept = [p for p in plain if held[p] in alive]
    for path in kept:
        reply = nodes.nodes[held[path]].get(path, nodes.as_nginx)
        assert (reply.x_cache, origin.count(path)) == ("HIT", 1), path
    # The node that was down when Redis lost the log cannot know what it missed: it
    # empties its cache before it serves again.
    back = nodes.restart(dead)
    mine = [p for p in tagged + plain if nodes.holders(p) == [dead]]
    assert mine
    counts = {p: origin.count(p) for p in mine}
    for path in mine:
        reply = back.get(path, nodes.as_nginx)
        assert (reply.status, reply.x_cache) == (200, "MISS"), path
        assert origin.count(path) == counts[path] + 1
    assert nodes.status(dead)["purge_log_epoch"] == epoch


def test_two_nodes_fetching_one_cold_url_make_one_origin_request(
    cluster: tuple[Cluster, Nginx], origin: Origin
) -> None:
    nodes, _nginx = cluster
    slow = origin.route("/slow", headers=CACHED, body=b"slow body", delay=1.5)
    for node in nodes.nodes:  # each worker's app is built on its first request
        for _ in range(4):
            assert node.get("/_wsgi_proxy/health").status == 200
    replies: dict[int, client.Response] = {}

    def ask(index: int) -> None:
        replies[index] = nodes.nodes[index].get(slow, nodes.as_nginx)

    first = threading.Thread(target=ask, args=(0,))
    first.start()
    time.sleep(0.4)
    ask(1)
    first.join(timeout=30)
    assert [(replies[i].status, replies[i].body) for i in (0, 1)] == [(200, b"slow body")] * 2
    assert origin.count(slow) == 1
    assert (replies[0].x_cache, served_by(replies[0])) == ("MISS", "node0")
    # node1 found node0 fetching: node0 answered it from its cache once stored.
    assert (replies[1].x_cache, served_by(replies[1])) == ("HIT", "node0")
    assert nodes.holders(slow) == [0]
