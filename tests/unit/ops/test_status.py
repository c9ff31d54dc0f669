"""The status page's figures (ops/status.py): tables of samples -> figures, and the sums
over real worker processes recording in one metrics folder, against the /metrics text."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from wsgi_proxy.ops.metrics import Sample
from wsgi_proxy.ops.status import by_label, quantile, summarize

REQ = "wsgi_proxy_requests_total"


def s(name: str, value: float, **labels: str) -> Sample:
    return Sample(name, tuple(sorted(labels.items())), value)


@pytest.mark.parametrize(
    ("samples", "requests_total", "from_cache", "hit_ratio"),
    [
        ([], 0, 0, None),  # nothing answered yet: no ratio, not 0
        ([s(REQ, 3, cache="miss")], 3, 0, 0.0),
        ([s(REQ, 6, cache="hit"), s(REQ, 2, cache="miss")], 8, 6, 0.75),
        # stale and revalidated answers came from the cache too; pass, method, error did not
        (
            [
                s(REQ, 1, cache="stale"),
                s(REQ, 1, cache="revalidated"),
                s(REQ, 1, cache="pass"),
                s(REQ, 1, cache="method"),
            ],
            4,
            2,
            0.5,
        ),
        # an outcome this version does not know is still counted in the total
        ([s(REQ, 1, cache="hit"), s(REQ, 1, cache="new-kind")], 2, 1, 0.5),
    ],
)
def test_requests_and_hit_ratio(
    samples: list[Sample], requests_total: float, from_cache: float, hit_ratio: float | None
) -> None:
    figures = summarize(samples, now=0.0)
    assert (figures["requests_total"], figures["from_cache"], figures["hit_ratio"]) == (
        requests_total,
        from_cache,
        hit_ratio,
    )
    assert set(figures["requests"]) >= {"hit", "stale", "revalidated", "miss", "pass"}


@pytest.mark.parametrize(
    ("samples", "name", "label", "expected"),
    [
        ([], "x", "k", {}),
        ([s("x", 1, k="a"), s("x", 2, k="b"), s("y", 5, k="a")], "x", "k", {"a": 1, "b": 2}),
        # the same label value under other labels is summed
        ([s("x", 1, k="a", z="1"), s("x", 2, k="a", z="2")], "x", "k", {"a": 3}),
        ([s("x", 4)], "x", "k", {"": 4}),
    ],
)
def test_by_label_sums(
    samples: list[Sample], name: str, label: str, expected: dict[str, float]
) -> None:
    assert by_label(samples, name, label) == expected


INF = math.inf


@pytest.mark.parametrize(
    ("q", "buckets", "expected"),
    [
        (0.5, [], None),
        (0.5, [(0.1, 0), (INF, 0)], None),
        # 10 observations, all in (0, 0.1]: the median halfway up the first bucket
        (0.5, [(0.1, 10), (1.0, 10), (INF, 10)], 0.05),
        # 4 in (0, 0.1], 6 in (0.1, 1]: rank 9 is 5/6 of the way through the second
        (0.9, [(0.1, 4), (1.0, 10), (INF, 10)], 0.1 + 0.9 * 5 / 6),
        # in the infinite bucket: the highest finite bound
        (0.99, [(0.1, 1), (1.0, 1), (INF, 10)], 1.0),
    ],
)
def test_quantile_from_buckets(
    q: float, buckets: list[tuple[float, float]], expected: float | None
) -> None:
    found = quantile(q, buckets)
    assert found == expected or (found is not None and math.isclose(found, expected or 0))


def test_figures_of_every_part_and_plain_json() -> None:
    samples = [
        s("wsgi_proxy_body_bytes_total", 100, source="cache"),
        s("wsgi_proxy_origin_requests_total", 2, status="200"),
        s("wsgi_proxy_origin_requests_total", 1, status="error"),
        s("wsgi_proxy_origin_seconds_bucket", 3, le="0.1"),
        s("wsgi_proxy_origin_seconds_bucket", 3, le="+Inf"),
        s("wsgi_proxy_origin_seconds_count", 3),
        s("wsgi_proxy_origin_seconds_sum", 0.15),
        s("wsgi_proxy_cache_bytes", 256),
        s("wsgi_proxy_cache_limit_bytes", 1024),
        s("wsgi_proxy_cache_files", 7),
        s("wsgi_proxy_pool_threads", 9),
        s("wsgi_proxy_pool_queued_requests_total", 4),
        s("wsgi_proxy_purges_total", 5, kind="tag"),
        s("wsgi_proxy_errors_total", 1, kind="OriginUnreachable"),
    ]
    workers = {12: {"threads": 4.0}, 11: {"threads": 5.0, "running": 1.0}}
    purge = {"time": 1.0, "kind": "tag", "value": "t", "soft": False, "purged": 5}
    figures = summarize(samples, 7.5, workers, [purge], {"nodes": [{"node": "a"}]})
    assert figures["bytes"] == {"cache": 100, "origin": 0}
    assert figures["origin"]["requests"] == {"200": 2, "error": 1}
    latency = figures["origin"]["latency"]
    assert (latency["count"], latency["sum"], latency["buckets"]) == (3, 0.15, [[0.1, 3]])
    assert figures["disk"] == {"bytes": 256, "limit": 1024, "files": 7, "used": 0.25}
    assert figures["pools"]["threads"] == 9 and figures["pools"]["queued_total"] == 4
    assert [w["pid"] for w in figures["workers"]] == [11, 12]
    assert figures["workers"][1] == {"pid": 12, "threads": 4, "running": 0, "waiting": 0,
                                     "queued": 0}  # fmt: skip
    assert figures["purges"] == {"purged": {"tag": 5}, "recent": [purge]}
    assert figures["errors"] == {"OriginUnreachable": 1}
    assert figures["cluster"] == {"nodes": [{"node": "a"}]}
    assert figures["time"] == 7.5
    json.dumps(figures, allow_nan=False)  # no infinity, no NaN
    empty = summarize([], 0.0)
    assert empty["disk"]["used"] is None and empty["origin"]["latency"]["p50"] is None
    json.dumps(empty, allow_nan=False)


RECORD = """
import json, sys
from pathlib import Path
from wsgi_proxy.core.threads import PoolStats
from wsgi_proxy.ops.metrics import Metrics
metrics = Metrics(Path(sys.argv[1]), lambda: [("wsgi_proxy_cache_bytes", "b", 42.0)])
plan = json.loads(sys.argv[2])
for outcome, count in plan["requests"].items():
    for _ in range(count):
        metrics.count_request(outcome)
