"""A burst of new connections: N clients connect at once to a running proxy, each sends one
GET (``Connection: close``) and reads the whole answer; prints how many got a 200 and the
median and slowest time to the end of the answer. What it measures is the listen backlog
(``WSGI_PROXY_BACKLOG``): connections beyond it have their SYN dropped and retry a second
later, or later still.

    .venv/bin/python tests/bench/burst.py --port 8080 --clients 1000 --path /c/1k.bin
"""

from __future__ import annotations

import argparse
import selectors
import socket
import time


def burst(port: int, clients: int, path: str, limit: float = 30.0) -> tuple[list[float], int]:
    """Seconds from the start to each client's whole 200 answer, sorted; and the failures."""
    request = f"GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n".encode()
    selector = selectors.DefaultSelector()
    received: dict[socket.socket, bytearray] = {}
    start = time.monotonic()
    for _ in range(clients):
        sock = socket.socket()
        sock.setblocking(False)
        sock.connect_ex(("127.0.0.1", port))
        selector.register(sock, selectors.EVENT_WRITE)
    done: list[float] = []
    failed = 0
    while len(done) + failed < clients and time.monotonic() - start < limit:
        for key, _ in selector.select(1):
            conn = key.fileobj
            assert isinstance(conn, socket.socket)
            try:
                if conn not in received:  # connected: send the request
                    conn.sendall(request)
                    received[conn] = bytearray()
                    selector.modify(conn, selectors.EVENT_READ)
                    continue
                data = conn.recv(65536)
            except OSError:
                data, ok = b"", False
            else:
                ok = True
            if data:
                received[conn] += data
                continue
            selector.unregister(conn)
            conn.close()
            if ok and received.get(conn, b"").startswith(b"HTTP/1.1 200"):
                done.append(time.monotonic() - start)
            else:
                failed += 1
    for key in list(selector.get_map().values()):  # unanswered within the limit
        key.fileobj.close()  # type: ignore[union-attr]
    selector.close()
    return sorted(done), clients - len(done)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--path", default="/c/1k.bin")
    args = ap.parse_args()
    done, failed = burst(args.port, args.clients, args.path)
    median = f"{done[len(done) // 2]:.3f} s" if done else "-"
    slowest = f"{done[-1]:.3f} s" if done else "-"
    print(f"clients {args.clients}: {len(done)} answered 200, {failed} failed or unanswered; "
          f"median {median}, slowest {slowest}")  # fmt: skip


if __name__ == "__main__":
    main()
