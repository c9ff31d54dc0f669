"""Start-up as systemd sees it: the log names every address served; an address that cannot
be listened on (in use, by anything or by another wsgi_proxy, or not this machine's) stops
the server with one line naming it, before it tells systemd READY=1 (sd_notify, through
the datagram socket in ``NOTIFY_SOCKET``); sharing a port with another wsgi_proxy only
with WSGI_PROXY_SHARE_PORT=on. Real gunicorn (and the CLI) with two workers."""

from __future__ import annotations

import socket
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest
from support.checks import poll
from support.origin import Origin
from support.proxy import ProxyFactory, ProxyProcess, free_port, gunicorn_command

EXIT_WITHIN = 15.0  # seconds; on main the master never exited at all
CACHED = [("Cache-Control", "max-age=600")]


def _cli_command(port: int, host: str = "127.0.0.1") -> list[str]:
    return [sys.executable, "-m", "wsgi_proxy", "--host", host, "--port", str(port)]


def _gunicorn_command(port: int, host: str = "127.0.0.1") -> list[str]:
    argv = gunicorn_command(port)
    argv[argv.index("-b") + 1] = f"{host}:{port}"
    return argv


COMMANDS: dict[str, Callable[[int, str], list[str]]] = {
    "gunicorn": _gunicorn_command,
    "caching-proxy": _cli_command,
}


class Notifications:
    """A unix datagram socket standing in for systemd's notify socket: what the server
    sends to ``NOTIFY_SOCKET``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.received: list[str] = []

    def states(self) -> list[str]:
        """Every state line received so far (READY=1, STATUS=..., STOPPING=1)."""
        while True:
            try:
                self.received += self.sock.recv(4096).decode().splitlines()
            except BlockingIOError:
                return self.received


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[Notifications]:
    notifications = Notifications(tmp_path / "notify.sock")
    try:
        yield notifications
    finally:
        notifications.sock.close()


@contextmanager
def _listening(address: tuple[str, int]) -> Iterator[int]:
    """Another program listening on ``address`` (port 0: any free one); yields its port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as other:
        other.bind(address)
        other.listen()
        yield other.getsockname()[1]


def _start_on(
    proxy_factory: ProxyFactory,
    command: Callable[[int, str], Sequence[str]],
    port: int,
    env: dict[str, str],
    host: str = "127.0.0.1",
) -> ProxyProcess:
    return proxy_factory(env, command=lambda _free: command(port, host), ready=False)


def _lines_naming(proxy: ProxyProcess, address: str) -> list[str]:
    return [line for line in proxy.stderr(400).splitlines() if address in line]


def _assert_refused(proxy: ProxyProcess, notify: Notifications, address: str, why: str) -> None:
    """The server exited non-zero, logged one line naming ``address`` with ``why``, and
    never told systemd it was ready; no worker was started."""
    status = proxy.wait_exit(EXIT_WITHIN)
    assert status not in (None, 0), f"exit status {status}; stderr:\n{proxy.stderr()}"
    lines = _lines_naming(proxy, address)
    assert len(lines) == 1 and why in lines[0], proxy.stderr()
    assert "Booting worker" not in proxy.stderr(400)
    assert "READY=1" not in notify.states()


@pytest.mark.parametrize("reuse_port", ["on", "off"])
def test_the_start_up_log_names_every_address_served(
    proxy_factory: ProxyFactory, notify: Notifications, reuse_port: str
) -> None:
    """``Listening at:  (pid)`` named nothing with WSGI_PROXY_REUSE_PORT=on, the default."""
    proxy = proxy_factory({"WSGI_PROXY_REUSE_PORT": reuse_port, "NOTIFY_SOCKET": str(notify.path)})
    assert poll(lambda: "READY=1" in notify.states(), 10)
    (line,) = [line for line in proxy.stderr(400).splitlines() if "Listening at:" in line]
    assert f"Listening at: http://127.0.0.1:{proxy.port} ({proxy.pid})" in line, line


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("reuse_port", ["on", "off"])
def test_a_port_in_use_stops_start_up_before_ready(
    proxy_factory: ProxyFactory, notify: Notifications, command: str, reuse_port: str
) -> None:
    """Another program listens on the port: the master used to keep running (READY=1 sent)
    while its workers failed and restarted in a loop."""
    env = {"WSGI_PROXY_REUSE_PORT": reuse_port, "NOTIFY_SOCKET": str(notify.path)}
    with _listening(("127.0.0.1", 0)) as port:
        proxy = _start_on(proxy_factory, COMMANDS[command], port, env)
        _assert_refused(proxy, notify, f"127.0.0.1:{port}", "already in use")


