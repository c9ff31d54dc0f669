"""Which sockets the workers listen on (WSGI_PROXY_REUSE_PORT), read from /proc, and a reload
(SIGHUP) that keeps answering new connections while an old worker finishes a slow request;
real gunicorn with two workers."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import threading
from functools import partial
from pathlib import Path

import pytest
from support import client
from support.checks import poll
from support.origin import Origin
from support.proxy import ProxyFactory, ProxyProcess, children_of, gunicorn_command
from support.sockets import read_all

from wsgi_proxy.tuning import is_tuned

CACHED = [("Cache-Control", "max-age=600")]
LISTEN = "0A"  # a TCP socket's state in /proc/net/tcp
ACCEPTING = 0x10000  # __SO_ACCEPTCON, a listening Unix socket's flag in /proc/net/unix


def _socket_inodes(pid: int) -> set[int]:
    """The inodes of the sockets process ``pid`` holds open (none once it has exited)."""
    found: set[int] = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except FileNotFoundError:
        return found
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except FileNotFoundError:
            continue
        if target.startswith("socket:["):
            found.add(int(target[len("socket:[") : -1]))
    return found


def _tcp_listeners(port: int) -> set[int]:
    """The inodes of the TCP sockets listening on ``port`` (IPv4)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, state, inode = fields[1], fields[3], int(fields[9])
        if state == LISTEN and int(local.split(":")[1], 16) == port:
            found.add(inode)
    return found


def _unix_listeners(path: Path) -> set[int]:
    found = set()
    for line in Path("/proc/net/unix").read_text().splitlines()[1:]:
        fields = line.split()
        if len(fields) == 8 and fields[7] == str(path) and int(fields[3], 16) & ACCEPTING:
            found.add(int(fields[6]))
    return found


def _held(proxy: ProxyProcess, listeners: set[int]) -> dict[str, list[set[int]]]:
    """Which of ``listeners`` the master and each worker hold."""
    workers = proxy.worker_pids()
    return {
        "master": [_socket_inodes(proxy.pid) & listeners],
        "workers": [_socket_inodes(pid) & listeners for pid in workers],
    }


@pytest.mark.tuned("gunicorn", "a socket per worker (WSGI_PROXY_REUSE_PORT)")
def test_each_worker_listens_on_its_own_socket(proxy: ProxyProcess, origin: Origin) -> None:
    """By default each worker binds its own socket (SO_REUSEPORT): the kernel spreads new
    connections between them. The master holds none."""
    path = origin.route("/own-socket", headers=CACHED, body=b"own")
    for _ in range(10):  # new connections, whichever socket the kernel picks
        assert proxy.get(path).body == b"own"
    assert poll(lambda: len(_tcp_listeners(proxy.port)) == 2, 5)  # the second may bind later
    listeners = _tcp_listeners(proxy.port)
    held = _held(proxy, listeners)
    assert len(listeners) == 2, held
    assert held["master"] == [set()]
    assert sorted(len(mine) for mine in held["workers"]) == [1, 1]
    assert held["workers"][0] != held["workers"][1]


def test_with_reuse_port_off_the_workers_share_one_socket(
    proxy_factory: ProxyFactory, origin: Origin
) -> None:
    path = origin.route("/shared-socket", headers=CACHED, body=b"shared")
    proxy = proxy_factory({"WSGI_PROXY_REUSE_PORT": "off"})
    assert proxy.get(path).body == b"shared"
    listeners = _tcp_listeners(proxy.port)
    assert len(listeners) == 1
    assert _held(proxy, listeners) == {"master": [listeners], "workers": [listeners] * 2}


