"""The worker's sends (response.py): ``send_file`` (``os.sendfile``, polling only on a full
buffer) and ``send_rest`` (what a joined ``sendmsg`` left); ``write_now`` (writes.py).
Real socket pairs with small buffers, real files, a pipe."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.sockets import BUFFER, read_all, read_exactly, small_pair

from wsgi_proxy.tuning import gunicorn_response as response
from wsgi_proxy.tuning.gunicorn_response import send_file, send_rest
from wsgi_proxy.tuning.socket_writes import write_now

BODY = bytes(range(256)) * 4096  # 1 MiB, many times the buffers
HEADER = b"HEADER-BLOCK"  # before the body in the file, as a cache entry's header is


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    server, peer = small_pair()
    with server, peer:
        yield server, peer


@pytest.fixture
def body_file(tmp_path: Path) -> Path:
    path = tmp_path / "entry"
    path.write_bytes(HEADER + BODY)
    return path


@pytest.mark.parametrize("head_size", [100, BUFFER * 8], ids=["small-head", "head-over-buffers"])
def test_send_rest_sends_what_sendmsg_left(
    pair: tuple[socket.socket, socket.socket], head_size: int
) -> None:
    server, peer = pair
    head = b"h" * head_size
    received = bytearray()
    reader = threading.Thread(target=read_all, args=(peer, received))
    reader.start()
    first = server.sendmsg([head, BODY])
    assert first < head_size + len(BODY)  # the buffers are small: partly sent
    send_rest(server, head, BODY, first)
    server.shutdown(socket.SHUT_WR)
    reader.join(10)
    assert bytes(received) == head + BODY


def test_send_rest_times_out_on_a_client_that_stops_reading(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    server, _peer = pair  # the peer never reads
    server.settimeout(0.2)
    first = server.sendmsg([b"head", BODY])
    with pytest.raises(TimeoutError):
        send_rest(server, b"head", BODY, first)


def test_send_file_sends_the_span_through_full_buffers(
    pair: tuple[socket.socket, socket.socket], body_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, peer = pair
    waits: list[float] = []
    real_wait = response._wait_writable
    full = threading.Event()

    def counted_wait(sockno: int, timeout: float) -> None:
        waits.append(timeout)
        full.set()
        real_wait(sockno, timeout)

    def read_once_full() -> None:  # not before: a reader keeping up would leave room
        full.wait(10)
        read_exactly(peer, len(BODY) - 7, received)

    monkeypatch.setattr(response, "_wait_writable", counted_wait)
    received = bytearray()
    with body_file.open("rb") as f:
        reader = threading.Thread(target=read_once_full)
        reader.start()
        sent = send_file(server.fileno(), f.fileno(), len(HEADER) + 7, len(BODY) - 7, 5.0)
        reader.join(10)
        assert f.tell() == 0  # the file's position is neither used nor moved
    assert sent == len(BODY) - 7
    assert bytes(received) == BODY[7:]
    assert waits  # the buffer filled, and the send went on after each wait
    assert set(waits) == {5.0}


def test_a_client_that_stops_reading_times_out(
    pair: tuple[socket.socket, socket.socket], body_file: Path
) -> None:
    server, _peer = pair  # the peer never reads
    with body_file.open("rb") as f, pytest.raises(TimeoutError):
        send_file(server.fileno(), f.fileno(), len(HEADER), len(BODY), 0.2)


def test_a_client_gone_is_an_error_not_a_refusal(
    pair: tuple[socket.socket, socket.socket], body_file: Path
) -> None:
    server, peer = pair
    peer.close()
    with body_file.open("rb") as f, pytest.raises((BrokenPipeError, ConnectionResetError)):
        send_file(server.fileno(), f.fileno(), len(HEADER), len(BODY), 5.0)


def test_a_file_shorter_than_asked_sends_what_it_has(
    pair: tuple[socket.socket, socket.socket], tmp_path: Path
) -> None:
    server, peer = pair
    short = tmp_path / "short"
    short.write_bytes(b"only these bytes")
    with short.open("rb") as f:
        assert send_file(server.fileno(), f.fileno(), 0, 100, 5.0) == 16
    assert peer.recv(100) == b"only these bytes"


def test_a_file_the_kernel_cannot_sendfile_from_is_refused(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    server, peer = pair
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, b"piped")
        assert send_file(server.fileno(), read_end, 0, 5, 5.0) == 0
    finally:
        os.close(read_end)
        os.close(write_end)
    peer.setblocking(False)
    with pytest.raises(BlockingIOError):
        peer.recv(10)  # nothing was sent


@pytest.mark.parametrize("timeout", [5.0, None], ids=["timeout", "blocking"])
def test_write_now_sends_what_fits_and_send_rest_the_rest(timeout: float | None) -> None:
    server, peer = small_pair(timeout)
    with server, peer:
        assert write_now(server, [b"head ", b"body"]) == 9  # room: all at once
        received = bytearray()
        read_exactly(peer, 9, received)
        assert received == b"head body"
        if timeout is None:
            return  # a blocking socket's sendmsg would wait for the rest
        first = write_now(server, [b"h" * 100, BODY])
        assert 0 < first < 100 + len(BODY)  # the buffers are small: partly sent, no wait
        assert write_now(server, [BODY]) == 0  # full: nothing sent, no wait
        received.clear()
        reader = threading.Thread(target=read_all, args=(peer, received))
        reader.start()
        send_rest(server, b"h" * 100, BODY, first)
        server.shutdown(socket.SHUT_WR)
        reader.join(10)
        assert bytes(received) == b"h" * 100 + BODY


def test_write_now_raises_the_sockets_errors() -> None:
    outcomes = []
    for send in (write_now, socket.socket.sendmsg):
        server, peer = small_pair()
        with server:
            peer.close()
            with pytest.raises(OSError) as caught:
                send(server, [b"head", b"body"])
            outcomes.append(type(caught.value))
    assert outcomes[0] is outcomes[1] is BrokenPipeError
