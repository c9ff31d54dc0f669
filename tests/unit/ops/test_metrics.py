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


SCRAPE_TIME = """
import sys
from pathlib import Path
from wsgi_proxy.ops.metrics import Metrics, count_worker_exit
folder = Path(sys.argv[1])
metrics = Metrics(folder, lambda: [("wsgi_proxy_cache_files", "files", 7.0)])
for _ in range(int(sys.argv[2])):
    count_worker_exit(folder)
metrics.count_purge("prefix", 3)
metrics.count_purge("tag", 0)
sys.stdout.write(metrics.render()[0].decode())
"""


@pytest.mark.parametrize("exits", [0, 1, 3])
def test_a_scrape_shows_exits_purges_build_and_the_cache_gauges(tmp_path: Path, exits: int) -> None:
    text = subprocess.run(
        [sys.executable, "-c", SCRAPE_TIME, str(tmp_path / "metrics"), str(exits)],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    found = dict(re.findall(r"^(wsgi_proxy_\S+) (\S+)$", text, re.MULTILINE))
    assert float(found["wsgi_proxy_worker_exits_total"]) == exits
    assert float(found["wsgi_proxy_cache_files"]) == 7
    assert float(found['wsgi_proxy_purges_total{kind="prefix"}']) == 1
    assert float(found['wsgi_proxy_purged_entries_total{kind="prefix"}']) == 3
    assert float(found['wsgi_proxy_purges_total{kind="tag"}']) == 1
    assert float(found['wsgi_proxy_purged_entries_total{kind="tag"}']) == 0
    assert float(found['wsgi_proxy_cache_errors_total{op="read"}']) == 0
    assert float(found['wsgi_proxy_cache_errors_total{op="write"}']) == 0
    [build] = [name for name in found if name.startswith("wsgi_proxy_build_info{")]
    assert 'python="' in build and 'gunicorn="' in build and float(found[build]) == 1


NESTED_EXITS = """
import os, signal, sys, threading, time
from pathlib import Path
from wsgi_proxy.ops import metrics
folder = Path(sys.argv[1])
folder.mkdir()
rounds = int(sys.argv[2])
handled = []  # list.append: one step, so a nested handler's count is not lost here
def handler(*_):
    handled.append(1)
    metrics.count_worker_exit(folder)
signal.signal(signal.SIGUSR1, handler)
def send() -> None:
    for n in range(rounds):
        os.kill(os.getpid(), signal.SIGUSR1)
        while len(handled) <= n:  # one signal at a time: pending ones would merge
            time.sleep(0.0001)
sender = threading.Thread(target=send)
counted = 0
sender.start()
while sender.is_alive() or counted < rounds:
    metrics.count_worker_exit(folder)
    counted += 1
sender.join()
signal.signal(signal.SIGUSR1, signal.SIG_IGN)
text = metrics.Metrics(folder, lambda: []).render()[0].decode()
sys.stdout.write(f"{counted + len(handled)} {text}")
"""


def test_worker_exits_counted_from_a_signal_handler_are_all_counted(tmp_path: Path) -> None:
    """gunicorn 23's master counts an exit (child_exit) inside its SIGCHLD handler, which a
    second worker's SIGCHLD can interrupt: two workers quitting at once must count two. Here
    a handler counts while the main thread counts, many times over: none is lost."""
    out = subprocess.run(
        [sys.executable, "-c", NESTED_EXITS, str(tmp_path / "metrics"), "3000"],
        capture_output=True, text=True, check=True, timeout=120,
    ).stdout  # fmt: skip
    total, text = out.split(" ", 1)
    found = dict(re.findall(r"^(wsgi_proxy_\S+) (\S+)$", text, re.MULTILINE))
    assert float(found["wsgi_proxy_worker_exits_total"]) == int(total)
