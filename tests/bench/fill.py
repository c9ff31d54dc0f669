"""A large cache made with the project's own Store API, and waiting for the proxy's first
scan of it.

``fill`` writes entries exactly where and as the proxy would after fetching them: primary
key ``GET <origin><target> http://<FILL_HOST>`` (requests for them must send that ``Host``:
``FILL_HOST_FIELDS``), the origin's end-to-end response fields, request and response
times of now (so ``max-age=3600`` keeps them fresh for an hour), published by
``Store.begin(...).write(...).commit()``.
"""

from __future__ import annotations

import http.client
import os
import time
from dataclasses import dataclass
from pathlib import Path

from wsgi_proxy.core import headers as h
from wsgi_proxy.core import keys
from wsgi_proxy.core.headers import Headers
from wsgi_proxy.core.model import Entry, ResponseHead
from wsgi_proxy.store.cache import Store

# As the proxy's defaults (WSGI_PROXY_LOCK_STRIPES and MAX_VARIANTS do not change the
# layout of an entry without Vary).
_LOCK_STRIPES = 1024
_MAX_VARIANTS = 32
# The site the filled entries are stored for (the proxy's port is not known yet).
FILL_HOST = "bench.example"
FILL_HOST_FIELDS = {"Host": FILL_HOST}


def fill(
    cache_dir: Path, origin_url: str, targets: list[str], fields: Headers, body_size: int
) -> float:
    """Store a response with ``fields`` and a ``body_size`` body for every target; the
    seconds it took. ``fields`` are the origin's response fields (hop-by-hop removed)."""
    store = Store(cache_dir, lock_stripes=_LOCK_STRIPES, max_variants=_MAX_VARIANTS)
    store.prepare()
    base = os.urandom(body_size)
    start = time.perf_counter()
    now = time.time()
    head = ResponseHead(200, "OK", fields)
    for i, target in enumerate(targets):
        key = keys.primary_key(origin_url, target, f"http://{FILL_HOST}")
        entry = Entry(key, head, now, now, (), 0)
        writer = store.begin(entry, expected_length=body_size, max_body=body_size)
        if writer is None:
            raise SystemExit(f"cannot write to {cache_dir} (see the warning above)")
        writer.write(i.to_bytes(8, "big") + base[8:])  # a different body for each
        if not writer.commit():
            raise SystemExit(f"could not publish {target} in {cache_dir}")
    # The cache manager counts what was written from the journal (store/journal.py).
    return time.perf_counter() - start


@dataclass(frozen=True)
class Scan:
    files: int | None  # entries the last scan counted
    seconds: float | None  # how long the last scan took (its start and end marks)
    finished_at: float  # time.time() of its end


def scan_marks(cache_dir: Path) -> tuple[float, float] | None:
    """(start, end) mtimes of the evictor's last scan: it touches ``state/scanned`` before
    walking the folder and writes ``state/entries`` after."""
    state = cache_dir / "v1" / "state"
    try:
        return (state / "scanned").stat().st_mtime, (state / "entries").stat().st_mtime
    except FileNotFoundError:
        return None


def wait_for_scans(cache_dir: Path, quiet: float = 3.0, timeout: float = 300.0) -> Scan:
    """Wait until the proxy's evictor scans are over: every worker's evictor scans the
    whole folder on its first tick (0.5 s after the worker's first request, unless another
    worker's scan holds the lock then), and a scan of 100,000 files takes seconds on the
    proxy's CPU. Done when the last scan ended ``quiet`` seconds ago and none started."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        marks = scan_marks(cache_dir)
        if marks is not None:
            started, finished = marks
            if finished >= started and time.time() - max(marks) >= quiet:
                try:
                    files = int((cache_dir / "v1" / "state" / "entries").read_text())
                except (OSError, ValueError):
                    files = None
                return Scan(files, round(finished - started, 3), finished)
        time.sleep(0.2)
    raise SystemExit(f"the proxy's eviction scan of {cache_dir} did not finish in {timeout} s")


def origin_fields(port: int, path: str) -> Headers:
    """The end-to-end fields of the origin's answer to ``GET path``, as the proxy stores
    them (names as sent, in order)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        if resp.status != 200:
            raise SystemExit(f"origin answered {resp.status} to {path}")
        return h.end_to_end(tuple(resp.getheaders()))
    finally:
        conn.close()
