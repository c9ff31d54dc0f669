"""One large body through the proxy: time to first byte, total time, and how much the
proxy's process tree grows in memory meanwhile.

The client is a raw socket reading into one 1 MiB buffer and discarding, so it holds no
more than that itself. Memory is the RSS and PSS of the server's master and workers summed
(``/proc/<pid>/smaps_rollup``), sampled every 50 ms in a thread; growth is the peak minus
the value just before the request.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

from bench.procs import memory_kib, tree_pids

BLOCK = 1 << 20
SAMPLE_EVERY = 0.05


class MemoryPeak:
    """Samples the process tree under ``root`` in a thread while in the ``with`` block.
    The tree is listed once (a /proc walk costs more than the samples); ``same_tree`` says
    whether it was still the same at the end."""

    def __init__(self, root: int) -> None:
        self.root = root
        self.pids = tree_pids(root)
        self.same_tree = True
        self.before = memory_kib(self.pids)
        self.peak = self.before
        self.samples = 1
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="memory-sampler", daemon=True)

    def __enter__(self) -> MemoryPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sample()
        self.same_tree = sorted(tree_pids(self.root)) == sorted(self.pids)

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_EVERY):
            self._sample()

    def _sample(self) -> None:
        rss, pss = memory_kib(self.pids)
        self.peak = (max(self.peak[0], rss), max(self.peak[1], pss))
        self.samples += 1


def fetch(port: int, path: str, root: int, timeout: float = 120) -> dict[str, Any]:
    """GET ``path`` on a new connection and read the whole body, measuring the server
    whose process tree is rooted at ``root``."""
    request = (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: bench-stream\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    buf = bytearray(BLOCK)
    view = memoryview(buf)
    head = b""
    first_byte: float | None = None
    received = 0
    with (
        socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock,
        MemoryPeak(root) as memory,
    ):
        start = time.perf_counter()
        sock.sendall(request)
        while b"\r\n\r\n" not in head:
            n = sock.recv_into(view)
            if n == 0:
                raise SystemExit(f"{path}: connection closed before the response head")
            head += buf[:n]
        head, _, rest = head.partition(b"\r\n\r\n")
        status, fields = _parse_head(head)
        length = int(fields["content-length"]) if "content-length" in fields else None
        received = len(rest)
        if received:
            first_byte = time.perf_counter()
        while length is None or received < length:
            n = sock.recv_into(view)
            if n == 0:
                break
            if first_byte is None:
                first_byte = time.perf_counter()
            received += n
        total = time.perf_counter() - start
    mib = 1024.0
    return {
        "status": status,
        "x_cache": fields.get("x-cache"),
        "cache_status": fields.get("cache-status"),
        "transfer_encoding": fields.get("transfer-encoding"),
        "bytes": received,
        "content_length": length,
        "whole": length is not None and received == length,
        "first_byte_ms": None if first_byte is None else round((first_byte - start) * 1000, 2),
        "total_s": round(total, 3),
        "mib_per_s": round(received / BLOCK / total, 1) if total else None,
        "rss_before_mib": round(memory.before[0] / mib, 1),
        "rss_peak_mib": round(memory.peak[0] / mib, 1),
        "rss_growth_mib": round((memory.peak[0] - memory.before[0]) / mib, 1),
        "pss_before_mib": round(memory.before[1] / mib, 1),
        "pss_peak_mib": round(memory.peak[1] / mib, 1),
        "pss_growth_mib": round((memory.peak[1] - memory.before[1]) / mib, 1),
        "memory_samples": memory.samples,
        "same_processes": memory.same_tree,
    }


def _parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    fields: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        fields[name.strip().lower()] = value.strip()
    return status, fields
