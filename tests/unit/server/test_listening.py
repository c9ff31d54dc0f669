"""server/listening.py: the addresses in the start-up line, and the bind check."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from wsgi_proxy.server.listening import bind_problem, format_address, listening_args

TCP = ("127.0.0.1", 8080)


@pytest.mark.parametrize(
    ("address", "shown"),
    [
        (("127.0.0.1", 8080), "http://127.0.0.1:8080"),
        (("::1", 8080), "http://[::1]:8080"),
        (("", 80), "http://:80"),
        ("/run/wsgi-proxy.sock", "unix:/run/wsgi-proxy.sock"),
        (3, "fd://3"),
    ],
)
def test_format_address(address: Any, shown: str) -> None:
    assert format_address(address) == shown


@pytest.mark.parametrize(
    ("message", "args", "expected"),
    [
        # The master holds no socket (a socket per worker): the addresses are named.
        ("Listening at: %s (%s)", ("", 7054), ("http://127.0.0.1:8080,unix:/s", 7054)),
        ("Listening at: %s", ("",), ("http://127.0.0.1:8080,unix:/s",)),
        # gunicorn named its sockets itself: unchanged.
        ("Listening at: %s (%s)", ("http://127.0.0.1:9", 1), ("http://127.0.0.1:9", 1)),
        ("Booting worker with pid: %s", ("",), ("",)),
        ("Listening at: %s (%s)", (), ()),
    ],
)
def test_listening_args(message: str, args: tuple[Any, ...], expected: tuple[Any, ...]) -> None:
    assert listening_args(message, args, [TCP, "/s"]) == expected


@pytest.mark.parametrize("share", [False, True])
def test_bind_problem_names_the_address_in_use(share: bool) -> None:
    """A port held without SO_REUSEPORT is refused either way; one held with it only
    without ``share``."""
    with socket.socket() as alone, socket.socket() as sharing:
        alone.bind(("127.0.0.1", 0))
        alone.listen()
        sharing.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sharing.bind(("127.0.0.1", 0))
        sharing.listen()
        alone_port, sharing_port = alone.getsockname()[1], sharing.getsockname()[1]
        problem = bind_problem(("127.0.0.1", alone_port), share=share)
        assert problem is not None and f"http://127.0.0.1:{alone_port}: " in problem
        assert "already in use" in problem
        joined = bind_problem(("127.0.0.1", sharing_port), share=share)
        assert (joined is None) == share, joined


def test_bind_problem_for_a_free_port_and_a_foreign_address() -> None:
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    assert bind_problem(("127.0.0.1", port), share=False) is None
    foreign = bind_problem(("192.0.2.1", port), share=False)
    assert foreign == f"cannot listen on http://192.0.2.1:{port}: no interface of this " \
        "machine has that address"  # fmt: skip
