"""Plain HTTP/1.1 requests for the benchmark: warming, the proxy's own counters, the herd."""

from __future__ import annotations

import http.client
import re
import statistics
import threading
import time
import uuid
from typing import Any

ADMIN_PREFIX = "/_wsgi_proxy"  # the proxy's default WSGI_PROXY_ADMIN_PREFIX
_OUTCOME = re.compile(r'^wsgi_proxy_requests_total\{cache="([^"]+)"\} ([0-9.e+]+)$', re.MULTILINE)


def get(
    port: int, path: str, timeout: float = 30, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        body = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body
    finally:
        conn.close()


def warm(port: int, path: str, expected: bytes, *, x_cache: str | None) -> None:
    """Fetch until the answer is whole (and carries ``X-Cache: x_cache`` when given);
    exit if it never is."""
    status, body = 0, b""
    fields: dict[str, str] = {}
    for _ in range(5):
        status, fields, body = get(port, path)
        if status == 200 and body == expected and fields.get("x-cache") == x_cache:
            return
        time.sleep(0.2)
    raise SystemExit(
        f"{path} on port {port}: status {status}, {len(body)} bytes "
        f"(expected {len(expected)}), X-Cache {fields.get('x-cache')} (expected {x_cache})"
    )


def cache_outcomes(port: int) -> dict[str, int] | None:
    """The proxy's requests answered so far by cache outcome (hit, miss, pass, ...), summed
    over its workers, from its metrics; None if the admin interface is closed to us."""
    try:
        status, _, body = get(port, f"{ADMIN_PREFIX}/metrics")
    except OSError:
        return None
    if status != 200:
        return None
    return {m[1]: int(float(m[2])) for m in _OUTCOME.finditer(body.decode())}


def settled_outcomes(port: int, timeout: float = 10.0) -> dict[str, int] | None:
    """``cache_outcomes`` once they stop changing: when wrk stops, requests it sent may
    still be queued in the proxy's workers and are answered (and counted) afterwards."""
    last = cache_outcomes(port)
    end = time.monotonic() + timeout
    while last is not None and time.monotonic() < end:
        time.sleep(0.25)
        now = cache_outcomes(port)
        if now == last:
            break
        last = now
    return last


def outcome_delta(before: dict[str, int] | None, after: dict[str, int] | None) -> dict[str, int]:
    if before is None or after is None:
        return {}
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in after.keys() | before.keys()}
    return {k: v for k, v in sorted(delta.items()) if v}


# ---- herd ---------------------------------------------------------------------------------


def concurrent_gets(port: int, paths: list[str]) -> dict[str, Any]:
    """GET every path at once (one thread each, released together); statuses and times."""
    barrier = threading.Barrier(len(paths))
    results: list[tuple[str, float]] = [("none", 0.0)] * len(paths)

    def one(i: int) -> None:
        barrier.wait()
        start = time.monotonic()
        try:
            status, _, _ = get(port, paths[i], timeout=60)
            results[i] = (str(status), time.monotonic() - start)
        except Exception as exc:
            results[i] = (f"error:{type(exc).__name__}", time.monotonic() - start)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(paths))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(90)
    statuses: dict[str, int] = {}
    for status, _ in results:
        statuses[status] = statuses.get(status, 0) + 1
    times = sorted(t for _, t in results)
    return {
        "statuses": statuses,
        "slowest_s": round(times[-1], 3),
        "median_s": round(statistics.median(times), 3),
    }


def origin_count(count_port: int, path: str) -> int:
    _, _, body = get(count_port, f"/_count?p={path}")
    return int(body)


def herd(port: int, count_port: int, n: int) -> dict[str, Any]:
    """``n`` concurrent GETs of one cold slow URL: how many reached the origin."""
    path = f"/slow/herd-{uuid.uuid4().hex[:12]}"
    result = concurrent_gets(port, [path] * n)
    result["origin_requests"] = origin_count(count_port, path)
    return result


def distinct_misses(port: int, count_port: int, n: int) -> dict[str, Any]:
    """``n`` concurrent GETs of different cold slow URLs: the slowest answer."""
    stem = f"/slow/miss-{uuid.uuid4().hex[:12]}"
    paths = [f"{stem}-{i}" for i in range(n)]
    result = concurrent_gets(port, paths)
    result["origin_requests"] = sum(origin_count(count_port, p) for p in paths)
    return result
