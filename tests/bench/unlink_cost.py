"""What deleting one cache entry costs the kernel, without the proxy: the floor under the
cache manager's eviction rate (docs/performance.md, scale).

    .venv/bin/python tests/bench/unlink_cost.py [--files 200000] [--size 1200] [--dir DIR]

Writes ``--files`` files of ``--size`` bytes as the store lays out entries (a SHA-256 hex
name in one of 256 folders named by its first two digits), flushes them to disk, then
deletes them in a random order (eviction's order is the LRU's, not the folders'), once on
one thread and once on ``store.deleter.THREADS`` threads, each time after writing them
anew. Prints the files deleted per second and the CPU time per file (user and system, of
this process: mostly the kernel's).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from wsgi_proxy.store.deleter import THREADS


def write_files(top: Path, count: int, size: int) -> list[str]:
    for prefix in range(256):
        (top / f"{prefix:02x}").mkdir(parents=True, exist_ok=True)
    body = os.urandom(size)
    paths = []
    for i in range(count):
        digest = hashlib.sha256(str(i).encode()).hexdigest()
        path = str(top / digest[:2] / digest)
        with open(path, "wb") as file:
            file.write(body)
        paths.append(path)
    os.sync()
    random.shuffle(paths)
    return paths


def unlink_all(paths: list[str]) -> None:
    for path in paths:
        os.unlink(path)


def timed_delete(paths: list[str], threads: int) -> tuple[float, float]:
    """(files deleted a second, CPU microseconds a file)."""
    cpu, wall = time.process_time(), time.perf_counter()
    if threads == 1:
        unlink_all(paths)
    else:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(unlink_all, [paths[i::threads] for i in range(threads)]))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return len(paths) / wall, cpu * 1e6 / len(paths)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=200_000)
    parser.add_argument("--size", type=int, default=1200, help="bytes a file (1200)")
    parser.add_argument("--dir", type=Path, default=None, help="where ($TMPDIR)")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="wsgi-proxy-unlink-", dir=args.dir))
    try:
        for threads in (1, THREADS):
            paths = write_files(scratch / "objects", args.files, args.size)
            rate, micros = timed_delete(paths, threads)
            print(f"{threads} thread(s): {rate:,.0f} files/s, {micros:.1f} us of CPU a file")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
