"""A large cache made with the project's own Store API, and waiting for the proxy's cache
manager's first walk of it.

``fill`` writes entries exactly where and as the proxy would after fetching them: primary
key ``GET <origin><target> http://<FILL_HOST>`` (requests for them must send that ``Host``:
``FILL_HOST_FIELDS``), the origin's end-to-end response fields, request and response
times of now (so ``max-age=3600`` keeps them fresh for an hour), published by
``Store.begin(...).write(...).commit()``.
"""

from __future__ import annotations

import http.client
import json
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
    files: int | None  # files the cache manager's last walk counted
    seconds: float | None  # how long that walk took
    finished_at: float  # time.time() of its end


def last_walk(cache_dir: Path) -> Scan | None:
    """The cache manager's last walk of the folder, from what it publishes
    (``v1/state/manager.json``, store/manager.py); None before its first."""
    try:
        state = json.loads((cache_dir / "v1" / "state" / "manager.json").read_text())
    except (OSError, ValueError):
        return None
    if not state.get("loaded"):
        return None
    return Scan(state.get("files"), state.get("load_seconds"), float(state["loaded"]))


def wait_for_scans(cache_dir: Path, started: float, timeout: float = 300.0) -> Scan:
    """Wait until the proxy's cache manager has walked the folder once since ``started``
    (its start: the manager walks the whole folder then, off the workers, and a walk of
    100,000 files takes seconds of its CPU)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        walk = last_walk(cache_dir)
        if walk is not None and walk.finished_at >= started:
            return walk
        time.sleep(0.2)
    raise SystemExit(f"the cache manager's walk of {cache_dir} did not finish in {timeout} s")


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
