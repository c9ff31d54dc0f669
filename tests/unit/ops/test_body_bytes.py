"""The body bytes the access log reports: gunicorn's count, or, for a body gunicorn sent
from its file, what the standard library's ``socket.sendfile`` says it sent (its seek),
on a real socket pair."""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

from wsgi_proxy.ops.body_bytes import BODY_FILE, CountedFile, body_bytes_sent

BODY = bytes(range(256)) * 4096  # 1 MiB


@dataclass
class Resp:
    sent: int | None


def _drain(sock: socket.socket, into: bytearray) -> None:
    while chunk := sock.recv(65536):
        into.extend(chunk)


@pytest.mark.parametrize(("offset", "count"), [(0, len(BODY)), (100, 5000), (7, len(BODY) - 7)])
def test_a_file_sent_by_socket_sendfile_is_counted(tmp_path: Path, offset: int, count: int) -> None:
    path = tmp_path / "body"
    path.write_bytes(BODY)
    sender, receiver = socket.socketpair()
    received = bytearray()
    reader = threading.Thread(target=_drain, args=(receiver, received))
    reader.start()
    with path.open("rb") as file, sender:
        counted = CountedFile(file, offset)
        assert sender.sendfile(counted, offset, count) == count  # as gunicorn calls it
        file.seek(offset)  # as gunicorn seeks back: not a send
    reader.join(10)
    receiver.close()
    assert bytes(received) == BODY[offset : offset + count]
    assert counted.sent == count
    assert body_bytes_sent(Resp(0), {BODY_FILE: counted}) == count


def test_a_send_cut_short_counts_what_went(tmp_path: Path) -> None:
    path = tmp_path / "body"
    path.write_bytes(BODY * 8)
    sender, receiver = socket.socketpair()
    sender.settimeout(0.2)  # the peer never reads: the send stops when the buffers are full
    with path.open("rb") as file, sender, receiver:
        counted = CountedFile(file, 0)
        with pytest.raises(TimeoutError):
            sender.sendfile(counted, 0, len(BODY) * 8)
        assert 0 < counted.sent < len(BODY) * 8
        receiver.setblocking(False)
        waiting = 0
        while True:
            try:
                waiting += len(receiver.recv(1 << 20))
            except BlockingIOError:
                break
        assert waiting == counted.sent


# (gunicorn's count, the counted file's) -> what the log says
CASES = [
    ((1234, None), 1234),  # written by gunicorn: its count
    ((0, None), 0),  # nothing sent (HEAD, 304)
    ((None, None), None),  # a writer that counts nothing
    ((0, 5000), 5000),  # sent from the file: the file's count
    ((700, 5000), 700),  # gunicorn counted: the file was read through it, not sent
]


@pytest.mark.parametrize(("counts", "expected"), CASES)
def test_one_source_is_taken(
    tmp_path: Path, counts: tuple[int | None, int | None], expected: int | None
) -> None:
    environ = {}
    if counts[1] is not None:
        path = tmp_path / "f"
        path.write_bytes(b"")
        with path.open("rb") as file:
            counted = CountedFile(file, 0)
            counted.sent = counts[1]
            environ[BODY_FILE] = counted
    assert body_bytes_sent(Resp(counts[0]), environ) == expected