@pytest.mark.parametrize("command", COMMANDS)
def test_an_address_not_of_this_machine_stops_start_up_before_ready(
    proxy_factory: ProxyFactory, notify: Notifications, command: str
) -> None:
    """192.0.2.1 (TEST-NET-1) is no interface's address here."""
    port = free_port()
    proxy = _start_on(
        proxy_factory, COMMANDS[command], port, {"NOTIFY_SOCKET": str(notify.path)}, "192.0.2.1"
    )
    _assert_refused(proxy, notify, f"192.0.2.1:{port}", "no interface")


@pytest.mark.parametrize("command", COMMANDS)
def test_a_second_instance_on_the_same_port_fails_and_the_first_keeps_it(
    proxy_factory: ProxyFactory, notify: Notifications, origin: Origin, command: str
) -> None:
    """With SO_REUSEPORT the second instance used to bind the first one's port silently,
    and the kernel shared the connections between them."""
    path = origin.route("/first", headers=CACHED, body=b"first")
    first = proxy_factory()
    assert first.get(path).body == b"first"
    # Same cache folder, so same metrics folder, which a starting server empties.
    metrics = Path(f"{first.cache_dir}.metrics")
    kept = set(metrics.iterdir())
    second = _start_on(
        proxy_factory, COMMANDS[command], first.port, {"NOTIFY_SOCKET": str(notify.path)}
    )
    _assert_refused(second, notify, f"127.0.0.1:{first.port}", "already in use")
    assert kept and kept <= set(metrics.iterdir())  # the first one's metric files stay
    assert "WSGI_PROXY_SHARE_PORT" in _lines_naming(second, f"127.0.0.1:{first.port}")[0]
    first.assert_alive()
    assert all(first.get(path).body == b"first" for _ in range(5))


def _tcp_listeners(port: int) -> int:
    """How many TCP sockets listen on ``port`` (IPv4), from /proc/net/tcp."""
    rows = Path("/proc/net/tcp").read_text().splitlines()[1:]
    return sum(
        1
        for row in rows
        if row.split()[3] == "0A" and int(row.split()[1].split(":")[1], 16) == port
    )


@pytest.mark.tuned("gunicorn", "a socket per worker (WSGI_PROXY_REUSE_PORT)")
def test_share_port_on_joins_another_instance(
    proxy_factory: ProxyFactory, notify: Notifications, origin: Origin
) -> None:
    """WSGI_PROXY_SHARE_PORT=on on both: the second starts, reports ready, and its two
    workers listen beside the first one's."""
    path = origin.route("/shared", headers=CACHED, body=b"shared")
    first = proxy_factory({"WSGI_PROXY_SHARE_PORT": "on"})
    assert poll(lambda: _tcp_listeners(first.port) == 2, 10)
    env = {"WSGI_PROXY_SHARE_PORT": "on", "NOTIFY_SOCKET": str(notify.path)}
    second = _start_on(proxy_factory, _gunicorn_command, first.port, env)
    assert poll(lambda: "READY=1" in notify.states(), 15), second.stderr()
    assert poll(lambda: _tcp_listeners(first.port) == 4, 15), second.stderr()
    second.assert_alive()
    assert all(first.get(path).body == b"shared" for _ in range(6))


def test_share_port_on_still_refuses_a_port_held_without_it(
    proxy_factory: ProxyFactory, notify: Notifications
) -> None:
    """Sharing joins only a socket that shares (SO_REUSEPORT): a port another program
    holds alone still stops start-up."""
    env = {"WSGI_PROXY_SHARE_PORT": "on", "NOTIFY_SOCKET": str(notify.path)}
    with _listening(("127.0.0.1", 0)) as port:
        proxy = _start_on(proxy_factory, _gunicorn_command, port, env)
        _assert_refused(proxy, notify, f"127.0.0.1:{port}", "already in use")