metrics.count_bytes("cache", plan["bytes"])
metrics.origin_seconds.observe(plan["latency"])
metrics.record_pool(PoolStats(plan["threads"], 1, 0, 0, 0, 0, 0))
if plan.get("report"):
    from wsgi_proxy.ops.status import summarize
    out = {"text": metrics.render()[0].decode(), "workers": metrics.worker_pools(),
           "status": summarize(metrics.samples(), 0.0, metrics.worker_pools())}
    sys.stdout.write(json.dumps(out))
"""


def _record(folder: Path, plan: dict[str, Any]) -> str:
    return subprocess.run(
        [sys.executable, "-c", RECORD, str(folder), json.dumps(plan)],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout  # fmt: skip


def _metric(text: str, name: str, labels: str = "") -> float:
    pattern = re.escape(name + (f"{{{labels}}}" if labels else "")) + r" (\S+)$"
    match = re.search(r"^" + pattern, text, re.MULTILINE)
    assert match, (name, labels, text)
    return float(match.group(1))


def test_sums_over_worker_processes_agree_with_the_metrics_text(tmp_path: Path) -> None:
    """Three processes record in one folder, the last one reports: the JSON's figures are
    the /metrics text's sums, and each process's pool is listed on its own."""
    folder = tmp_path / "metrics"
    _record(folder, {"requests": {"hit": 5, "miss": 1}, "bytes": 10, "latency": 0.02, "threads": 3})
    _record(folder, {"requests": {"hit": 2, "pass": 4}, "bytes": 7, "latency": 0.3, "threads": 2})
    last = {"requests": {"stale": 1}, "bytes": 1, "latency": 2.0, "threads": 4, "report": True}
    out = json.loads(_record(folder, last))
    text, status = out["text"], out["status"]
    for outcome in ("hit", "miss", "pass", "stale"):
        assert status["requests"][outcome] == _metric(text, REQ, f'cache="{outcome}"')
    assert status["requests_total"] == 13 and status["from_cache"] == 8
    cache_bytes = _metric(text, "wsgi_proxy_body_bytes_total", 'source="cache"')
    assert status["bytes"]["cache"] == cache_bytes == 18
    latency = status["origin"]["latency"]
    assert latency["count"] == _metric(text, "wsgi_proxy_origin_seconds_count") == 3
    assert latency["sum"] == _metric(text, "wsgi_proxy_origin_seconds_sum")
    assert status["disk"]["bytes"] == 42
    # livesum: the processes that ended are still in the folder (nobody marked them dead)
    assert status["pools"]["threads"] == _metric(text, "wsgi_proxy_pool_threads") == 9
    assert sorted(pool["threads"] for pool in out["workers"].values()) == [2, 3, 4]
    assert sorted(w["threads"] for w in status["workers"]) == [2, 3, 4]
