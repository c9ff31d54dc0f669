"""ops/durations.py: each request's duration in its bucket, per thread without a lock, and
the files of every worker summed into one histogram."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from wsgi_proxy.ops import durations
from wsgi_proxy.ops.durations import BUCKETS, Durations

# (seconds, microseconds) of gunicorn's request_time -> the smallest bucket bound holding it.
CASES = [
    ((0, 0), "0.0005"),
    ((0, 500), "0.0005"),  # a bound holds its own value (le: less or equal)
    ((0, 501), "0.001"),
    ((0, 2500), "0.0025"),
    ((0, 999_999), "1.0"),
    ((1, 0), "1.0"),
    ((1, 1), "2.5"),
    ((30, 0), "30.0"),
    ((30, 1), "+Inf"),
    ((3600, 0), "+Inf"),
]


def scraped(folder: Path) -> dict[tuple[str, str], float]:
    """The exposition of ``folder``'s files: (sample name + le, cache) -> value."""

    class Collector:
        def collect(self) -> object:
            return durations.families(folder)

    registry = CollectorRegistry()
    registry.register(Collector())  # type: ignore[arg-type]
    text = generate_latest(registry).decode()
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = sample.name + (f"@{sample.labels['le']}" if "le" in sample.labels else "")
            found[key, sample.labels["cache"]] = sample.value
    return found


@pytest.mark.parametrize(("elapsed", "bound"), CASES)
def test_a_duration_lands_in_the_smallest_bucket_that_holds_it(
    tmp_path: Path, elapsed: tuple[int, int], bound: str
) -> None:
    recorder = Durations(tmp_path, 1)
    recorder.note("hit")
    recorder.record(timedelta(seconds=elapsed[0], microseconds=elapsed[1]))
    recorder.flush()
    found = scraped(tmp_path)
    bounds = [repr(b) for b in BUCKETS] + ["+Inf"]
    for le in bounds:
        expected = 1.0 if bounds.index(le) >= bounds.index(bound) else 0.0
        assert found["wsgi_proxy_request_duration_seconds_bucket@" + le, "hit"] == expected, le
    assert found["wsgi_proxy_request_duration_seconds_count", "hit"] == 1
    total = elapsed[0] + elapsed[1] / 1e6
    assert found["wsgi_proxy_request_duration_seconds_sum", "hit"] == pytest.approx(total)


def test_only_a_noted_request_is_recorded_and_only_once(tmp_path: Path) -> None:
    recorder = Durations(tmp_path, 1)
    recorder.record(timedelta(microseconds=10))  # no status noted (the admin interface)
    recorder.note("nonsense")  # not a status: not noted
    recorder.record(timedelta(microseconds=10))
    recorder.note("miss")
    recorder.record(timedelta(microseconds=10))
    recorder.record(timedelta(microseconds=10))  # the next request, not noted
    recorder.flush()
    found = scraped(tmp_path)
    counts = {key: v for key, v in found.items() if key[0].endswith("_count")}
    assert counts == {("wsgi_proxy_request_duration_seconds_count", "miss"): 1.0}


def test_threads_and_workers_are_summed_ended_threads_included(tmp_path: Path) -> None:
    first, second = Durations(tmp_path, 1), Durations(tmp_path, 2)

    def requests(recorder: Durations, status: str, count: int) -> None:
        for _ in range(count):
            recorder.note(status)
            recorder.record(timedelta(milliseconds=3))

    threads = [threading.Thread(target=requests, args=(first, "hit", 100)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    requests(first, "hit", 5)  # a live thread (this one) beside the ended ones
    requests(second, "hit", 7)
    requests(second, "pass", 2)
    first.flush()
    second.flush()
    found = scraped(tmp_path)
    assert found["wsgi_proxy_request_duration_seconds_count", "hit"] == 412
    assert found["wsgi_proxy_request_duration_seconds_bucket@0.0025", "hit"] == 0
    assert found["wsgi_proxy_request_duration_seconds_bucket@0.005", "hit"] == 412
    assert found["wsgi_proxy_request_duration_seconds_count", "pass"] == 2
    assert found["wsgi_proxy_request_duration_seconds_sum", "hit"] == pytest.approx(412 * 0.003)


def test_damaged_or_foreign_files_are_left_out(tmp_path: Path) -> None:
    recorder = Durations(tmp_path, 1)
    recorder.note("hit")
    recorder.record(timedelta(microseconds=1))
    recorder.flush()
    (tmp_path / "durations_2.json").write_text("{not json")
    (tmp_path / "durations_3.json").write_text('{"hit": [1, 2]}')
    (tmp_path / "counter_4.db").write_bytes(b"\0" * 8)
    assert scraped(tmp_path)["wsgi_proxy_request_duration_seconds_count", "hit"] == 1
