"""The thread pools' metrics: what a scrape shows after the pool's reports. Each case
runs in a process of its own, as prometheus_client's registry is one per process."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from wsgi_proxy.core.threads import PoolStats

RECORD = """
import json, sys
from pathlib import Path
from wsgi_proxy.ops.metrics import Metrics
from wsgi_proxy.core.threads import PoolStats
metrics = Metrics(Path(sys.argv[1]), lambda: ())
for counts in json.loads(sys.argv[2]):
    metrics.record_pool(PoolStats(**counts))
sys.stdout.write(metrics.render()[0].decode())
"""
FIRST = PoolStats(3, 1, 2, 4, queued_total=5, limited_total=1, long_total=2)
LATER = PoolStats(5, 0, 0, 0, queued_total=9, limited_total=1, long_total=3)
NAMES = (
    "wsgi_proxy_pool_threads",
    "wsgi_proxy_pool_running",
    "wsgi_proxy_pool_waiting",
    "wsgi_proxy_pool_queue_length",
    "wsgi_proxy_pool_queued_requests_total",
    "wsgi_proxy_pool_thread_limited_requests_total",
    "wsgi_proxy_pool_long_runs_total",
)


def _scraped(tmp_path: Path, reports: list[PoolStats]) -> dict[str, float]:
    counts = json.dumps([vars(stats) for stats in reports])
    text = subprocess.run(
        [sys.executable, "-c", RECORD, str(tmp_path / "metrics"), counts],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    found = dict(re.findall(r"^(wsgi_proxy_pool_\w+) (\S+)$", text, re.MULTILINE))
    return {name: float(value) for name, value in found.items()}


@pytest.mark.parametrize(
    ("reports", "expected"),
    [
        ([], (0, 0, 0, 0, 0, 0, 0)),
        ([FIRST], (3, 1, 2, 4, 5, 1, 2)),
        # Gauges as last reported; counters grow by what the totals grew by.
        ([FIRST, LATER], (5, 0, 0, 0, 9, 1, 3)),
        # The same counts again (a report retried): nothing counted twice.
        ([FIRST, FIRST, LATER, LATER], (5, 0, 0, 0, 9, 1, 3)),
    ],
)
def test_a_scrape_shows_the_last_counts_and_the_totals(
    tmp_path: Path, reports: list[PoolStats], expected: tuple[Any, ...]
) -> None:
    assert _scraped(tmp_path, reports) == dict(zip(NAMES, map(float, expected), strict=True))
