"""Requests on one kept-alive connection, pipelined or sent while the one before runs:
each is answered whole and in order, hits and passes mixed, and what is read ahead of the
next request is not lost; real gunicorn with two workers."""

from __future__ import annotations

import socket

import pytest
from support.checks import poll
from support.origin import Origin
from support.proxy import ProxyProcess

CACHED = [("Cache-Control", "max-age=600")]
UNCACHEABLE = [("Cache-Control", "no-store")]


def _get(target: str) -> bytes:
    return f"GET {target} HTTP/1.1\r\nHost: example.test\r\n\r\n".encode()


def _responses(sock: socket.socket, count: int) -> list[tuple[int, dict[str, str], bytes]]:
    """``count`` responses read off ``sock`` in turn: status, fields (last value of a name,
    names lower-cased), body (each must have a Content-Length)."""
    replies = []
    with sock.makefile("rb") as stream:
        for _ in range(count):
            status_line = stream.readline()
            assert status_line.startswith(b"HTTP/1.1 "), status_line
            fields = {}
            while (line := stream.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                fields[name.strip().lower()] = value.strip()
            assert "content-length" in fields, fields
            body = stream.read(int(fields["content-length"]))
            replies.append((int(status_line.split()[1]), fields, body))
    return replies


@pytest.mark.gunicorn(
    "27.0", "gthread answers pipelined requests (before, those after the first wait for more)"
)
def test_pipelined_requests_are_answered_in_order(origin: Origin, proxy: ProxyProcess) -> None:
    """Six requests in one write, hits and passes mixed: six whole answers in order, and
    the origin sees each pass-through once."""
    cached = origin.route("/piped-cached", headers=CACHED, body=b"cached body")
    passed = origin.route("/piped-passed", headers=UNCACHEABLE, body=b"passed body")
    assert proxy.get(cached, [("Host", "example.test")]).x_cache == "MISS"
    targets = [cached, passed, cached, passed, passed, cached]
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        sock.sendall(b"".join(_get(target) for target in targets))
        replies = _responses(sock, len(targets))
    expected = [
        (
            200,
            "HIT" if target == cached else "MISS",
            b"cached body" if target == cached else b"passed body",
        )
        for target in targets
    ]
    assert [(status, fields["x-cache"], body) for status, fields, body in replies] == expected
    assert origin.count(passed) == 3
    assert origin.count(cached) == 1


def test_a_request_sent_while_the_previous_one_runs_is_answered_after_it(
    origin: Origin, proxy: ProxyProcess
) -> None:
    """The second request reaches the socket while the first waits on a slow origin: it is
    answered after the first, on the same connection."""
    slow = origin.route("/second-slow", headers=UNCACHEABLE, body=b"slow body", delay=0.4)
    fast = origin.route("/second-fast", headers=UNCACHEABLE, body=b"fast body")
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=3) as sock:
        sock.sendall(_get(slow))
        assert poll(lambda: origin.count(slow) == 1, 2.0, 0.01)
        sock.sendall(_get(fast))
        replies = _responses(sock, 2)
    assert [(status, body) for status, _, body in replies] == [
        (200, b"slow body"),
        (200, b"fast body"),
    ]
    assert [r.path for r in origin.requests() if r.path in (slow, fast)] == [slow, fast]