def _unix_get(path: Path, target: str) -> bytes:
    """GET ``target`` over the Unix socket at ``path``; the whole answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(path))
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: proxy\r\nConnection: close\r\n\r\n".encode())
        answer = bytearray()
        read_all(sock, answer)
    return bytes(answer)


def test_a_unix_socket_is_shared_whatever_reuse_port_says(
    proxy_factory: ProxyFactory, origin: Origin, tmp_path: Path
) -> None:
    """Each worker binding a socket of its own at one path would take it over from the one
    before: a Unix socket is the master's, shared by both workers, and served."""
    path = origin.route("/unix-socket", headers=CACHED, body=b"over unix")
    address = tmp_path / "proxy.sock"

    def unix_command(_port: int) -> list[str]:
        argv = gunicorn_command(0)
        return [*argv[: argv.index("-b")], "-b", f"unix:{address}", *argv[argv.index("-b") + 2 :]]

    proxy = proxy_factory({"WSGI_PROXY_REUSE_PORT": "on"}, command=unix_command, ready=False)
    assert poll(lambda: bool(_unix_listeners(address)) and len(children_of(proxy.pid)) == 2, 15)
    answers = [_unix_get(address, path) for _ in range(6)]
    assert all(a.startswith(b"HTTP/1.1 200 ") and a.endswith(b"over unix") for a in answers)
    listeners = _unix_listeners(address)
    assert len(listeners) == 1
    assert _held(proxy, listeners) == {"master": [listeners], "workers": [listeners] * 2}
    if is_tuned("gunicorn"):  # elsewhere reuse_port is never on: nothing to turn off
        assert "one socket shared by the workers" in proxy.stderr(200)


def _migrates_queued_connections() -> bool:
    """net.ipv4.tcp_migrate_req (Linux 5.14+): a closing listener's queued connections go
    to another socket of its group instead of being reset."""
    setting = Path("/proc/sys/net/ipv4/tcp_migrate_req")
    return setting.exists() and setting.read_text().strip() == "1"


def _workers(proxy: ProxyProcess, old: set[int], expected: tuple[int | None, int | None]) -> bool:
    """Whether (workers started since ``old`` was taken, workers of ``old`` still running)
    is ``expected`` (None: any number)."""
    now = set(children_of(proxy.pid))
    counts = (len(now - old), len(now & old))
    return all(want is None or want == got for want, got in zip(expected, counts, strict=True))


@pytest.mark.tuned("gunicorn", "a stopping worker's socket lingers (tuning/gthread_worker.py)")
def test_reloads_keep_answering_new_connections(
    proxy_factory: ProxyFactory, origin: Origin
) -> None:
    """Three SIGHUPs while four clients keep opening connections, the first while an old
    worker answers a slow request. Every connection finds a socket (none refused): a
    stopping worker still accepts for STOP_LINGER s, while the new ones bind theirs, then
    closes its socket though it is still finishing the slow request, which is answered
    whole. A connection the kernel had queued on a closing socket is reset unless it moves
    it to another (net.ipv4.tcp_migrate_req=1); where that is set nothing at all fails."""
    slow = origin.route("/reload-slow", body=b"slow", delay=3.0)
    fast = origin.route("/reload-fast", headers=CACHED, body=b"fast")
    proxy = proxy_factory()
    assert proxy.get(fast).body == b"fast"
    slow_reply: list[client.Response] = []
    held = threading.Thread(target=lambda: slow_reply.append(proxy.get(slow, timeout=10)))
    held.start()
    assert poll(lambda: origin.count(slow) == 1, 5, 0.01)
    stop, answered, failures = threading.Event(), [], []

    def keep_asking() -> None:
        while not stop.is_set():
            try:
                answered.append(proxy.get(fast, timeout=5).body)
            except (OSError, http.client.HTTPException) as exc:
                failures.append(exc)

    clients = [threading.Thread(target=keep_asking) for _ in range(4)]
    for thread in clients:
        thread.start()
    try:
        for reload in range(3):
            old = set(proxy.worker_pids())
            os.kill(proxy.pid, signal.SIGHUP)
            assert poll(partial(_workers, proxy, old, (2, None)), 10, 0.01)
            if reload == 0:
                listeners = _tcp_listeners(proxy.port)
                stopping = old & set(children_of(proxy.pid))  # the slow request's, at least
                assert stopping
                assert all(_socket_inodes(pid) & listeners for pid in stopping)  # accepting
                # The idle one leaves after STOP_LINGER; the slow request's worker stays,
                # its socket closed.
                assert poll(partial(_workers, proxy, old, (2, 1)), 5, 0.01)
                (busy,) = old & set(children_of(proxy.pid))
                assert not _socket_inodes(busy) & _tcp_listeners(proxy.port)
            assert poll(partial(_workers, proxy, old, (None, 0)), 10, 0.05)
    finally:
        stop.set()
        for thread in clients:
            thread.join(10)
        held.join(10)
    if _migrates_queued_connections():
        assert failures == []
    else:
        assert all(isinstance(f, ConnectionResetError) for f in failures), failures
    assert answered and set(answered) == {b"fast"}
    assert [(reply.status, reply.body) for reply in slow_reply] == [(200, b"slow")]
