"""The status page's figures: the metrics summed over the workers, as one JSON object.

``summarize`` is pure: it takes the samples ``Metrics.samples`` read (the same sums the
``/metrics`` text shows, so the page and a Prometheus scrape agree), each worker's pool, the
last purges and the cluster's state, and returns what ``{prefix}/status.json`` sends. It
keeps no history: the page polls and keeps the points of its chart itself.

Invariants: every figure is a sum of the samples of one metric, or a ratio of two such
sums (``hit_ratio``, ``disk.used``), or an estimate from one histogram's buckets (the
latency quantiles, as Prometheus' ``histogram_quantile`` makes them); a metric no worker
recorded yet counts as 0; the output is plain JSON (no infinities, no NaN).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping, Sequence
from importlib import resources
from typing import Any

from wsgi_proxy.ops.metrics import POOL_COUNTERS, POOL_GAUGES, Sample

FORMAT = 1
# The outcomes of ``wsgi_proxy_requests_total`` answered from the cache: a fresh hit, a stale
# answer (stale-while-revalidate, stale-if-error), a stored body the origin confirmed (304).
FROM_CACHE = ("hit", "stale", "revalidated")
# Every outcome the proxy counts, so that the page shows a series from the start.
OUTCOMES = ("hit", "stale", "revalidated", "miss", "pass", "method", "error")
QUANTILES = (0.5, 0.9, 0.99)
# The page loads nothing but its own JSON: its CSS and script are inline, its chart is SVG
# it draws itself; the browser refuses anything else, and no other site may frame it.
PAGE_FIELDS = (
    ("Content-Security-Policy",
     "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
     "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; "
     "frame-ancestors 'none'"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
)  # fmt: skip


@functools.cache
def html() -> bytes:
    """The status page (``status_page.html``, package data), read once per process, when
    first asked for."""
    return resources.files("wsgi_proxy.ops").joinpath("status_page.html").read_bytes()


def by_label(samples: Iterable[Sample], name: str, label: str) -> dict[str, float]:
    """The values of sample ``name``, summed by the value of ``label``."""
    sums: dict[str, float] = {}
    for sample in samples:
        if sample.name == name:
            key = dict(sample.labels).get(label, "")
            sums[key] = sums.get(key, 0.0) + sample.value
    return sums


def total(samples: Iterable[Sample], name: str) -> float:
    """The sum of every sample called ``name`` (0 when there is none)."""
    return sum(sample.value for sample in samples if sample.name == name)


def buckets(samples: Iterable[Sample], name: str) -> list[tuple[float, float]]:
    """The histogram ``name``'s cumulative buckets, (upper bound, count), by bound; the
    last bound is infinite."""
    found = by_label(samples, name + "_bucket", "le")
    return sorted((float(bound), count) for bound, count in found.items())


def quantile(q: float, cumulative: Sequence[tuple[float, float]]) -> float | None:
    """The ``q`` quantile estimated from cumulative buckets by linear interpolation within
    the bucket it falls in (the first bucket starting at 0), as ``histogram_quantile``
    does; in the infinite bucket, the highest finite bound. None without observations."""
    if not cumulative or cumulative[-1][1] <= 0:
        return None
    rank = q * cumulative[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in cumulative:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            if count == lower_count:
                return bound
            share = (rank - lower_count) / (count - lower_count)
            return lower_bound + (bound - lower_bound) * share
        lower_bound, lower_count = bound, count
    return lower_bound


def _ratio(part: float, whole: float) -> float | None:
    return part / whole if whole > 0 else None


def _latency(samples: Sequence[Sample]) -> dict[str, Any]:
    name = "wsgi_proxy_origin_seconds"
    cumulative = buckets(samples, name)
    return {
        "count": total(samples, name + "_count"),
        "sum": total(samples, name + "_sum"),
        "buckets": [[bound, count] for bound, count in cumulative if not math.isinf(bound)],
        **{f"p{round(q * 100)}": quantile(q, cumulative) for q in QUANTILES},
    }


def _requests(samples: Sequence[Sample]) -> dict[str, Any]:
    requests = dict.fromkeys(OUTCOMES, 0.0)
    requests.update(by_label(samples, "wsgi_proxy_requests_total", "cache"))
    answered = sum(requests.values())
    from_cache = sum(requests[outcome] for outcome in FROM_CACHE)
    return {
        "requests": requests,
        "requests_total": answered,
        "from_cache": from_cache,
        "hit_ratio": _ratio(from_cache, answered),
    }


def _pools(samples: Sequence[Sample], workers: Mapping[int, Mapping[str, float]]) -> dict[str, Any]:
    summed = {field: total(samples, name) for name, field, _ in POOL_GAUGES}
    summed |= {field: total(samples, name + "_total") for name, field, _ in POOL_COUNTERS}
    rows = [
        {"pid": pid, **{field: pool.get(field, 0.0) for _, field, _ in POOL_GAUGES}}
        for pid, pool in sorted(workers.items())
    ]
    return {"pools": summed, "workers": rows}


def summarize(
    samples: Sequence[Sample],
    now: float,
    workers: Mapping[int, Mapping[str, float]] | None = None,
    purges: Sequence[Mapping[str, Any]] = (),
    cluster: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The status page's JSON (docs/status-page.md says what each figure means)."""
    disk_bytes = total(samples, "wsgi_proxy_cache_bytes")
    disk_limit = total(samples, "wsgi_proxy_cache_limit_bytes")
    return {
        "format": FORMAT,
        "time": now,
        **_requests(samples),
        "bytes": {
            "cache": 0.0,
            "origin": 0.0,
            **by_label(samples, "wsgi_proxy_body_bytes_total", "source"),
        },
        "origin": {
            "requests": by_label(samples, "wsgi_proxy_origin_requests_total", "status"),
            "latency": _latency(samples),
        },
        "revalidations": by_label(samples, "wsgi_proxy_revalidations_total", "result"),
        "coalesced_waits": total(samples, "wsgi_proxy_coalesced_waits_total"),
        "errors": by_label(samples, "wsgi_proxy_errors_total", "kind"),
        "evictions": total(samples, "wsgi_proxy_evictions_total"),
        "disk": {
            "bytes": disk_bytes,
            "limit": disk_limit,
            "files": total(samples, "wsgi_proxy_cache_files"),
            "used": _ratio(disk_bytes, disk_limit),
        },
        **_pools(samples, workers or {}),
        "purges": {
            "purged": by_label(samples, "wsgi_proxy_purges_total", "kind"),
            "recent": list(purges),
        },
        "cluster": None if cluster is None else dict(cluster),
    }
